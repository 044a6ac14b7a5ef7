"""Thin command-line tools over the layers: simulator, dead letters, status, benchmark."""
