"""Stream and domain engine of a GPS tracking platform for motorsport events."""

__version__ = "0.1.0"
