"""Directus access as code: roles, permissions, the dispatcher's user and Flows.

Directus 10's schema snapshot (directus/snapshot.yaml) holds collections, fields and
relations only; who may do what, and the Flows the project relies on, live in Directus's own
tables. This package declares them (`access`, `flows`), compares the declaration with what a
Directus holds (`plan`, pure) and converges it over REST (`apply`), for
`processor directus apply` (`command`). ADR 0011 says why.
"""
