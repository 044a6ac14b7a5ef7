"""Redis Streams: the consumer group, reading, claiming, acknowledging, dead letters."""
