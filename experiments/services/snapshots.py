"""Segment snapshots: the dictionary of distinct layer combinations assignments point at.

A snapshot is identified by its canonical key (``SegmentSnapshot.canonical_key``); rows are
only ever added, with ``INSERT … ON CONFLICT DO NOTHING`` so that concurrent first
assignments of customers with the same layers agree on one row.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from django.db import connection
from django.utils import timezone

from experiments.models import SegmentSnapshot
from experiments.selectors import experiment_configs_generation
from segments import selectors as segment_selectors

_TABLE = SegmentSnapshot._meta.db_table
_KEY = connection.ops.quote_name("key")


# Known snapshot ids, per process. Rows are never deleted, but a test database rolls
# back: the memo is dropped whenever the experiments configuration generation changes
# (every test starts with a cleared cache, hence a new generation).
_memo: dict[str, int] = {}
_memo_generation: str | None = None
_MEMO_MAX = 50_000


def _memo_current() -> dict[str, int]:
    global _memo, _memo_generation
    generation = experiment_configs_generation()
    if generation != _memo_generation or len(_memo) > _MEMO_MAX:
        _memo, _memo_generation = {}, generation
    return _memo


def snapshot_ids_get_or_create(*, keys: Iterable[str]) -> dict[str, int]:
    """``{canonical key: snapshot id}`` for every key, creating the missing rows."""
    wanted = set(keys)
    if not wanted:
        return {}
    memo = _memo_current()
    ids = {key: memo[key] for key in wanted if key in memo}
    if len(ids) == len(wanted):
        return ids
    ids.update(SegmentSnapshot.objects.filter(key__in=wanted - ids.keys()).values_list("key", "id"))
    missing = sorted(wanted - ids.keys())
    if missing:
        layers_field = SegmentSnapshot._meta.get_field("layers")
        now = timezone.now()
        with connection.cursor() as cursor:
            for key in missing:
                layers = SegmentSnapshot.parse_key(key)
                cursor.execute(
                    f"INSERT INTO {_TABLE} ({_KEY}, layers, created_at) VALUES (%s, %s, %s) "
                    "ON CONFLICT (key) DO NOTHING",
                    [key, layers_field.get_db_prep_value(layers, connection), now],
                )
        ids.update(SegmentSnapshot.objects.filter(key__in=missing).values_list("key", "id"))
    memo.update(ids)
    return ids


def snapshot_id_for_layers(*, layers: Mapping[str, str]) -> int:
    key = SegmentSnapshot.canonical_key(dict(layers))
    return snapshot_ids_get_or_create(keys=[key])[key]


def snapshot_id_for_customer(*, customer_id: int, layers: Mapping[str, str] | None = None) -> int:
    """The snapshot of the customer's current layers: ``layers`` if the caller read them
    already (``customer_get(with_layers=True)``), else read through ``segments.selectors``."""
    if layers is None:
        layers = segment_selectors.customer_layer_snapshot(customer_id=customer_id)
    return snapshot_id_for_layers(layers=layers)
