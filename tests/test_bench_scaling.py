"""bench/scaling.py's growth exponent, against hand-worked cases and numpy's polyfit."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest

from bench.scaling import combine, floor, growth_exponent, segments_times, summarize

pytestmark = pytest.mark.pure


def test_growth_exponent__linear_cost__k_is_1() -> None:
    # 2 s, 4 s, 8 s at 250k, 500k, 1M: doubling the size doubles the time.
    assert growth_exponent([250_000, 500_000, 1_000_000], [2.0, 4.0, 8.0]) == pytest.approx(1.0)


def test_growth_exponent__quadratic_cost__k_is_2() -> None:
    assert growth_exponent([1, 2, 4], [3.0, 12.0, 48.0]) == pytest.approx(2.0)


def test_growth_exponent__noisy_times__matches_numpy_polyfit_on_logs() -> None:
    sizes, seconds = [20_000, 40_000, 80_000], [1.7, 3.1, 7.9]
    expected = np.polyfit(np.log(sizes), np.log(seconds), 1)[0]
    assert growth_exponent(sizes, seconds) == pytest.approx(expected)
    assert math.isfinite(expected)


@pytest.mark.parametrize(
    ("sizes", "seconds"),
    [([1000, 1000, 1000], [1.0, 2.0, 3.0]), ([1000], [1.0]), ([1000, 2000], [0.0, 1.0])],
)
def test_growth_exponent__undefined__none_not_nan(sizes: list[int], seconds: list[float]) -> None:
    assert growth_exponent(sizes, seconds) is None


def test_scaling_floor__reference_grows_faster__judged_on_hot_paths_only() -> None:
    # Given the hand-written RFM statement growing as N^1.5 and every hot path linearly
    sizes = [1000, 2000, 4000]
    by_size = {n: {"import": n / 1000, "anchor_rfm_statement": (n / 1000) ** 1.5} for n in sizes}
    # When the paths are summarized and judged
    paths = summarize(by_size)
    # Then the reference keeps its k but does not fail the floor
    assert paths["anchor_rfm_statement"]["k"] == pytest.approx(1.5)
    assert paths["anchor_rfm_statement"]["reference"] is True
    assert floor(paths) == {"k_at_most": 1.15, "met": True, "not_met": []}


def test_scaling_floor__hot_path_superlinear_or_undefined__not_met_and_named() -> None:
    sizes = [1000, 2000, 4000]
    by_size = {n: {"import": n / 1000, "funnel": (n / 1000) ** 1.3, "lift_report": 0.0} for n in sizes}
    paths = summarize(by_size)
    assert paths["lift_report"]["k"] is None
    assert floor(paths) == {"k_at_most": 1.15, "met": False, "not_met": ["funnel", "lift_report"]}


def _run(groups: list[str], times: dict[str, list[float]], load: float) -> dict[str, Any]:
    sizes = [1000, 2000, 4000]
    by_size = {n: {path: t[i] for path, t in times.items()} for i, n in enumerate(sizes)}
    machine = {"load_average": [load, load, load]}
    return {
        "sizes_customers": sizes,
        "paths": summarize(by_size),
        "groups_run": groups,
        "wall_seconds_per_group_and_size": {g: {"1000": 1.0} for g in groups},
        "details": {g: {"1000": {"x": g}} for g in groups},
        "machine_at_start": machine,
        "machine_at_end": machine,
    }


def test_scaling_combine__two_runs_of_different_groups__one_result_judged_on_every_path() -> None:
    # Given the import measured in one locked run and a superlinear recompute in another
    first = _run(["import"], {"import": [1.0, 2.0, 4.0]}, load=1.0)
    second = _run(["segments"], {"segment_first": [1.0, 4.0, 16.0]}, load=2.0)
    # When they are combined
    result = combine([first, second])
    # Then both paths are there with their k, the floor names the superlinear one, and each
    # run's machine state is kept
    assert result["paths"]["import"]["k"] == pytest.approx(1.0)
    assert result["paths"]["segment_first"]["k"] == pytest.approx(2.0)
    assert result["floor"] == {"k_at_most": 1.15, "met": False, "not_met": ["segment_first"]}
    assert result["groups_run"] == ["import", "segments"]
    assert set(result["details"]) == {"import", "segments"}
    assert [r["machine_at_start"]["load_average"][0] for r in result["runs"]] == [1.0, 2.0]


def test_scaling_combine__different_sizes__refused() -> None:
    first = _run(["import"], {"import": [1.0, 2.0, 4.0]}, load=1.0)
    second = {**_run(["segments"], {"segment_first": [1.0, 2.0, 4.0]}, load=1.0), "sizes_customers": [1, 2, 4]}
    with pytest.raises(SystemExit):
        combine([first, second])


def test_segments_times__heavy_night_at_one_size__light_nights_median_and_cold_median() -> None:
    def run(label: str, seconds: float, **extra: object) -> dict[str, object]:
        return {"run": label, "seconds": seconds, **extra}

    rfm = [run("cold", 10.0), run("cold", 12.0), run("cold", 11.0), run("rerun", 5.0)]
    rfm += [run("nightly+1d", 8.0, heavy=True), run("nightly+1d", 7.8, heavy=True), run("nightly+1d", 7.9, heavy=True)]
    rfm += [run("nightly+2d", 4.0), run("nightly+3d", 4.4), run("nightly+4d", 4.2)]
    other = [run("cold", 3.0), run("rerun", 1.0), run("nightly+1d", 1.5), run("nightly+2d", 1.7)]
    result = {
        "postgres": {
            "anchor": {"seconds": 3.5},
            "engine": {
                "rfm": {"runs": rfm},
                "lifecycle": {"runs": other},
                "expiry": {"runs": other},
                "segment": {"first_seconds": 0.9},
            },
        }
    }

    times = segments_times(result)

    assert times["recompute_first:rfm"] == 11.0 and times["recompute_nightly:rfm"] == 4.2
    assert times["recompute_nightly:lifecycle"] == 1.5 and times["recompute_first:expiry"] == 3.0
    assert times["segment_first"] == 0.9 and times["anchor_rfm_statement"] == 3.5
