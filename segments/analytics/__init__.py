"""Growth analytics over customers and events: retention cohorts, step funnels, layer flows.

Each table is one SQL statement built here and run by the database (PostgreSQL or SQLite,
``segments.analytics.sql`` holds the per-vendor fragments); Python validates the request
and shapes the result rows into frozen dataclasses. Definitions: docs/domain.md and the
README's "Growth analytics" section.
"""
