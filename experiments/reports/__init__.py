"""Lift reports: database aggregates (``aggregation``) -> statistics (``assemble``, on
``experiments.stats``) -> admin pages (``views``), exports (``exports``) and the API (``api``)."""
