"""Journeys as managed resources: documents in, catalog rows out, the audience engine kept in step."""
