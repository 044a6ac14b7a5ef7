"""Metrics, health and the HTTP endpoint that exposes them."""
