"""Exact money in SQL: amounts are summed and compared as integer hundredths.

``Event.amount`` is ``DecimalField(max_digits=14, decimal_places=2)``. PostgreSQL stores it
as ``numeric(14, 2)`` and ``SUM`` over numeric is exact. SQLite has no decimal type: the
column has NUMERIC affinity, so ``18.30`` is stored as the binary double nearest to it and
``SUM`` adds doubles: ``12.00 + 18.30`` gives 30.3 but ``30.24 + 0.06`` gives
30.299999999999997, so two customers who spent the same money would rank differently,
score differently and one of them would miss a level whose minimum is 30.30 (and the
result of a longer sum depends on the order the rows are read in).

Every money aggregate therefore goes through this module and yields **integer hundredths**
(``SCALE`` decimal places, the column's own): on SQLite ``SUM(CAST(ROUND(amount * 100) AS
INTEGER))`` (each stored double rounded back to the exact hundredths it was written from,
then an integer sum, which SQLite computes exactly or fails loudly on overflow), on
PostgreSQL ``SUM(amount) * 100`` over numeric (exact; scaled once per group, so the per-row
work is unchanged). Thresholds are turned into the same unit in Python with exact decimal
arithmetic, rounded in the direction that keeps the comparison exact (``v ≥ 30.305`` on an
integer ``v`` in hundredths is ``v ≥ 3031``).

Why the rounding is exact: ``|amount| < 10¹²`` (14 digits, 2 decimals), where doubles are
2⁻¹³ apart, so the stored double is within 2⁻¹⁴ ≈ 6·10⁻⁵ of the decimal; times 100 (one
more rounding, ≤ 2⁻⁷ at 10¹⁴) it is within 0.01 of an integer, far from the 0.5 at which
``ROUND`` could pick the wrong one.

Why not a stored integer column: it would need a migration rewriting every event row (10⁷
and more), and every writer (the API, both bulk importers with PostgreSQL's ``COPY``, the
demo, the campaigns' redemption events) to fill it, for no gain on PostgreSQL, which is
already exact; the rounding above costs SQLite a few VM instructions per row, within
run-to-run noise when measured: RFM's aggregate over 1M events (400k orders, 100k
customers) took 0.44–0.51 s with ``SUM(amount)`` and with this expression alike, and
``bench/segments.py``'s quick mode kept its tiers equal to the hand-written anchor's.
"""

from __future__ import annotations

from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal
from typing import Any

from django.db import connection, models
from django.db.models import Aggregate

SCALE = 2  # Event.amount's decimal_places
UNIT = 10**SCALE  # hundredths per currency unit
# Sums are 64-bit integers (SQLite fails on overflow rather than wrap), so a bound beyond
# them is clamped to them: no sum passes it, or every sum does, just as before clamping.
_INT64 = 2**63 - 1


def amount_sum_sql(column: str = "amount", *, vendor: str | None = None) -> str:
    """An aggregate SQL expression: the exact sum of ``column`` in integer hundredths
    (NULL over no non-null amount, like ``SUM``)."""
    if (vendor or connection.vendor) == "postgresql":
        return f"CAST(SUM({column}) * {UNIT} AS bigint)"
    return f"SUM(CAST(ROUND({column} * {UNIT}) AS INTEGER))"


class AmountSum(Aggregate):
    """``amount_sum_sql`` for the ORM: ``Sum`` of a decimal amount, in integer hundredths."""

    function = "SUM"
    name = "AmountSum"
    output_field = models.BigIntegerField()
    allow_distinct = False

    def as_sql(self, compiler: Any, connection: Any, **extra_context: Any) -> tuple[str, list[Any]]:
        if connection.vendor == "postgresql":
            sql, params = super().as_sql(compiler, connection, **extra_context)
            return f"CAST({sql} * {UNIT} AS bigint)", params
        template = f"%(function)s(CAST(ROUND(%(expressions)s * {UNIT}) AS INTEGER))"
        return super().as_sql(compiler, connection, template=template, **extra_context)


def _hundredths(value: Any) -> Decimal:
    # str() first: a float from JSON (30.3) means the decimal it prints as, not its binary value.
    return Decimal(str(value)) * UNIT


def _clamped(hundredths: Decimal) -> int:
    return int(max(-_INT64, min(_INT64, hundredths)))


def at_least(value: Any) -> int:
    """The smallest integer ``h`` in hundredths with ``h ≥ value``: ``v ≥ value ⇔ v ≥ at_least(value)``."""
    return _clamped(_hundredths(value).to_integral_value(rounding=ROUND_CEILING))


def at_most(value: Any) -> int:
    """The largest integer ``h`` in hundredths with ``h ≤ value``: ``v ≤ value ⇔ v ≤ at_most(value)``."""
    return _clamped(_hundredths(value).to_integral_value(rounding=ROUND_FLOOR))


def exactly(value: Any) -> int | None:
    """``value`` in hundredths when it is a whole number of them (and a possible sum),
    else None: no sum equals it."""
    hundredths = _hundredths(value)
    if hundredths != hundredths.to_integral_value() or abs(hundredths) > _INT64:
        return None
    return int(hundredths)
