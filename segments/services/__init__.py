"""Writes for the segments app, one module per area:

- ``ingestion``: upsert customers and memberships, record events (API and importers).
- ``recompute``: materialize segments and dimensions, with history and the MECE check.
- ``dimensions`` / ``segments``: create and change dimensions (configs, layers, tier tags)
  and rule segments; the admin, the demo and tests write through them.
"""
