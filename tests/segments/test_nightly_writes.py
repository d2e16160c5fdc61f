"""The benchmark's heavy night: undone from its own history and repeated from the same state,
its pairs reported apart from the light nights (bench/segments.py)."""

from __future__ import annotations

from typing import Any

import pytest
from django.db import connection

from bench import segments as bench
from segments.models import CustomerTag, Dimension
from tests.segments.conftest import AS_OF, DAY, World, dimension_state, layers_of, recompute

T1 = AS_OF + 10 * DAY


def _state() -> dict[str, Any]:
    """Everything a nightly run of the expiry dimension reads or writes, by customer."""
    return dimension_state("expiry", tag__family="tier")


@pytest.mark.postgres
def test_undo_night__after_a_night_with_movers__state_as_before_and_the_night_repeats_identically(
    world: World, growth_user: Any
) -> None:
    # Given three customers placed, two of whom move on the next night, and a manual tier tag
    a, b, c = world.customer("a"), world.customer("b"), world.customer("c")
    world.membership(a, expires_in=5)
    world.membership(b, expires_in=95)
    recompute("expiry")
    manual = CustomerTag.objects.create(
        customer=c, tag_id=CustomerTag.objects.get(customer=b).tag_id, source="manual", assigned_by=growth_user
    )
    before = _state()
    night = recompute("expiry", as_of=T1)
    after_night = _state()
    assert night.changed == 2 and after_night != before

    # When the night is undone
    pk = Dimension.objects.get(key="expiry").pk
    undone = bench._undo_night(connection, pk, T1, vacuum=False)

    # Then everything it wrote is back as it was (the manual tag untouched), and running the
    # same night again moves the same customers to the same layers
    assert undone == 2
    assert _state() == before
    assert CustomerTag.objects.filter(pk=manual.pk, source="manual").exists()
    again = recompute("expiry", as_of=T1)
    assert again.changed == 2
    assert layers_of("expiry") == {"a": "expired_recently", "b": "expiring_soon", "c": "none"}
    assert _state() == after_night


def _run(label: str, anchor_s: float | None, engine_s: float, changed: int, heavy: bool = False) -> dict[str, Any]:
    phases = {"compute": 1000, "diff": 100, "write": 10, "history": 10, "tags": 10, "check": 10}
    run = {"run": label, "seconds": engine_s, "changed": changed, "phases_ms": phases, "wal_mb": 1.0}
    run["layer_sizes"] = {"x": 10}
    if anchor_s is not None:
        run["anchor_seconds"] = anchor_s
    if heavy:
        run["heavy"] = True
    return run


@pytest.mark.pure
def test_summarize__heavy_night_repeated__its_pairs_apart_and_the_floor_judged_on_both_medians() -> None:
    # Given cold pairs, three light nights at 1.2x and a heavy night run three times at 2.1x-2.3x
    runs = [_run("cold", 1.0, 2.5, 100) for _ in range(3)] + [_run("rerun", None, 1.1, 0)]
    runs += [_run(f"nightly+{d}d", 1.0, 1.2, 7) for d in (1, 2, 4)]
    runs += [_run("nightly+3d", 1.0, s, 110, heavy=True) for s in (2.1, 2.3, 2.2)]
    engine = {"rfm": {"runs": runs}}

    # When summarized
    floors = bench.summarize({"seconds": 1.0, "tier_counts": {"x": 10}}, engine)

    # Then the light nights keep the existing keys, the heavy night has its own median, and
    # the nightly floor fails on the heavy one although the light median meets it
    nightly = floors["nightly"]
    assert nightly["median_ratio"] == 1.2 and nightly["changed"] == [7, 7, 7]
    assert nightly["heavy_median_ratio"] == 2.2
    assert [p["ratio"] for p in nightly["heavy_pairs"]] == [2.1, 2.3, 2.2]
    assert nightly["heavy_night"] == "nightly+3d" and nightly["heavy_changed"] == 110
    assert floors["nightly_floor_met"] is False
