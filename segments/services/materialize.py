"""Set-based writes of a recompute: a staged diff.

1. The dimension's kind fills a temporary *stage* table with every customer's new layer
   (one ``INSERT … SELECT``).
2. A *changes* table keeps only the customers whose layer (or level validity) differs
   from the current ``CustomerLayer`` row, or who have none yet. A nightly run on PostgreSQL
   of a kind that hands its rows out in customer order (RFM) merges the current rows while it
   fills the stage (``dimension_write``, "merged"), so the changes are a filter of the stage.
3. Only those rows are written: ``MERGE`` on PostgreSQL 15+, ``UPDATE … FROM`` +
   ``INSERT … SELECT`` elsewhere (the portable path, also used on PostgreSQL when
   ``portable=True``); history rows are closed and opened, and tier tags swapped, for
   the customers who moved (computed tag rows only: a tag set by hand stays).
4. The transition matrix comes from the changes plus the layer sizes after the write; the
   MECE check counts rows.

A *first run* of a dimension (none of its rows exists yet: a new install, a new dimension)
skips the diff: the stage (sorted by customer, so each index is filled in key order) is
the change set, and memberships, history and tier tags are each one plain ``INSERT … SELECT``
from it (no MERGE, no ON CONFLICT unless someone already
holds one of the tier tags). On PostgreSQL, a table with no row at all (a new install) is
loaded bare and its indexes built afterwards, and memberships and history (partitioned by
dimension, migration 0016) go into a new partition of the dimension's own, loaded bare,
indexed, then attached (see "a first run's bulk load" below). It
skips the MECE pre-check too (the memberships insert's unique
index and the count after the write are the check), and a nightly run on PostgreSQL folds
it into the diff (see ``dimension_write``): only a violation pays it, to report it. The
bulk tables carry only the indexes their readers need (migration 0011): each index costs a
row-by-row insertion on every first run.

A dimension scoped to a role places only the customers holding it (a *scope* table of
their ids, filled by one ``INSERT … SELECT``); customers who no longer hold it leave the
dimension: their row is deleted, their history row closed and their tier tag removed,
and the transition matrix counts them as moving to ``None``.

Everything runs inside the caller's transaction; nothing loops over customers in Python.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from django.db import DatabaseError, IntegrityError, OperationalError, connection, transaction

from segments.dimensions.base import STAGE_TABLE, StageContext, table

CHANGES_TABLE = "segments_stage_changes"
MEMBERS_TABLE = "segments_stage_members"
SCOPE_TABLE = "segments_stage_scope"
DROPPED_TABLE = "segments_stage_dropped"
# Below one changed customer in PROBE_FRACTION (25%), a nightly run's writes probe indexes per
# changed customer instead of hashing the whole dimension (see dimension_write). Checked per
# statement at ~11% movers (1M customers, 103,663 movers, alternating runs under the benchmark
# lock): with hash joins allowed every write was slower — memberships 0.67-0.74 -> 0.88-0.92 s,
# history 1.01-1.11 -> 1.11-1.31 s, tier tags 0.69-0.73 -> 0.85-1.03 s — so the threshold
# stays one for all four writes.
PROBE_FRACTION = 4


@dataclass(frozen=True)
class MeceResult:
    """Every customer in exactly one layer of the dimension, checked by counting rows.

    ``rows`` ≤ customers is guaranteed by the unique (customer, dimension) constraint,
    so "none in two layers" reduces to no duplicate in the computed stage and no row
    pointing at another dimension's layer, and "none in none" to placed == customers.
    """

    customers: int
    placed: int
    rows: int
    duplicates: int
    unplaced: int
    foreign: int

    @property
    def ok(self) -> bool:
        return self.unplaced == 0 and self.duplicates == 0 and self.foreign == 0 and self.placed == self.customers

    def as_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "customers": self.customers,
            "placed": self.placed,
            "rows": self.rows,
            "duplicates": self.duplicates,
            "unplaced": self.unplaced,
            "foreign": self.foreign,
        }

    def describe(self) -> str:
        return (
            f"MECE violation: {self.customers} customers, {self.placed} placed in this dimension's layers, "
            f"{self.unplaced} in no layer, {self.duplicates} computed twice, {self.foreign} pointing at another "
            "dimension's layer"
        )


@dataclass
class DimensionWrite:
    customers: int = 0
    changed: int = 0
    layer_sizes: dict[int, int] = field(default_factory=dict)
    transitions: list[tuple[int | None, int | None, int]] = field(default_factory=list)
    mece: MeceResult | None = None
    stats: dict[str, Any] = field(default_factory=dict)
    timings_ms: dict[str, int] = field(default_factory=dict)


def _vendor() -> str:
    return connection.vendor


def _temp(name: str) -> str:
    return f"pg_temp.{name}" if _vendor() == "postgresql" else f"temp.{name}"


def _drop(cursor: Any, name: str) -> None:
    cursor.execute(f"DROP TABLE IF EXISTS {_temp(name)}")


def _index_and_analyze(cursor: Any, name: str, column: str = "customer_id") -> None:
    if _vendor() == "postgresql":
        cursor.execute(f"CREATE INDEX ON {_temp(name)} ({column})")
        cursor.execute(f"ANALYZE {_temp(name)}")
    else:
        cursor.execute(f"CREATE INDEX temp.{name}_idx ON {name} ({column})")


def _distinct(left: str, right: str) -> str:
    """Null-safe "differs"."""
    if _vendor() == "postgresql":
        return f"{left} IS DISTINCT FROM {right}"
    return f"{left} IS NOT {right}"


class _Clock:
    def __init__(self) -> None:
        self.timings: dict[str, int] = {}
        self._last = time.perf_counter()

    def lap(self, name: str) -> None:
        now = time.perf_counter()
        # Adds up: a phase may lap in parts (a bulk load laps its insert before its index builds).
        self.timings[name] = self.timings.get(name, 0) + round((now - self._last) * 1000)
        self._last = now


def dimension_write(
    *,
    dimension_id: int,
    kind_module: Any,
    config: dict[str, Any],
    layers: dict[str, int],
    tag_ids: list[int],
    as_of: dt.datetime,
    now: dt.datetime,
    full_tags: bool = False,
    portable: bool = False,
    role_id: int | None = None,
) -> DimensionWrite:
    """Compute and write one dimension. Call inside a transaction.

    When the computed placement is not MECE, nothing is written and the result carries
    the failed check (``result.mece.ok`` is false); the caller rolls back and records it.
    """
    result = DimensionWrite()
    clock = _Clock()
    attach: list[Partition] = []  # loaded partitions, attached at the end (_attach_partitions)
    cl, hist, ctag, layer_t = table("CustomerLayer"), table("LayerHistory"), table("CustomerTag"), table("Layer")
    adapt = connection.ops.adapt_datetimefield_value
    as_of_p, now_p = adapt(as_of), adapt(now)
    with connection.cursor() as cursor:
        # --- 1. stage: every customer's new layer -------------------------------------
        _drop(cursor, STAGE_TABLE)
        on_commit = " ON COMMIT DROP" if _vendor() == "postgresql" else ""
        scope = None
        if role_id is not None:
            _drop(cursor, SCOPE_TABLE)
            cursor.execute(
                f"CREATE TEMP TABLE {SCOPE_TABLE}{on_commit} AS "
                f"SELECT customer_id FROM {table('CustomerRole')} WHERE role_id = %s",
                [role_id],
            )
            _index_and_analyze(cursor, SCOPE_TABLE)
            scope = SCOPE_TABLE
        # A first run (no row of this dimension yet: a new install, a new dimension) has
        # nothing to diff: every staged row is new (see below).
        cursor.execute(f"SELECT 1 FROM {cl} WHERE dimension_id = %s LIMIT 1", [dimension_id])
        first_run = cursor.fetchone() is None
        # A nightly run on PostgreSQL (unscoped) folds the MECE pre-check into the diff (see
        # "fused" below); for a kind that hands its rows out in customer order, the diff's join
        # is folded into the stage statement too ("merged").
        fused = not first_run and scope is None and _vendor() == "postgresql" and not portable
        merged = fused and getattr(kind_module, "IN_CUSTOMER_ORDER", False)
        # A first run of such a kind (unscoped, on PostgreSQL) is asked for its rows in customer
        # order too: its stage must come sorted by customer (below), and a merge join over the
        # customers' primary key hands them out so at the price of sorting the kind's own rows
        # (RFM: the ~640k customers with orders) where a hash join needs the whole 1M-row stage
        # sorted afterwards. RFM's first run on a populated install at 1M customers (alternating
        # old/new pairs under the benchmark lock, load 1.7-2.7, 2026-12-06): the compute phase
        # 4.31-6.10 s (median 4.49) -> 3.72-4.28 s (median 3.80), the whole run median 14.4 ->
        # 13.8 s; the writes are unchanged (the stage comes in the same order). A new install's
        # first run (bulk load; 3 alternating pairs, load 1.0-1.2): compute median 4.07 -> 3.65 s,
        # the run 9.14 -> 8.54 s, 2.36x -> 2.27x the anchor.
        ordered_first = (
            first_run
            and scope is None
            and _vendor() == "postgresql"
            and not portable
            and getattr(kind_module, "IN_CUSTOMER_ORDER", False)
        )
        ctx = StageContext(
            dimension_id=dimension_id,
            config=config,
            layers=layers,
            as_of=as_of,
            cursor=cursor,
            scope_table=scope,
            in_customer_order=merged or ordered_first,
        )
        select_sql, select_params = kind_module.stage_select(ctx)
        if scope is not None:
            # Every kind's rows are kept for the customers in scope only; kinds that rank
            # a population restricted it themselves (ctx.scope_filter).
            select_sql = f"SELECT k.* FROM ({select_sql}) k WHERE k.customer_id IN (SELECT customer_id FROM {scope})"
        if first_run:
            # The first run's stage is what it inserts into the three tables, and each of their
            # (customer, …) B-tree indexes takes the rows in the order they come: the kinds'
            # statements hand them out in hash-join order (RFM: 103k descents in 200k rows),
            # so every insert lands on a random leaf page, splits it half full and misses the
            # cache. Sorted, each index grows at its right edge (nbtree's rightmost-leaf fast
            # path, 90% full pages; with other dimensions' rows present, its leaves are at least
            # visited in order): backend CPU for the three inserts 2.58 s -> 1.74 s at
            # 200k customers, plus 0.09 s for the sort; the (customer, dimension) index 1069 ->
            # 772 pages. ORDER BY inside each INSERT instead costs three sorts (1.91 s); an
            # order by (layer, customer) scatters the unique indexes again (2.35 s). At 1M
            # customers (old and new code alternately under the benchmark lock): memberships
            # 4.6 -> 3.1 s, history 6.8 -> 3.6 s, tier tags 4.9 -> 3.4 s, the sort +0.3 s of
            # compute; the cold run 20.7 -> 14.3 s (median). A nightly run does not sort its
            # stage (1M rows, 0.55 s) but only its changes (below); its diff hash-joins a stage
            # in hash order against rows now in customer order, 0.3 s slower than when both
            # came in the same hash order. When the kind's statement already ends in ORDER BY
            # the customer (``ordered_first``), the planner drops this sort (the subquery is
            # flattened and its order kept).
            select_sql = f"SELECT k.* FROM ({select_sql}) k ORDER BY k.customer_id"
        if merged:
            # The diff's join, done while the stage is written: each staged row carries the
            # customer's current row of the dimension (``old_*``), and a FULL JOIN adds a row
            # for each current row whose customer the kind did not stage (``staged`` NULL, every
            # kind column NULL). The changes are then a filter of the stage (below), not a
            # second join of a million staged rows with a million current ones.
            #
            # A kind whose final join can hand its rows out in customer order (IN_CUSTOMER_ORDER:
            # the customers' primary key merged with per-customer aggregates) is asked to, and
            # hash joins are off for this statement: the current rows then come from the
            # (customer, dimension) unique index in the same order and the two are merged.
            # PostgreSQL 15 cannot run a FULL JOIN in parallel, and a hash table of a million
            # rows misses the CPU cache on every probe. Heavy night at 1M customers (107k
            # movers; old and new code one after the other in one benchmark-lock session): the
            # diff phase 0.93-1.02 s (a hash full join of the 1M-row stage with the 1M current
            # rows) -> 0.25-0.31 s (a 0.12 s filter of the stage), the compute phase (RFM's own
            # customers ⋈ scores join merged too) 4.1-4.5 -> 4.2-4.6 s. Only for such a kind:
            # folded as a hash FULL JOIN into another kind's statement (expiry, lifecycle at 1M:
            # light nights, old and new code alternately) it made expiry's stage statement
            # serial, 0.2-0.4 s slower than its parallel stage plus the separate diff, and
            # lifecycle even; those keep the separate diff below.
            select_sql = (
                f"SELECT k.*, o.layer_id AS old_layer_id, o.valid_until AS old_valid_until "
                f"FROM (SELECT k0.*, TRUE AS staged FROM ({select_sql}) k0) k FULL JOIN (SELECT customer_id, "
                f"layer_id, valid_until FROM {cl} WHERE dimension_id = %s) o ON o.customer_id = k.customer_id"
            )
            select_params = [*select_params, dimension_id]
        with _hash_joins_off(cursor, merged or ordered_first):
            cursor.execute(f"CREATE TEMP TABLE {STAGE_TABLE}{on_commit} AS {select_sql}", select_params)
            stage_rows = cursor.rowcount  # PostgreSQL's "SELECT n" command tag; -1 on SQLite
        stats = getattr(kind_module, "stage_stats", None)
        result.stats = stats(ctx, STAGE_TABLE) if stats else {}
        clock.lap("compute")
        # No ANALYZE of the stage: it is only scanned (aggregates, the diff), and the planner
        # sizes a fresh table from its pages.
        cursor.execute(f"SELECT COUNT(*) FROM {scope or table('Customer')}")
        customers = cursor.fetchone()[0]
        # A first run's stage itself becomes the change set (renamed, plus an all-NULL
        # ``old_layer_id``: catalog-only, no row rewritten) instead of being joined against
        # a million rows, copied and indexed. Its moves are the layer sizes, counted after
        # the write.
        if first_run:
            # No pre-check pass over the stage either: the insert into CustomerLayer is the
            # check. Its unique (customer, dimension) index refuses a customer staged twice
            # (and NOT NULL a missing layer) — then the pre-check runs, to report it — and
            # the count after the write finds customers placed nowhere or in another
            # dimension's layer.
            staged = staged_distinct = -1
        # A nightly run on PostgreSQL (unscoped) folds the pre-check into the diff: the stage
        # is a FULL JOIN with the current rows, so a row of the dimension whose customer the
        # kind lost shows up in it (NULL customer), and the stage's row count comes with its
        # creation; a stage with one row per customer and no lost row, followed by a write
        # that leaves exactly one row per customer (unique index + the count after the write),
        # is MECE. Elsewhere the pre-check aggregates the stage by customer first (SQLite, the
        # portable path, a scoped dimension whose lost rows are customers leaving the scope).
        if fused:
            staged = staged_distinct = stage_rows  # less the merged stage's lost rows, counted below
        elif not first_run:
            precheck = _precheck(cursor, layers, customers)
            if not precheck.ok:
                result.mece = precheck
                return result
            staged, staged_distinct = precheck.rows, precheck.placed

        # --- 2. changes: only customers whose row differs --------------------------------
        _drop(cursor, CHANGES_TABLE)
        moved = "(old_layer_id IS NULL OR old_layer_id <> layer_id)"
        moves: list[tuple[int | None, int | None, int]] = []
        if first_run:
            cursor.execute(f"ALTER TABLE {_temp(STAGE_TABLE)} RENAME TO {CHANGES_TABLE}")
            cursor.execute(f"ALTER TABLE {_temp(CHANGES_TABLE)} ADD COLUMN old_layer_id bigint")
        else:
            # The change set in customer order, as the first run's stage (see above): the
            # writes below visit or insert the movers' index entries in that order. 43.7k
            # movers of 200k customers, alternating runs: backend CPU of the whole nightly
            # run 2.59 -> 2.14 s (write + history + tags 2.04 -> 1.62 s); the sort is of the
            # changed rows only.
            if merged:
                # The stage already holds each customer's current row (see above).
                cursor.execute(
                    f"CREATE TEMP TABLE {CHANGES_TABLE}{on_commit} AS "
                    f"SELECT customer_id, layer_id, valid_until, old_layer_id, staged FROM {STAGE_TABLE} "
                    "WHERE customer_id IS NULL OR old_layer_id IS NULL OR old_layer_id <> layer_id OR "
                    f"{_distinct('old_valid_until', 'valid_until')} ORDER BY customer_id"
                )
            else:
                # The diff is a FULL JOIN when fused, so a row of the dimension whose customer
                # the stage lost shows up in it (NULL customer).
                join = (
                    f"FULL JOIN (SELECT customer_id, layer_id, valid_until FROM {cl} WHERE dimension_id = %s) c "
                    "ON c.customer_id = s.customer_id WHERE s.customer_id IS NULL OR "
                    if fused
                    else f"LEFT JOIN {cl} c ON c.customer_id = s.customer_id AND c.dimension_id = %s WHERE "
                )
                cursor.execute(
                    f"CREATE TEMP TABLE {CHANGES_TABLE}{on_commit} AS "
                    f"SELECT s.customer_id, s.layer_id, s.valid_until, c.layer_id AS old_layer_id FROM {STAGE_TABLE} s "
                    f"{join}c.layer_id IS NULL OR c.layer_id <> s.layer_id OR "
                    f"{_distinct('c.valid_until', 's.valid_until')} ORDER BY s.customer_id",
                    [dimension_id],
                )
            if fused:
                # Lost rows are in the merged stage itself (staged NULL): not staged rows.
                lost_sql = ", COUNT(*) FILTER (WHERE staged IS NULL)" if merged else ", 0"
                cursor.execute(f"SELECT COUNT(*){lost_sql} FROM {CHANGES_TABLE} WHERE customer_id IS NULL")
                unplaced_rows, lost = cursor.fetchone()
                staged = staged_distinct = stage_rows - lost
                if unplaced_rows or staged != customers:
                    precheck = _precheck(cursor, layers, customers, staged_only=merged)
                    if not precheck.ok:
                        result.mece = precheck
                        return result
                    # Rows of customers gone without their cascade: the count after the write says so.
                    cursor.execute(f"DELETE FROM {CHANGES_TABLE} WHERE customer_id IS NULL")
            _index_and_analyze(cursor, CHANGES_TABLE)
            cursor.execute(
                f"SELECT old_layer_id, layer_id, COUNT(*) FROM {CHANGES_TABLE} WHERE {moved} "
                "GROUP BY old_layer_id, layer_id"
            )
            moves = [(old, new, count) for old, new, count in cursor.fetchall()]
            if scope is not None:
                moves += _leave_scope(cursor, dimension_id=dimension_id, tag_ids=tag_ids, as_of_p=as_of_p)
        probes = False
        if not first_run and _vendor() == "postgresql":
            cursor.execute(f"SELECT COUNT(*) FROM {CHANGES_TABLE}")
            probes = cursor.fetchone()[0] * PROBE_FRACTION < customers
        if probes:
            # A nightly run changes a few rows. Left alone, the planner (which prices a random
            # read at 4 sequential ones) hashes all of the dimension's rows — a million — for
            # each of the four writes below, where one index probe per changed customer
            # ((customer, dimension) and (customer, tag) unique indexes) costs a hundredth of
            # that. SET LOCAL ends with the transaction: nothing outlives it behind a
            # transaction-pooling PgBouncer.
            cursor.execute("SET LOCAL enable_hashjoin = off")
            cursor.execute("SET LOCAL enable_mergejoin = off")
        clock.lap("diff")

        # --- 3. write the changed rows ----------------------------------------------------
        # A first run only inserts: one INSERT … SELECT, not a MERGE that matches every
        # staged customer against the other dimensions' rows.
        if _vendor() == "postgresql" and not portable and not first_run:
            merge_sql = f"""
                MERGE INTO {cl} AS t
                USING {CHANGES_TABLE} AS c ON t.customer_id = c.customer_id AND t.dimension_id = %s
                WHEN MATCHED THEN UPDATE SET
                    layer_id = c.layer_id,
                    valid_until = c.valid_until,
                    computed_at = %s,
                    since = CASE WHEN t.layer_id <> c.layer_id THEN %s ELSE t.since END
                WHEN NOT MATCHED THEN INSERT (customer_id, dimension_id, layer_id, since, computed_at, valid_until)
                    VALUES (c.customer_id, %s, c.layer_id, %s, %s, c.valid_until)
                """
            try:
                # A savepoint: a customer staged twice makes MERGE refuse to write a row twice
                # (or the unique index refuse the insert); the pre-check then says why.
                with transaction.atomic():
                    cursor.execute(merge_sql, [dimension_id, now_p, as_of_p, dimension_id, as_of_p, now_p])
            except DatabaseError:
                precheck = _precheck(cursor, layers, customers)
                if precheck.ok:
                    raise
                result.mece = precheck
                return result
        elif not first_run:
            cursor.execute(
                f"""
                UPDATE {cl} AS t SET
                    since = CASE WHEN t.layer_id <> c.layer_id THEN %s ELSE t.since END,
                    layer_id = c.layer_id,
                    valid_until = c.valid_until,
                    computed_at = %s
                FROM {CHANGES_TABLE} AS c
                WHERE c.customer_id = t.customer_id AND t.dimension_id = %s AND c.old_layer_id IS NOT NULL
                """,
                [as_of_p, now_p, dimension_id],
            )
        insert_sql = (
            f"INSERT INTO {cl} (customer_id, dimension_id, layer_id, since, computed_at, valid_until) "
            f"SELECT customer_id, %s, layer_id, %s, %s, valid_until FROM {CHANGES_TABLE} "
            "WHERE old_layer_id IS NULL"
        )
        if first_run:
            bulk = _bulk_target(cursor, cl, portable=portable)  # no row of any dimension: load, then index
            # A table partitioned by dimension: the dimension's own partition, loaded, then indexed.
            partition = None if bulk else _partition_target(cursor, cl, dimension_id, portable=portable)
            try:
                # A savepoint: the pre-check must run after a refused insert (or index build).
                staged = staged_distinct = _first_insert(
                    cursor,
                    cl,
                    insert_sql,
                    [dimension_id, as_of_p, now_p],
                    bulk=bulk,
                    partition=partition,
                    attach=attach,
                    clock=clock,
                    phase="write",
                )
            except IntegrityError:
                precheck = _precheck(cursor, layers, customers, stage=CHANGES_TABLE)
                if precheck.ok:
                    raise  # not the placement (a concurrent write): the run fails and is retried
                result.mece = precheck
                return result
        elif _vendor() != "postgresql" or portable:
            cursor.execute(insert_sql, [dimension_id, as_of_p, now_p])
        clock.lap("write")

        # --- 4. history: close the open row, open a new one, for movers only ----------------
        _write_history(
            cursor,
            hist,
            dimension_id,
            as_of_p,
            moved,
            first_run=first_run,
            movers=_movers(probes),
            bulk=first_run and _bulk_target(cursor, hist, portable=portable),
            partition=_partition_target(cursor, hist, dimension_id, portable=portable) if first_run else None,
            attach=attach,
            clock=clock,
        )
        clock.lap("history")

        # --- 5. tier tags -------------------------------------------------------------------
        if tag_ids:
            tag_list = ", ".join(["%s"] * len(tag_ids))
            if full_tags:
                _attach(cursor, attach, result)  # it reads the memberships
                cursor.execute(
                    f"DELETE FROM {ctag} WHERE tag_id IN ({tag_list}) AND source = 'computed' AND NOT EXISTS ("
                    f"SELECT 1 FROM {cl} c JOIN {layer_t} l ON l.id = c.layer_id "
                    f"WHERE c.customer_id = {ctag}.customer_id AND c.dimension_id = %s AND l.tag_id = {ctag}.tag_id)",
                    [*tag_ids, dimension_id],
                )
                cursor.execute(
                    f"INSERT INTO {ctag} (customer_id, tag_id, assigned_at, source) "
                    f"SELECT c.customer_id, l.tag_id, %s, 'computed' "
                    f"FROM {cl} c JOIN {layer_t} l ON l.id = c.layer_id "
                    "WHERE c.dimension_id = %s AND l.tag_id IS NOT NULL "
                    "ON CONFLICT (customer_id, tag_id) DO NOTHING",
                    [now_p, dimension_id],
                )
            else:
                # ON CONFLICT (speculative insertion) costs about as much again as the insert
                # itself; it is needed only where a row of these tags may already exist (a manual
                # one, or a computed one of a mover). A first run into tags nobody holds yet (one
                # probe of the tag index) inserts plainly. A manual tag committed meanwhile then
                # fails the run on the unique constraint, as ON CONFLICT would in REPEATABLE READ
                # for a row our snapshot cannot see: the next run places everyone.
                bulk = False
                if first_run:
                    # Nobody holds any tag at all: load, then index (no probe needed).
                    bulk = _bulk_target(cursor, ctag, portable=portable)
                    if not bulk:
                        cursor.execute(f"SELECT 1 FROM {ctag} WHERE tag_id IN ({tag_list}) LIMIT 1", tag_ids)
                    held = not bulk and cursor.fetchone() is not None
                else:
                    held = True
                    cursor.execute(
                        f"DELETE FROM {ctag} WHERE tag_id IN ({tag_list}) AND source = 'computed' "
                        f"AND customer_id {_movers(probes)}",
                        tag_ids,
                    )
                tags_sql = (
                    f"INSERT INTO {ctag} (customer_id, tag_id, assigned_at, source) "
                    f"SELECT c.customer_id, l.tag_id, %s, 'computed' "
                    f"FROM {CHANGES_TABLE} c JOIN {layer_t} l ON l.id = c.layer_id "
                    "WHERE l.tag_id IS NOT NULL AND (c.old_layer_id IS NULL OR c.old_layer_id <> c.layer_id)"
                )
                skip_held = " ON CONFLICT (customer_id, tag_id) DO NOTHING"
                if bulk:
                    _first_insert(cursor, ctag, tags_sql, [now_p], bulk=True, clock=clock, phase="tags")
                elif first_run:
                    cursor.execute(tags_sql + (skip_held if held else ""), [now_p])
                else:
                    # A nightly run has just deleted its movers' computed tier tags, so only a
                    # manual row can still hold a tag it inserts (the customer kept it by hand):
                    # the insert goes in plain, in a savepoint (the unique index checks each row
                    # as it inserts it anyway), and is repeated with ON CONFLICT only when such a
                    # row refused it. Speculative insertion probes the unique index before each
                    # row, then inserts and confirms it: 0.63-0.70 s against 0.44-0.48 s plain for
                    # 107k movers at 1M customers (alternating, in one transaction). A refused
                    # plain insert costs its work up to the refusal, once, on a night where a
                    # mover enters a tier whose tag they hold by hand.
                    try:
                        with transaction.atomic():
                            cursor.execute(tags_sql, [now_p])
                    except IntegrityError:
                        cursor.execute(tags_sql + skip_held, [now_p])
        if probes:
            cursor.execute("SET LOCAL enable_hashjoin TO DEFAULT")
            cursor.execute("SET LOCAL enable_mergejoin TO DEFAULT")
        clock.lap("tags")

        # --- 6. sizes, transitions, MECE ------------------------------------------------------
        if attach:
            _attach(cursor, attach, result)
            clock.lap("attach")
        cursor.execute(f"SELECT layer_id, COUNT(*) FROM {cl} WHERE dimension_id = %s GROUP BY layer_id", [dimension_id])
        sizes = dict(cursor.fetchall())
        if first_run:
            moves = [(None, layer_id, count) for layer_id, count in sizes.items()]
        layer_ids = set(layers.values())
        placed = sum(count for layer_id, count in sizes.items() if layer_id in layer_ids)
        rows = sum(sizes.values())
        result.mece = MeceResult(
            customers=customers,
            placed=placed,
            rows=rows,
            duplicates=staged - staged_distinct,
            unplaced=customers - placed,
            foreign=rows - placed,
        )
        if not result.mece.ok and (first_run or fused):
            # Not pre-checked: say whether the stage itself placed someone twice or nowhere.
            precheck = _precheck(
                cursor, layers, customers, stage=CHANGES_TABLE if first_run else STAGE_TABLE, staged_only=merged
            )
            if not precheck.ok:
                result.mece = precheck
        # Who stayed in a layer is who is in it now minus who moved in (no count of the
        # previous sizes needed).
        moved_in: dict[int, int] = {}
        for _, new, count in moves:
            if new is not None:
                moved_in[new] = moved_in.get(new, 0) + count
        stayed = [(layer_id, layer_id, size - moved_in.get(layer_id, 0)) for layer_id, size in sizes.items()]
        result.transitions = [t for t in moves + stayed if t[2] > 0]
        result.layer_sizes = sizes
        result.customers = customers
        result.changed = sum(count for _, _, count in moves)
        _drop(cursor, CHANGES_TABLE)
        _drop(cursor, STAGE_TABLE)
        if scope is not None:
            _drop(cursor, SCOPE_TABLE)
        clock.lap("check")
    result.timings_ms = clock.timings
    return result


def _precheck(
    cursor: Any, layers: dict[str, int], customers: int, *, stage: str = STAGE_TABLE, staged_only: bool = False
) -> MeceResult:
    """Check the computed placement before writing anything: a customer placed twice or
    nowhere, or a layer of another dimension, is a MECE violation (and would otherwise leave
    a stale row behind or trip a constraint mid-write). One hash aggregation over the stage
    (COUNT(DISTINCT …) would sort): rows, rows beyond one per customer, rows in a layer of
    another dimension. ``staged_only``: the fused stage, whose rows the kind did not stage
    (current rows of customers it lost, ``staged`` NULL) are not counted."""
    in_layers = ", ".join(["%s"] * len(layers))
    cursor.execute(
        f"SELECT COALESCE(SUM(n), 0), COALESCE(SUM(n - 1), 0), COALESCE(SUM(f), 0) FROM "
        f"(SELECT customer_id, COUNT(*) AS n, SUM(CASE WHEN layer_id NOT IN ({in_layers}) THEN 1 ELSE 0 END) AS f "
        f"FROM {stage}{' WHERE staged' if staged_only else ''} GROUP BY customer_id) g",
        list(layers.values()),
    )
    staged, extra, foreign = (int(v) for v in cursor.fetchone())
    return MeceResult(
        customers=customers,
        placed=staged - extra,
        rows=staged,
        duplicates=extra,
        unplaced=customers - (staged - extra),
        foreign=foreign,
    )


def _leave_scope(cursor: Any, *, dimension_id: int, tag_ids: list[int], as_of_p: Any) -> list[tuple[int, None, int]]:
    """Customers placed in the dimension but no longer in its scope (they lost the role, or
    the dimension was just scoped): delete their row, close their history, drop their tier
    tag. Returns their moves, ``(old layer, None, count)``."""
    cl, hist, ctag = table("CustomerLayer"), table("LayerHistory"), table("CustomerTag")
    on_commit = " ON COMMIT DROP" if _vendor() == "postgresql" else ""
    _drop(cursor, DROPPED_TABLE)
    cursor.execute(
        f"CREATE TEMP TABLE {DROPPED_TABLE}{on_commit} AS SELECT c.customer_id, c.layer_id AS old_layer_id "
        f"FROM {cl} c WHERE c.dimension_id = %s AND NOT EXISTS "
        f"(SELECT 1 FROM {SCOPE_TABLE} s WHERE s.customer_id = c.customer_id)",
        [dimension_id],
    )
    _index_and_analyze(cursor, DROPPED_TABLE)
    cursor.execute(f"SELECT old_layer_id, COUNT(*) FROM {DROPPED_TABLE} GROUP BY old_layer_id")
    moves = [(old, None, count) for old, count in cursor.fetchall()]
    if moves:
        dropped = f"customer_id IN (SELECT customer_id FROM {DROPPED_TABLE})"
        cursor.execute(f"DELETE FROM {cl} WHERE dimension_id = %s AND {dropped}", [dimension_id])
        cursor.execute(
            f"UPDATE {hist} SET left_at = %s WHERE dimension_id = %s AND left_at IS NULL AND {dropped}",
            [as_of_p, dimension_id],
        )
        if tag_ids:
            cursor.execute(
                f"DELETE FROM {ctag} WHERE tag_id IN ({', '.join(['%s'] * len(tag_ids))}) AND source = 'computed' "
                f"AND {dropped}",
                tag_ids,
            )
    _drop(cursor, DROPPED_TABLE)
    return moves


@contextlib.contextmanager
def _hash_joins_off(cursor: Any, off: bool) -> Iterator[None]:
    """Hash joins off for the statements inside (``SET LOCAL``: nothing outlives the
    transaction behind a transaction-pooling PgBouncer), the previous setting back after."""
    if not off:
        yield
        return
    cursor.execute("SELECT current_setting('enable_hashjoin')")
    previous = cursor.fetchone()[0]
    cursor.execute("SET LOCAL enable_hashjoin = off")
    yield  # a failed statement aborts the transaction, and the SET with it
    cursor.execute("SELECT set_config('enable_hashjoin', %s, true)", [previous])


def _movers(probes: bool) -> str:
    """``customer_id <this>``: the customers who left a layer for another. With ``probes``
    (PostgreSQL, few changes) an array, so the statement probes the (customer, …) unique
    index once per mover; a semi-join would read every row of the dimension."""
    select = f"SELECT customer_id FROM {CHANGES_TABLE} WHERE old_layer_id IS NOT NULL AND old_layer_id <> layer_id"
    return f"= ANY(ARRAY({select}))" if probes else f"IN ({select})"


def _write_history(
    cursor: Any,
    hist: str,
    dimension_id: int,
    as_of_p: Any,
    moved: str,
    *,
    first_run: bool,
    movers: str,
    bulk: bool = False,
    partition: Partition | None = None,
    attach: list[Partition] | None = None,
    clock: _Clock | None = None,
) -> None:
    if first_run:
        # No customer has a row of this dimension, so no history row of it may stay open:
        # open one row per customer, straight from the change set. The insert is the check
        # that none was left open (memberships deleted behind the engine's back): the
        # partial unique index of open rows refuses it, in a savepoint, and only then are
        # they closed and the insert repeated. Asking first ("any open row of this
        # dimension?") has no index to use — both history indexes lead with the customer —
        # so it read the whole table: 0.18 s per million history rows, paid by every new
        # dimension on a populated install.
        insert = (
            f"INSERT INTO {hist} (customer_id, dimension_id, layer_id, entered_at, left_at) "
            f"SELECT customer_id, %s, layer_id, %s, NULL FROM {CHANGES_TABLE}"
        )
        # With ``bulk`` (no history row at all, locked: _bulk_target) none can be open: the
        # insert goes in bare and the indexes are built after it; likewise with ``partition``
        # (no history row of this dimension: _partition_target), into the dimension's own table.
        try:
            _first_insert(
                cursor,
                hist,
                insert,
                [dimension_id, as_of_p],
                bulk=bulk,
                partition=partition,
                attach=attach,
                clock=clock or _Clock(),
                phase="history",
            )
        except IntegrityError:
            cursor.execute(
                f"UPDATE {hist} SET left_at = %s WHERE dimension_id = %s AND left_at IS NULL", [as_of_p, dimension_id]
            )
            cursor.execute(insert, [dimension_id, as_of_p])
        return
    cursor.execute(
        f"UPDATE {hist} SET left_at = %s WHERE dimension_id = %s AND left_at IS NULL AND customer_id {movers}",
        [as_of_p, dimension_id],
    )
    cursor.execute(
        f"INSERT INTO {hist} (customer_id, dimension_id, layer_id, entered_at, left_at) "
        f"SELECT customer_id, %s, layer_id, %s, NULL FROM {CHANGES_TABLE} WHERE {moved}",
        [dimension_id, as_of_p],
    )


# --- a first run's bulk load (PostgreSQL) ----------------------------------------------------
#
# A first run into a table that holds no row at all (a new install, a re-load after TRUNCATE)
# loads it the way PostgreSQL's manual advises ("Populating a Database": remove indexes, load,
# re-create them): drop the indexes, insert, then build each index once from a sort of the
# whole table, instead of inserting into each B-tree once per row (with its WAL record and
# buffer lookups). Each of the three tables is decided on its own (_bulk_target), when it is
# written.
#
# Measured at 1M customers (bench/segments.py --dimensions rfm --pairs 3 --populated-cold,
# under the benchmark lock, load average 1.0-1.4 on the shared 2-core machine): the cold run
# 12.9-14.7 s -> 9.6-10.2 s, median 3.41x -> 2.79x the anchor (pairs 2.69 / 2.79 / 2.82). Per
# table, insert + builds: memberships 2.9 s -> 0.85 + 0.85-0.98 s, history 2.8 s -> 0.8 +
# 0.6-0.95 s, tier tags 3.2 s -> 1.1-1.2 + 1.0-1.1 s (tags carry four indexes). Also measured:
# - keeping the primary key (a sequential bigint, filled at its right edge) instead of
#   rebuilding it, 3 pairs each in separate lock sessions: memberships + history (insert +
#   builds) 3.7-3.9 s kept against 3.1-3.7 s rebuilt (a kept key adds ~0.5 s to each insert,
#   its build costs ~0.2 s), tier tags even (2.0-2.3 s): it is rebuilt. BULK_KEEP_PRIMARY_KEY
#   keeps it (a primary key another table's foreign key uses is kept anyway);
# - max_parallel_maintenance_workers 0 against the server's 2: the builds within the run-to-run
#   spread on 2 cores (memberships 0.87-0.95 s against 0.75-1.07 s): left to the server;
# - maintenance_work_mem (the builds' sort memory) 64MB (PostgreSQL's default) against the
#   benchmark server's 512MB: the nine builds 2.1-2.2 s against 2.4-2.9 s — a sort in 64MB
#   runs merged is no slower than one in memory here (the input comes in customer order), so
#   nothing is SET for the builds: the server's setting is used.
# A new dimension on a populated install (another dimension's rows present) wrote through the
# indexes holding the other dimensions' rows: 3.46x (13.1-13.4 s; write 3.0-3.2, history
# 3.0-3.1, tags 3.1-3.2 s), bench JSON floors.cold_populated. Memberships and history are
# partitioned by dimension since (migration 0016), so a dimension's first run loads a partition
# of its own (_partition_target, _partition_insert, _attach_partitions): 2.85x, median of 5
# alternating pairs (2.70-2.95; 10.3-10.7 s: write 0.9 + 0.9, history 0.85 + 0.7 s; tier tags,
# one table for every dimension, still 3.2 s through its indexes), 2.75x in 3 pairs before,
# 2026-12-06. The partition path needs no lock until
# the attach at the end of the run (see ATTACH_LOCK_TIMEOUT). Written here, not left to
# pg_partman: it manages time and number ranges, not a LIST partition per key, and the point
# is to load the table before it becomes a partition.
#
# Who pays: the run holds ACCESS EXCLUSIVE on each bulk-loaded plain table (tier tags) from its
# LOCK to the commit (DROP INDEX needs it anyway), so every reader of that table — the API, the
# admin, a report, the next dimension's recompute — waits for the rest of the new install's
# first run (about 3 s at 1M); a streaming replica replays the lock, so its readers wait too.
# Taken only with NOWAIT: if any session holds a lock on the table (an open transaction that
# read it), the run writes through the indexes as before and never waits. A table with rows
# (another dimension's: a new dimension on a running install) is written through its indexes.
# A partition of its own (memberships, history) is invisible to everyone until it is attached
# at the end of the run; from then to the commit (~0.2 s at 1M) readers of the default
# partition wait (see ATTACH_LOCK_TIMEOUT), readers naming another dimension do not.
#
# Generic over the catalog: every index of the table is read back (pg_index,
# pg_get_indexdef; pg_constraint for those backing a UNIQUE / PRIMARY KEY constraint: name,
# type, deferrability) and rebuilt with that exact definition and name, so an index a later
# migration adds is covered. Kept in place (not dropped): an index another table's foreign key
# or an exclusion constraint depends on, the clustered or replica-identity index, an invalid
# one, one with a comment, and the primary key when BULK_KEEP_PRIMARY_KEY. DDL is
# transactional: the drop, the insert and the builds run in one savepoint, so a refused build
# (a customer staged twice fails the unique build as it failed the insert before; likewise the
# history's one-open-row index and the tags' (customer, tag) one) rolls the catalog back to its
# indexes, and the caller reports the MECE violation (or fails the run) as before.
BULK_KEEP_PRIMARY_KEY = False
LOCK_NOT_AVAILABLE = "55P03"


class _NotEmpty(Exception):
    pass


@dataclass(frozen=True)
class TableIndex:
    """One index of a table as the catalog has it, and the constraint it backs, if any."""

    name: str
    definition: str  # pg_get_indexdef: CREATE [UNIQUE] INDEX name ON schema.table USING …
    constraint: str | None  # pg_constraint.contype: 'p' or 'u', None for a plain index
    deferrable: bool
    deferred: bool
    keep: bool  # left in place by a bulk load


def table_indexes(cursor: Any, table_name: str) -> list[TableIndex]:
    """Every index of ``table_name`` (PostgreSQL), by name."""
    cursor.execute(
        """
        SELECT i.relname, pg_get_indexdef(x.indexrelid), c.contype, COALESCE(c.condeferrable, false),
               COALESCE(c.condeferred, false),
               x.indisclustered OR x.indisreplident OR NOT x.indisvalid OR NOT x.indisready
               OR COALESCE(c.contype = 'x', false)
               OR obj_description(x.indexrelid, 'pg_class') IS NOT NULL
               OR EXISTS (SELECT 1 FROM pg_constraint f WHERE f.conindid = x.indexrelid AND f.contype = 'f')
               OR (x.indisprimary AND %s)
        FROM pg_index x
        JOIN pg_class i ON i.oid = x.indexrelid
        LEFT JOIN pg_constraint c ON c.conindid = x.indexrelid AND c.conrelid = x.indrelid
            AND c.contype IN ('p', 'u', 'x')
        WHERE x.indrelid = %s::regclass
        ORDER BY i.relname
        """,
        [BULK_KEEP_PRIMARY_KEY, table_name],
    )
    return [
        TableIndex(name=n, definition=d, constraint=t, deferrable=df, deferred=dd, keep=bool(k))
        for n, d, t, df, dd, k in cursor.fetchall()
    ]


def _bulk_target(cursor: Any, table_name: str, *, portable: bool) -> bool:
    """On PostgreSQL (not ``portable``): lock ``table_name`` for a bulk load if nobody holds a
    lock on it and it has no row at all. The lock is kept for the transaction; when the table is
    not empty the savepoint is rolled back, which releases the lock again (PostgreSQL docs,
    "Explicit Locking": a lock taken after a savepoint is released by rolling back to it).

    "No row at all" is an empty heap file (``pg_relation_size`` = 0: a new install, or after
    TRUNCATE), asked under the lock, not ``SELECT 1 … LIMIT 1``: the run's REPEATABLE READ
    snapshot would not see a row committed between its start and the lock (the heap
    has it, and the unique builds would meet it), and a populated table (a new dimension on a
    running install) is not read at all. A table emptied by DELETE, or whose first load was
    rolled back (a refused run leaves its pages), takes the indexed path until VACUUM truncates
    the empty pages."""
    if _vendor() != "postgresql" or portable:
        return False
    # Dropping and creating indexes needs the table's owner: an application role that was only
    # granted its rows (migrations run by the owner) writes through the indexes. A plain table
    # only: a partitioned one has an empty heap of its own whatever its partitions hold, and a
    # partition's indexes belong to its parent's.
    cursor.execute(
        "SELECT pg_has_role(relowner, 'USAGE') AND relkind = 'r' AND NOT relispartition FROM pg_class "
        "WHERE oid = %s::regclass",
        [table_name],
    )
    if not cursor.fetchone()[0]:
        return False
    try:
        with transaction.atomic():
            cursor.execute(f"LOCK TABLE {table_name} IN ACCESS EXCLUSIVE MODE NOWAIT")
            cursor.execute("SELECT pg_relation_size(%s::regclass)", [table_name])
            if cursor.fetchone()[0] != 0:
                raise _NotEmpty
    except _NotEmpty:
        return False
    except OperationalError as exc:
        if getattr(exc.__cause__, "sqlstate", None) != LOCK_NOT_AVAILABLE:
            raise
        return False
    return True


@dataclass(frozen=True)
class Partition:
    """A dimension's own partition of a table partitioned by dimension, to be created by its
    first run (``_partition_target``)."""

    table: str
    name: str
    dimension_id: int


def partition_name(table_name: str, dimension_id: int) -> str:
    """The name of ``dimension_id``'s partition of ``table_name`` (migration 0016's naming)."""
    return f"{table_name}_d{int(dimension_id)}"


def _partition_target(cursor: Any, table_name: str, dimension_id: int, *, portable: bool) -> Partition | None:
    """On PostgreSQL (not ``portable``), for a table partitioned by dimension (migration 0016):
    the dimension's partition to create, load and attach, when it has none yet and no row of it
    waits in the default partition. Otherwise (a partition of that name exists already: the
    dimension's rows were deleted, not its partition) the rows go in through the parent's
    indexes as before. Takes no lock: ``_attach_partitions`` does, at the end of the run."""
    if _vendor() != "postgresql" or portable:
        return None
    default = f"{table_name}_default"
    name = partition_name(table_name, dimension_id)
    # Creating and attaching a table needs the parent's owner, like the bulk load (_bulk_target).
    cursor.execute(
        "SELECT pg_has_role(p.relowner, 'USAGE') AND to_regclass(%s) IS NOT NULL AND to_regclass(%s) IS NULL "
        "FROM pg_class p JOIN pg_partitioned_table k ON k.partrelid = p.oid "
        "JOIN pg_attribute a ON a.attrelid = p.oid AND a.attnum = k.partattrs[0] "
        "WHERE p.oid = %s::regclass AND k.partstrat = 'l' AND k.partnatts = 1 AND a.attname = 'dimension_id'",
        [default, name, table_name],
    )
    row = cursor.fetchone()
    if row is None or not row[0]:
        return None
    cursor.execute(f"SELECT 1 FROM {default} WHERE dimension_id = %s LIMIT 1", [dimension_id])
    if cursor.fetchone() is not None:
        return None
    return Partition(table=table_name, name=name, dimension_id=int(dimension_id))


def _first_insert(
    cursor: Any,
    table_name: str,
    sql: str,
    params: list[Any],
    *,
    bulk: bool,
    clock: _Clock,
    phase: str,
    partition: Partition | None = None,
    attach: list[Partition] | None = None,
) -> int:
    """A first run's ``INSERT … SELECT`` in a savepoint; returns its row count. With ``bulk``
    (``_bulk_target`` locked the empty table), the table's indexes are dropped before and
    built after it (laps ``<phase>_indexes``). With ``partition`` (``_partition_target``), the
    rows go into a new table of their own, bare, which is then indexed like the parent and
    attached as the dimension's partition at the end of the run (appended to ``attach``, for
    ``_attach_partitions``). A duplicate refused by a unique index — at the
    insert, or at the build — raises ``IntegrityError`` with the savepoint (and the catalog)
    rolled back."""
    quote = connection.ops.quote_name
    if partition is not None:
        rows = _partition_insert(cursor, table_name, sql, params, partition=partition, clock=clock, phase=phase)
        if attach is not None:
            attach.append(partition)
        return rows
    with transaction.atomic():
        indexes = [ix for ix in table_indexes(cursor, table_name) if not ix.keep] if bulk else []
        for ix in indexes:
            if ix.constraint:
                cursor.execute(f"ALTER TABLE {table_name} DROP CONSTRAINT {quote(ix.name)}")
            else:
                cursor.execute(f"DROP INDEX {quote(ix.name)}")
        cursor.execute(sql, params)
        rows = cursor.rowcount
        if not indexes:
            return rows
        clock.lap(phase)
        for ix in indexes:
            cursor.execute(ix.definition)
            if ix.constraint:
                kind = "PRIMARY KEY" if ix.constraint == "p" else "UNIQUE"
                timing = (" DEFERRABLE" + (" INITIALLY DEFERRED" if ix.deferred else "")) if ix.deferrable else ""
                cursor.execute(
                    f"ALTER TABLE {table_name} ADD CONSTRAINT {quote(ix.name)} {kind} USING INDEX {quote(ix.name)}"
                    + timing
                )
        clock.lap(f"{phase}_indexes")
    return rows


def _partition_insert(
    cursor: Any, table_name: str, sql: str, params: list[Any], *, partition: Partition, clock: _Clock, phase: str
) -> int:
    """``_first_insert`` into a new table for a partition: created like the parent (its columns
    and defaults: the same id sequence), with a CHECK of its bound so that ATTACH needs no scan
    of it (PostgreSQL docs, "Partition Maintenance"), loaded bare, then given each of the
    parent's indexes (ATTACH adopts them instead of building its own). Attached later."""
    quote = connection.ops.quote_name
    name, dimension_id = partition.name, partition.dimension_id
    target = f"INSERT INTO {table_name} "
    if not sql.startswith(target):
        raise ValueError(f"not an INSERT INTO {table_name}: {sql[:60]}")
    with transaction.atomic():
        cursor.execute(f"CREATE TABLE {name} (LIKE {table_name} INCLUDING DEFAULTS)")
        cursor.execute(
            f"ALTER TABLE {name} ADD CONSTRAINT {quote(name + '_bound')} CHECK (dimension_id = {dimension_id})"
        )
        cursor.execute(f"INSERT INTO {name} " + sql[len(target) :], params)
        rows = cursor.rowcount
        clock.lap(phase)
        for ix in table_indexes(cursor, table_name):
            index = quote(f"{name}_{ix.name}"[:63])
            head, _, columns = ix.definition.partition(" USING ")
            unique = "UNIQUE " if head.startswith("CREATE UNIQUE ") else ""
            cursor.execute(f"CREATE {unique}INDEX {index} ON {name} USING {columns}")
            if ix.constraint:
                kind = "PRIMARY KEY" if ix.constraint == "p" else "UNIQUE"
                cursor.execute(f"ALTER TABLE {name} ADD CONSTRAINT {index} {kind} USING INDEX {index}")
        clock.lap(f"{phase}_indexes")
    return rows


# Attaching a partition takes ACCESS EXCLUSIVE on the default partition (its partition
# constraint changes; PostgreSQL docs, ALTER TABLE … ATTACH PARTITION) until the run commits:
# a reader of the default partition — one that does not name a dimension with a partition of
# its own, e.g. a customer's layers across dimensions — waits for that. So the loaded
# partitions are attached at the end of the run (the MECE count and the commit are left:
# ~0.2 s at 1M customers), and the lock is waited for at most ATTACH_LOCK_TIMEOUT: a session
# holding the default partition longer (a long report) makes the run copy the loaded rows
# through the parent instead (into the default partition, as before migration 0016).
ATTACH_LOCK_TIMEOUT = "2s"


def _attach(cursor: Any, pending: list[Partition], result: DimensionWrite) -> None:
    copied = _attach_partitions(cursor, pending)
    if copied:
        result.stats["partitions_copied_through_parent"] = copied


def _attach_partitions(cursor: Any, pending: list[Partition]) -> list[str]:
    """Attach each loaded partition (``_partition_insert``) to its table; returns the names of
    those whose rows were copied through the parent instead (the lock was not granted)."""
    quote = connection.ops.quote_name
    copied = []
    for partition in pending:
        table_name, name = partition.table, partition.name
        try:
            with transaction.atomic():
                cursor.execute(f"SET LOCAL lock_timeout = '{ATTACH_LOCK_TIMEOUT}'")
                cursor.execute(
                    f"ALTER TABLE {table_name} ATTACH PARTITION {name} FOR VALUES IN ({partition.dimension_id})"
                )
                cursor.execute(f"ALTER TABLE {name} DROP CONSTRAINT {quote(name + '_bound')}")  # the bound says it
        except OperationalError as exc:
            if getattr(exc.__cause__, "sqlstate", None) != LOCK_NOT_AVAILABLE:
                raise
            cursor.execute(f"INSERT INTO {table_name} SELECT * FROM {name}")
            cursor.execute(f"DROP TABLE {name}")
            copied.append(name)
        cursor.execute("SET LOCAL lock_timeout TO DEFAULT")
    pending.clear()
    return copied


@dataclass(frozen=True)
class SegmentWrite:
    size: int
    added: int
    removed: int
    timings_ms: dict[str, int]


# A segment's members (or a tag's holders) before the write: its rows read once into a temp
# table, so the diff never reads the table being written (segment_write, tag_write).
CURRENT_MEMBERS_TABLE = "segments_stage_current_members"


def segment_write(*, segment_id: int, members_sql: str, params: list[Any], as_of: dt.datetime) -> SegmentWrite:
    """Replace a segment's members by the rows of ``members_sql`` (customer ids), writing
    only additions and removals so ``since`` keeps when each member joined.

    Both sides of the diff are ANALYZEd temp tables, so PostgreSQL hash-joins them; the
    membership table is only written. An anti-join *against the table being filled*
    (``INSERT INTO m … WHERE NOT EXISTS (SELECT … FROM m …)``) was planned as a nested
    loop over a seq scan of ``m`` whenever the segment had no rows yet (its statistics
    said empty): every probe re-read the pages inserted so far by the statement, O(n²)
    (385 s for a 243k-member first fill at 1M customers). A first fill (no row yet) is one
    plain ``INSERT … SELECT`` without any diff.
    """
    clock = _Clock()
    sm = table("SegmentMembership")
    as_of_p = connection.ops.adapt_datetimefield_value(as_of)
    on_commit = " ON COMMIT DROP" if _vendor() == "postgresql" else ""
    members, current = MEMBERS_TABLE, CURRENT_MEMBERS_TABLE
    with connection.cursor() as cursor:
        _drop(cursor, members)
        cursor.execute(f"CREATE TEMP TABLE {members} (customer_id bigint NOT NULL){on_commit}")
        cursor.execute(f"INSERT INTO {members} (customer_id) {members_sql}", params)
        size = cursor.rowcount
        _index_and_analyze(cursor, members)
        clock.lap("compute")
        _drop(cursor, current)
        cursor.execute(f"CREATE TEMP TABLE {current} (customer_id bigint NOT NULL){on_commit}")
        cursor.execute(
            f"INSERT INTO {current} (customer_id) SELECT customer_id FROM {sm} WHERE segment_id = %s", [segment_id]
        )
        existing = cursor.rowcount
        insert = f"INSERT INTO {sm} (segment_id, customer_id, since) SELECT %s, s.customer_id, %s FROM {members} s"
        if existing == 0:
            removed = 0
            cursor.execute(insert, [segment_id, as_of_p])
        else:
            _index_and_analyze(cursor, current)
            cursor.execute(
                f"DELETE FROM {sm} WHERE segment_id = %s AND customer_id IN (SELECT c.customer_id FROM {current} c "
                f"WHERE NOT EXISTS (SELECT 1 FROM {members} s WHERE s.customer_id = c.customer_id))",
                [segment_id],
            )
            removed = cursor.rowcount
            cursor.execute(
                f"{insert} WHERE NOT EXISTS (SELECT 1 FROM {current} c WHERE c.customer_id = s.customer_id)",
                [segment_id, as_of_p],
            )
        added = cursor.rowcount
        _drop(cursor, members)
        _drop(cursor, current)
        clock.lap("write")
    return SegmentWrite(size=size, added=added, removed=removed, timings_ms=clock.timings)


TAG_MEMBERS_TABLE = "segments_stage_tag_members"


@dataclass(frozen=True)
class TagWrite:
    matched: int  # customers the rule matches
    holders: int  # customers holding the tag afterwards (computed + manual)
    gained: int
    lost: int
    timings_ms: dict[str, int]


def tag_write(*, tag_id: int, members_sql: str, params: list[Any], as_of: dt.datetime) -> TagWrite:
    """Make the *computed* holders of a tag the rows of ``members_sql`` (customer ids),
    writing only gains and losses, each with its history row (``TagHistory``).

    Manual rows are never touched: a customer holding the tag by hand is neither given a
    computed row (the insert skips any existing row) nor loses it (only ``source =
    'computed'`` rows are removed). Call inside a transaction.

    The gains are found against a temp copy of the tag's holders (after the losses), not
    by anti-joining ``CustomerTag`` while inserting into it: as in ``segment_write``, that
    anti-join was planned as a nested loop over a seq scan of the table being filled when
    its statistics said empty, re-reading every inserted page per row (quadratic).
    """
    clock = _Clock()
    ctag, hist = table("CustomerTag"), table("TagHistory")
    as_of_p = connection.ops.adapt_datetimefield_value(as_of)
    on_commit = " ON COMMIT DROP" if _vendor() == "postgresql" else ""
    members = TAG_MEMBERS_TABLE
    not_member = f"NOT EXISTS (SELECT 1 FROM {members} m WHERE m.customer_id = {ctag}.customer_id)"
    computed_lost = f"tag_id = %s AND source = 'computed' AND {not_member}"
    holders_now = CURRENT_MEMBERS_TABLE
    no_row = f"NOT EXISTS (SELECT 1 FROM {holders_now} t WHERE t.customer_id = m.customer_id)"
    with connection.cursor() as cursor:
        _drop(cursor, members)
        cursor.execute(f"CREATE TEMP TABLE {members} (customer_id bigint NOT NULL){on_commit}")
        cursor.execute(f"INSERT INTO {members} (customer_id) {members_sql}", params)
        matched = cursor.rowcount
        _index_and_analyze(cursor, members)
        clock.lap("compute")
        # Losses: close the open history row, then remove the computed row.
        cursor.execute(
            f"UPDATE {hist} SET lost_at = %s WHERE tag_id = %s AND lost_at IS NULL AND customer_id IN "
            f"(SELECT customer_id FROM {ctag} WHERE {computed_lost})",
            [as_of_p, tag_id, tag_id],
        )
        cursor.execute(f"DELETE FROM {ctag} WHERE {computed_lost}", [tag_id])
        lost = cursor.rowcount
        # Gains: open a history row, then insert the computed row, for members without any row
        # (computed or manual) among the holders left after the losses.
        _drop(cursor, holders_now)
        cursor.execute(f"CREATE TEMP TABLE {holders_now} (customer_id bigint NOT NULL){on_commit}")
        cursor.execute(
            f"INSERT INTO {holders_now} (customer_id) SELECT customer_id FROM {ctag} WHERE tag_id = %s", [tag_id]
        )
        _index_and_analyze(cursor, holders_now)
        cursor.execute(
            f"INSERT INTO {hist} (customer_id, tag_id, source, gained_at, lost_at, changed_by_id) "
            f"SELECT m.customer_id, %s, 'computed', %s, NULL, NULL FROM {members} m WHERE {no_row}",
            [tag_id, as_of_p],
        )
        cursor.execute(
            f"INSERT INTO {ctag} (customer_id, tag_id, assigned_at, source, assigned_by_id) "
            f"SELECT m.customer_id, %s, %s, 'computed', NULL FROM {members} m WHERE {no_row}",
            [tag_id, as_of_p],
        )
        gained = cursor.rowcount
        _drop(cursor, holders_now)
        cursor.execute(f"SELECT COUNT(*) FROM {ctag} WHERE tag_id = %s", [tag_id])
        holders = cursor.fetchone()[0]
        _drop(cursor, members)
        clock.lap("write")
    return TagWrite(matched=matched, holders=holders, gained=gained, lost=lost, timings_ms=clock.timings)
