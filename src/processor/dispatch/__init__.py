"""The outbox dispatcher: domain changes delivered to Directus (`processor dispatch`)."""
