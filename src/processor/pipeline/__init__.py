"""The core loop: read, decode, observe, batch, write, acknowledge."""
