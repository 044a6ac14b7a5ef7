"""Telemetry simulator: rally cars on the sample event's stages, as stream-v1 entries.

Produces realistic, reproducible input for the processor (with configurable faults)
and the exact ground truth of every gate and zone crossing, for tests and benchmarks.
"""
