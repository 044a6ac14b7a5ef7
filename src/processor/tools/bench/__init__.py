"""`processor bench`: throughput against a raw COPY ceiling and a naive peer, and latency."""
