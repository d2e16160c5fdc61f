"""Decision benchmark (issue 14): how often the report's verdicts are wrong, by simulation.

Simulated counts go through the report's own code (``experiments.reports.assemble``:
``_row`` builds the comparisons with the plan's mode, ``_adjust_families`` adjusts the
declared families together, ``_finish_rows`` turns them into verdicts), so what is
measured is what a reader of the report would have seen. No database: the counts are
drawn with numpy (seeded) and handed to those functions as the aggregation would.

Measured (all A/A unless said otherwise; 2,000 runs by default):

1. ``daily_looks``: one treatment vs control, 500 new customers per arm per day, 5%
   conversion, read every day for 28 days, stopped at the first "significant" verdict of
   the overall row: the fixed-horizon test read naively (pooled z at every look) against
   the always-valid default (confidence sequence tuned at the planned 28,000 customers).
   Floor: always-valid <= 5% within simulation error (+ 2.326 SE, one-sided 99%).
2. ``confirmatory_family``: a report with 2 treatments x (overall + 4 layers of the
   confirmatory dimension) = 10 confirmatory comparisons, plus an exploratory dimension
   and a secondary metric; the chance of *any* confirmatory "significant" verdict, read
   once at the horizon, in both modes. Floor: <= 5% within simulation error. The
   exploratory rows' chance is reported too (it is not a decision).
3. ``planted_recovery``: lifts planted in 2 of 4 layers (for one treatment); the share of
   runs in which each planted layer is a confirmatory "significant win", and the false
   win rate in the other layers, read once at the horizon.
4. ``power``: the report's stated requirement (``PowerResult.required_per_arm``: alpha/m
   of the confirmatory family, fixed horizon; and for the sequential mode) against the
   achieved share of confirmatory wins for a true lift equal to the MDE in one layer
   when every arm has exactly that many customers. Floor: |achieved - stated| <= 3 points.

    python bench/decisions.py             # 2,000 runs per measurement (a few minutes)
    python bench/decisions.py --runs 300  # quick check
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.common import emit, log  # noqa: E402

ALPHA = 0.05


def _setup_django() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings_test")
    os.environ.setdefault("GROWTH_VAR_DIR", str(ROOT / "var" / "bench-decisions"))
    os.environ.pop("DATABASE_URL", None)  # no queries are made; the embedded default suffices
    os.environ.setdefault("CACHE_URL", "locmemcache://")
    os.environ.setdefault("CELERY_BROKER_URL", "memory://")
    Path(os.environ["GROWTH_VAR_DIR"]).mkdir(parents=True, exist_ok=True)
    import django

    django.setup()


def _band(rate: float, runs: int) -> float:
    """One-sided 99% simulation margin for a rate near ``rate`` over ``runs``."""
    return 2.326 * math.sqrt(max(rate * (1 - rate), 1e-9) / runs)


class Sim:
    """The report's code over simulated counts."""

    def __init__(self, *, variants: tuple[str, ...], mode: str, planned_total: float, mde: float = 0.1) -> None:
        from experiments.reports import assemble
        from experiments.reports.results import MetricInfo, VariantInfo

        self.a = assemble
        weight = 1.0 / len(variants)
        self.variants = tuple(VariantInfo(key, key, i == 0, weight) for i, key in enumerate(variants))
        self.mode, self.planned_total, self.mde = mode, planned_total, mde
        self.metric = MetricInfo("order", "Order", "primary", 168, "higher_is_better")

    def ctx(self, overall_customers: int):  # type: ignore[no-untyped-def]
        return self.a._Context(
            variants=self.variants,
            adjustment="holm",
            mde=self.mde,
            days_elapsed=28.0,
            running=False,
            alpha=ALPHA,
            mode=self.mode,
            planned_total=self.planned_total,
            overall_customers=overall_customers,
            horizon_reached=True,
            horizon_message="",
        )

    def row(self, ctx, cells: dict[str, tuple[int, int]], family_size: int, layer: str | None = None):  # type: ignore[no-untyped-def]
        return self.a._row(
            ctx,
            dimension=None if layer is None else "tier",
            layer=layer,
            label=layer or "All customers",
            cells={k: self.a._Cell(n, x) for k, (n, x) in cells.items()},
            traffic={k: n for k, (n, _) in cells.items()},
            family_size=family_size,
            family_words=f"the confirmatory family of {family_size}",
        )

    def finish(self, ctx, rows, kind: str = "confirmatory"):  # type: ignore[no-untyped-def]
        from experiments.reports.results import Family

        [adjusted] = self.a._adjust_families([(rows, "holm", None)])
        family = Family("bench", "holm", len(adjusted), kind, ALPHA)
        return self.a._finish_rows(
            ctx,
            rows,
            metric=self.metric,
            experiment_srm=rows[0][0].srm,
            adjusted_p_values=adjusted,
            family=family,
        )


SIGNIFICANT = ("significant win", "significant loss")


def daily_looks(runs: int, rng: np.random.Generator) -> dict[str, Any]:
    days, daily, rate = 28, 500, 0.05
    result: dict[str, Any] = {"days": days, "new_customers_per_arm_per_day": daily, "rate": rate, "runs": runs}
    control = rng.binomial(daily, rate, size=(runs, days)).cumsum(axis=1)
    treatment = rng.binomial(daily, rate, size=(runs, days)).cumsum(axis=1)
    for mode in ("fixed", "sequential"):
        sim = Sim(variants=("control", "treatment"), mode=mode, planned_total=2 * daily * days)
        ever = 0
        final = 0
        for i in range(runs):
            stopped = False
            for day in range(days):
                n = daily * (day + 1)
                ctx = sim.ctx(2 * n)
                raw = [
                    sim.row(ctx, {"control": (n, int(control[i, day])), "treatment": (n, int(treatment[i, day]))}, 1)
                ]
                (row,) = sim.finish(ctx, raw)
                significant = row.lifts[0].verdict.label in SIGNIFICANT
                if significant and not stopped:
                    ever += 1
                    stopped = True
                if day == days - 1:
                    final += significant
        name = "fixed_horizon_read_daily" if mode == "fixed" else "always_valid_read_daily"
        result[name] = {"false_positive_rate_any_look": ever / runs, "false_positive_rate_day_28_only": final / runs}
    rate_av = result["always_valid_read_daily"]["false_positive_rate_any_look"]
    result["floor"] = {
        "always_valid_at_most": 0.05,
        "simulation_margin": _band(0.05, runs),
        "passed": rate_av <= 0.05 + _band(0.05, runs),
    }
    return result


LAYERS = ("new", "active", "vip", "lapsed")


def _report_counts(
    rng: np.random.Generator, per_arm_layer: int, base: float, lifts: dict[tuple[str, str], float]
) -> dict[str, dict[str, tuple[int, int]]]:
    cells: dict[str, dict[str, tuple[int, int]]] = {}
    for layer in LAYERS:
        cells[layer] = {}
        for variant in ("control", "b", "c"):
            p = base * (1 + lifts.get((layer, variant), 0.0))
            cells[layer][variant] = (per_arm_layer, int(rng.binomial(per_arm_layer, p)))
    return cells


def _overall(cells: dict[str, dict[str, tuple[int, int]]]) -> dict[str, tuple[int, int]]:
    return {
        v: (sum(cells[layer][v][0] for layer in LAYERS), sum(cells[layer][v][1] for layer in LAYERS))
        for v in ("control", "b", "c")
    }


def _confirmatory_report(sim: Sim, cells: dict[str, dict[str, tuple[int, int]]]):  # type: ignore[no-untyped-def]
    size = 2 * (1 + len(LAYERS))
    overall = _overall(cells)
    ctx = sim.ctx(sum(n for n, _ in overall.values()))
    raw = [sim.row(ctx, overall, size)] + [sim.row(ctx, cells[layer], size, layer) for layer in LAYERS]
    return sim.finish(ctx, raw)


def confirmatory_family(runs: int, rng: np.random.Generator) -> dict[str, Any]:
    per_arm_layer, base = 2_000, 0.08
    out: dict[str, Any] = {
        "runs": runs,
        "family": "primary metric x 2 treatments x (overall + 4 layers) = 10 comparisons, Holm",
        "customers_per_arm_per_layer": per_arm_layer,
        "rate": base,
    }
    for mode in ("fixed", "sequential"):
        sim = Sim(variants=("control", "b", "c"), mode=mode, planned_total=3 * per_arm_layer * len(LAYERS))
        any_confirmatory = 0
        any_exploratory = 0
        for _ in range(runs):
            cells = _report_counts(rng, per_arm_layer, base, {})
            rows = _confirmatory_report(sim, cells)
            any_confirmatory += any(lift.verdict.label in SIGNIFICANT for row in rows for lift in row.lifts)
            # An exploratory dimension (its own family of 4 layers x 2) and a secondary metric
            # (overall, 2 comparisons): reported, never decisions.
            other = _report_counts(rng, per_arm_layer, base, {})
            ctx = sim.ctx(0)
            explore = sim.finish(
                ctx, [sim.row(ctx, other[layer], 8, layer) for layer in LAYERS], kind="exploratory"
            ) + sim.finish(ctx, [sim.row(ctx, _overall(other), 2)], kind="exploratory")
            any_exploratory += any(lift.verdict.label in SIGNIFICANT for row in explore for lift in row.lifts)
        out[mode] = {
            "any_confirmatory_significant_per_report": any_confirmatory / runs,
            "any_exploratory_significant_per_report": any_exploratory / runs,
        }
    worst = max(out[m]["any_confirmatory_significant_per_report"] for m in ("fixed", "sequential"))
    out["floor"] = {
        "at_most": 0.05,
        "simulation_margin": _band(0.05, runs),
        "passed": worst <= 0.05 + _band(0.05, runs),
    }
    return out


def planted_recovery(runs: int, rng: np.random.Generator) -> dict[str, Any]:
    per_arm_layer, base = 4_000, 0.08
    planted = {("vip", "b"): 0.30, ("lapsed", "b"): 0.25}
    out: dict[str, Any] = {
        "runs": runs,
        "rate": base,
        "planted_relative_lifts": {f"{k[0]} x {k[1]}": v for k, v in planted.items()},
    }
    for mode in ("fixed", "sequential"):
        sim = Sim(variants=("control", "b", "c"), mode=mode, planned_total=3 * per_arm_layer * len(LAYERS))
        wins: dict[str, int] = {layer: 0 for layer in LAYERS}
        false_wins = 0
        null_cells = 0
        for _ in range(runs):
            rows = _confirmatory_report(sim, _report_counts(rng, per_arm_layer, base, planted))
            for row in rows[1:]:
                for lift in row.lifts:
                    win = lift.verdict.label == "significant win"
                    if (row.layer, lift.variant) in planted:
                        wins[row.layer] += win
                    else:
                        null_cells += 1
                        false_wins += lift.verdict.label in SIGNIFICANT
        out[mode] = {
            "recovered_share_by_planted_layer": {f"{k[0]} x {k[1]}": wins[k[0]] / runs for k in planted},
            "significant_share_of_null_layer_cells": false_wins / null_cells,
        }
    return out


def aa_flags(runs: int, rng: np.random.Generator) -> dict[str, Any]:
    """A/A reports: how often the guardrail harm banner and the heterogeneity headline
    ("the lift differs between layers") fire, through assemble's own functions (issue 14
    measured 10-17% and 57-62% before). Two guardrails x 2 treatments (one family, one-sided,
    margin 0); three dimensions of 4 layers (Holm across them)."""
    from experiments.reports.results import Family, MetricInfo

    per_arm_layer, base = 2_000, 0.02
    out: dict[str, Any] = {"runs": runs, "customers_per_arm_per_layer": per_arm_layer, "guardrail_rate": base}
    for mode in ("fixed", "sequential"):
        sim = Sim(variants=("control", "b", "c"), mode=mode, planned_total=3 * per_arm_layer * len(LAYERS))
        guard_info = MetricInfo("unsubscribe", "Unsubscribe", "guardrail", 168, "higher_is_worse")
        harm_reports = 0
        differs_reports = 0
        for _ in range(runs):
            ctx = sim.ctx(3 * per_arm_layer * len(LAYERS))
            rows = [sim.row(ctx, _overall(_report_counts(rng, per_arm_layer, base, {})), 4) for _ in range(2)]
            harm = [sim.a._harm_tests(ctx, [row], 0.0) for row in rows]
            p_values = [h.p_value for tests in harm for t in tests for h in t]
            adjusted = sim.a.stats.adjust(p_values, method="holm")
            family = Family("guardrails", "holm", len(p_values), "guardrail", ALPHA)
            flagged = False
            for i, (row, tests) in enumerate(zip(rows, harm, strict=True)):
                (done,) = sim.a._finish_rows(
                    ctx,
                    [row],
                    metric=guard_info,
                    experiment_srm=row[0].srm,
                    adjusted_p_values=adjusted[2 * i : 2 * i + 2],
                    family=family,
                    harm=tests,
                )
                flagged |= any(lift.verdict.harm for lift in done.lifts)
            harm_reports += flagged
            views = []
            for _dimension in range(3):
                cells = _report_counts(rng, per_arm_layer // 4, 0.08, {})
                views.append(
                    sim.a._heterogeneity(
                        ctx,
                        {layer: {k: sim.a._Cell(n, x) for k, (n, x) in cells[layer].items()} for layer in LAYERS},
                        no_layer_key="(none)",
                    )
                )
            het_adjusted = sim.a.stats.adjust([v.p_value for v in views], method="holm")
            differs_reports += any(
                sim.a._heterogeneity_adjusted(v, p, len(views)).differs
                for v, p in zip(views, het_adjusted, strict=True)
            )
        out[mode] = {
            "guardrail_harm_banner_per_report": harm_reports / runs,
            "heterogeneity_headline_any_dimension_per_report": differs_reports / runs,
        }
    return out


def power(runs: int, rng: np.random.Generator) -> dict[str, Any]:
    """Stated vs achieved: the requirement the report states for a confirmatory layer row,
    then that many customers per arm in every arm and layer, the MDE planted in one layer
    for one treatment; achieved = share of runs where that cell is a significant win."""
    base, mde = 0.10, 0.10
    out: dict[str, Any] = {"runs": runs, "baseline_rate": base, "relative_mde": mde, "stated_power": 0.8}
    for mode in ("fixed", "sequential"):
        sim = Sim(variants=("control", "b", "c"), mode=mode, planned_total=1.0, mde=mde)
        size = 2 * (1 + len(LAYERS))
        # What the report states for the vip row at the planned horizon (true rates).
        probe = sim.ctx(1)
        stated_row = sim.row(probe, {v: (100_000, 10_000) for v in ("control", "b", "c")}, size, "vip")[0]
        need = max(stated_row.power.required_per_arm.values())
        planned_total = 3 * need * len(LAYERS)
        sim.planned_total = planned_total
        hits = 0
        for _ in range(runs):
            cells = _report_counts(rng, need, base, {("vip", "b"): mde})
            rows = _confirmatory_report(sim, cells)
            vip = next(row for row in rows if row.layer == "vip")
            hits += next(lift for lift in vip.lifts if lift.variant == "b").verdict.label == "significant win"
        achieved = hits / runs
        out[mode] = {
            "required_per_arm": need,
            "alpha_rule": stated_row.power.alpha_rule,
            "achieved_power": achieved,
            "difference_points": round(100 * (achieved - 0.8), 2),
            "simulation_se_points": round(100 * math.sqrt(0.16 / runs), 2),
        }
    out["floor"] = {
        "within_points": 3,
        "passed": all(abs(out[m]["achieved_power"] - 0.8) <= 0.03 for m in ("fixed", "sequential")),
    }
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=2_000)
    parser.add_argument("--seed", type=int, default=20261205)
    parser.add_argument("--no-save", action="store_true")
    parser.add_argument("--only", nargs="*", default=None, help="run only these measurements")
    args = parser.parse_args()
    _setup_django()
    rng = np.random.default_rng(args.seed)
    output: dict[str, Any] = {
        "benchmark": "decisions",
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count(), "loadavg_at_start": os.getloadavg()},
        "runs": args.runs,
        "seed": args.seed,
    }
    for name, fn in (
        ("daily_looks", daily_looks),
        ("confirmatory_family", confirmatory_family),
        ("planted_recovery", planted_recovery),
        ("aa_flags", aa_flags),
        ("power", power),
    ):
        if args.only and name not in args.only:
            continue
        log(f"{name} ...")
        started = time.perf_counter()
        output[name] = fn(args.runs, rng)
        output[name]["seconds"] = round(time.perf_counter() - started, 1)
    output["floors_passed"] = all(
        output[n]["floor"]["passed"] for n in ("daily_looks", "confirmatory_family", "power") if n in output
    )
    emit("decisions", output, save=not args.no_save)


if __name__ == "__main__":
    main()
