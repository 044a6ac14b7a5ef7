"""Types, contract decoding, settings and logging shared by every layer."""
