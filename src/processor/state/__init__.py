"""Bounded per-device state: last fix, recent keys for duplicate suppression."""
