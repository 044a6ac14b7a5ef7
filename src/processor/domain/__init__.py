"""Domain stage: geofences, timing, results, alerts. Depends on `processor.core` only."""
