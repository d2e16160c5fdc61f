"""Writes for the segments app, one module per area:

- ``ingestion``: upsert customers and memberships, record events (API and importers).
- ``recompute``: materialize segments and dimensions, with history and the MECE check.
"""
