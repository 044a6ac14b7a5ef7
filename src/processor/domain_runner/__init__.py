"""The domain stage: committed notices in, domain outputs recomputed from stored positions.

Wiring between the core's notices and the pure `processor.domain` functions. It runs on
its own consumer group of the notice stream, so it lags, fails and retries without ever
touching the core (DESIGN rule 1). docs/architecture.md, "One notice through the domain
stage", walks its modules in order.
"""
