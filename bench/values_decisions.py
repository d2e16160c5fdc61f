"""Benchmark (simulation, no database): value metrics' A/A false-positive rates and CUPED's
variance reduction on demo-like data (issue 15; prints JSON).

Demo-like customers: a pre-period (14 days) with a 60% chance of orders; in the window a
buy probability that rises with the pre-period's activity, 1-3 orders of log-normal value
(median 45, sigma 0.6) scaled by the customer's own spending level, so revenue is
zero-inflated, skewed and correlated with the pre-period, as in the demo's events. Each
customer also has a tier (4 layers by spending level: 40/30/20/10%, the top tier the
biggest spenders) and a day of first exposure (uniform over 28 days).

Vectorised: numpy draws a batch of experiments at once and reduces every (experiment, arm,
layer, day) group to the sufficient statistics the database returns (n, sums, cross
products, exact integers: money in cents), with one sort and ``np.add.reduceat``; no
per-customer Python loop. Each experiment's moments then go through the SAME pure functions
the report calls (``estimate``, ``cuped``, ``compare_values``, ``adjust``), one call per
comparison, so what is measured is the report's own arithmetic
(``tests/experiments/test_report_values_simulation.py`` checks one configuration through the
real report path, database included, against these functions).

Three readings, both arms drawn from the same distribution (``--n`` customers per arm):

* ``uncapped`` / ``capped_p99``: one test per metric read once at the end: revenue per
  customer (Welch t), orders per customer (Welch t), average order value (ratio revenue /
  orders, delta method, t with the denominator's units as the report), each without and
  with CUPED (theta pooled across arms), and the sequential (always-valid) revenue test
  read once. Capped: revenue (and its pre-period twin) at the nearest-rank 99th
  percentile of both arms' customers, as ``value_moments`` does in the database.
* ``conversion_cuped``: a CONVERSION metric with CUPED at a 10/90 split and a 2% rate
  (``conversion_aa``): the pooled z, CUPED + Welch, and CUPED as OLS with one pooled
  residual variance (what the report uses for conversions).
* ``report_reading``: the chance that a REPORT shows any confirmatory "significant": the
  decision family = the metric x (all customers + the 4 layers of the confirmatory
  dimension), Holm-adjusted together (the plan's default), per metric with CUPED:
  fixed horizon read once (capped at p99, as the fixed-horizon rows above), and the
  always-valid mode read every day for 28 days (uncapped: the database recomputes the cap
  at every look; the simulation does not), stopped at the first "significant".

Each rate comes with its Clopper-Pearson (exact binomial) 95% interval
(``scipy.stats.binomtest(k, n).proportion_ci(method="exact")``). ``variance_reduction`` =
CUPED's mean reduction; ``se_ratio`` = CUPED's standard error / the unadjusted one.

Run: ``.venv/bin/python bench/values_decisions.py --sims 20000 --n 2000``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
from scipy import stats as scipy_stats

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from experiments.stats import (  # noqa: E402
    DECISION_METHOD,
    DEFAULT_EXPECTED_N,
    SIGNIFICANT_LOSS,
    SIGNIFICANT_WIN,
    Arm,
    MeanOf,
    Moments,
    RatioOf,
    ValueComparison,
    adjust,
    cap_rank,
    compare,
    compare_values,
    cuped,
    cuped_ols,
    estimate,
    verdict,
)

# The report's minimum before any verdict (experiments.reports.assemble.MIN_CUSTOMERS_PER_ARM;
# not imported: that module needs Django).
MIN_CUSTOMERS_PER_ARM = 100

DAYS = 28
LAYER_SHARES = (0.4, 0.3, 0.2, 0.1)
LAYERS = len(LAYER_SHARES)
K = 4  # variables: revenue (cents), orders, pre-period revenue (cents), pre-period orders
PAIRS = [(i, j) for i in range(K) for j in range(i, K)]

TESTS = {
    "revenue_per_customer": (MeanOf(0), MeanOf(2), "t"),
    "orders_per_customer": (MeanOf(1), MeanOf(3), "t"),
    "average_order_value": (RatioOf(0, 1), RatioOf(2, 3), "t"),
}
FAMILY_METRICS = ("revenue_per_customer", "average_order_value")


def _order_sums(rng: np.random.Generator, counts: np.ndarray, cap: int) -> np.ndarray:
    """Sum of ``counts[...]`` log-normal order values (median 45, sigma 0.6), vectorised."""
    values = rng.lognormal(np.log(45.0), 0.6, (*counts.shape, cap))
    return (values * (np.arange(cap) < np.minimum(counts, cap)[..., None])).sum(axis=-1)


def customers(rng: np.random.Generator, shape: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Customers of ``shape`` (e.g. experiments x arms x n): variables (int64, ``shape`` x 4:
    revenue in cents, orders, pre-period revenue in cents, pre-period orders), layer, day."""
    level = rng.lognormal(0.0, 0.8, shape)  # each customer's spending level
    pre_orders = np.minimum(rng.poisson(0.9 * level) * (rng.random(shape) < 0.6), 12)
    pre_revenue = _order_sums(rng, pre_orders, 12) * level
    buy = rng.random(shape) < np.clip(0.05 + 0.1 * pre_orders, 0, 0.9)
    orders = np.where(buy, rng.integers(1, 4, shape), 0)
    revenue = _order_sums(rng, orders, 3) * level
    x = np.stack([np.round(revenue * 100), orders, np.round(pre_revenue * 100), pre_orders], axis=-1).astype(np.int64)
    # Tiers by spending level (quantiles of the log-normal), the top tier the biggest spenders.
    edges = np.exp(0.8 * scipy_stats.norm.ppf(np.cumsum(LAYER_SHARES)[:-1]))
    layer = np.searchsorted(edges, level)
    day = rng.integers(0, DAYS, shape)
    return x, layer, day


def group_moments(x: np.ndarray, group: np.ndarray, groups: int) -> np.ndarray:
    """Per group: [n, sum v_i (4), sum v_i v_j (10, i <= j)] as int64, from per-customer rows
    ``x`` (rows x 4) and their group ids (0 <= id < groups): one sort and ``add.reduceat``
    (exact integers, as the database's SUMs)."""
    order = np.argsort(group, kind="stable")
    g = group[order]
    xs = x[order]
    features = np.empty((len(xs), 1 + K + len(PAIRS)), dtype=np.int64)
    features[:, 0] = 1
    features[:, 1 : 1 + K] = xs
    for position, (i, j) in enumerate(PAIRS):
        features[:, 1 + K + position] = xs[:, i] * xs[:, j]
    starts = np.searchsorted(g, np.arange(groups))
    out = np.zeros((groups, features.shape[1]), dtype=np.int64)
    present = np.bincount(g, minlength=groups) > 0
    summed = np.add.reduceat(features, starts[present], axis=0)
    out[present] = summed
    return out


def moments_of(row: list[int]) -> Moments:
    """One group's int vector -> ``Moments`` (what ``value_moments`` builds from the SUMs)."""
    products = [[0] * K for _ in range(K)]
    for position, (i, j) in enumerate(PAIRS):
        products[i][j] = products[j][i] = row[1 + K + position]
    return Moments(row[0], tuple(row[1 : 1 + K]), tuple(tuple(r) for r in products))


def capped(x: np.ndarray, percentile: float) -> np.ndarray:
    """Revenue and its pre-period twin capped at the nearest-rank ``percentile`` of revenue
    over both arms of each experiment (x: experiments x arms x n x 4)."""
    sims, arms, n, _ = x.shape
    pooled = x[..., 0].reshape(sims, arms * n)
    rank = cap_rank(arms * n, percentile)
    assert rank is not None
    cap = np.partition(pooled, rank - 1, axis=1)[:, rank - 1]
    out = x.copy()
    out[..., 0] = np.minimum(out[..., 0], cap[:, None, None])
    out[..., 2] = np.minimum(out[..., 2], cap[:, None, None])
    return out


def batches(sims: int, n: int, seed: int, size: int = 100) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(seed)
    done = 0
    while done < sims:
        count = min(size, sims - done)
        yield customers(rng, (count, 2, n))
        done += count


def cells_of(x: np.ndarray, layer: np.ndarray, day: np.ndarray) -> np.ndarray:
    """Moments per (experiment, arm, layer, day) -> int64 array (sims, 2, LAYERS, DAYS, 15)."""
    sims, arms = x.shape[:2]
    cell = ((np.arange(sims)[:, None, None] * arms + np.arange(arms)[None, :, None]) * LAYERS + layer) * DAYS + day
    flat = group_moments(x.reshape(-1, K), cell.reshape(-1), sims * arms * LAYERS * DAYS)
    return flat.reshape(sims, arms, LAYERS, DAYS, -1)


def _arms(cells: np.ndarray) -> list[Moments]:
    return [moments_of(row) for row in cells.tolist()]


def _p(result: Any) -> float | None:
    return result.p_value


class Tally:
    """Hits and runs per label, with Clopper-Pearson 95% intervals."""

    def __init__(self) -> None:
        self.hits: dict[str, int] = {}
        self.runs: dict[str, int] = {}

    def add(self, label: str, p: float | None, alpha: float = 0.05) -> None:
        if p is None:
            return
        self.runs[label] = self.runs.get(label, 0) + 1
        self.hits[label] = self.hits.get(label, 0) + (p < alpha)

    def summary(self) -> dict[str, dict[str, Any]]:
        out = {}
        for label, runs in self.runs.items():
            hits = self.hits[label]
            ci = scipy_stats.binomtest(hits, runs).proportion_ci(confidence_level=0.95, method="exact")
            out[label] = {
                "rate": round(hits / runs, 4),
                "ci95": [round(ci.low, 4), round(ci.high, 4)],
                "hits": hits,
                "runs": runs,
            }
        return out


def read_once(arms: list[Moments], tally: Tally, reductions: dict, se_ratios: dict, expected_n: float) -> None:
    """The fixed readings of one experiment: each metric plain and with CUPED, sequential revenue."""
    for name, (post, pre, distribution) in TESTS.items():
        plain = compare_values(estimate(arms[0], post), estimate(arms[1], post), distribution=distribution)
        adjusted = cuped(arms, post, pre)
        with_cuped = compare_values(*adjusted.estimates, distribution=distribution)
        tally.add(name, _p(plain))
        tally.add(f"{name}_cuped", _p(with_cuped))
        if adjusted.variance_reduction is not None:
            reductions[name].append(adjusted.variance_reduction)
        if plain.se and with_cuped.se:
            se_ratios[name].append(with_cuped.se / plain.se)
    sequential = compare_values(
        estimate(arms[0], MeanOf(0)), estimate(arms[1], MeanOf(0)), sequential=True, expected_n=expected_n
    )
    tally.add("revenue_sequential", _p(sequential))


def row_comparisons(
    rows: list[list[Moments]], name: str, sequential: bool, expected: list[float]
) -> list[ValueComparison]:
    """Each row's comparison (control, treatment), CUPED on, as ``assemble._value_cells`` +
    ``assemble._row`` compute it: theta pooled over the row's arms, then the kind's test."""
    post, pre, distribution = TESTS[name]
    out = []
    for arms, expected_n in zip(rows, expected, strict=True):
        adjusted = cuped(arms, post, pre)
        out.append(
            compare_values(*adjusted.estimates, distribution=distribution, sequential=sequential, expected_n=expected_n)
        )
    return out


def family_significant(rows: list[list[Moments]], name: str, sequential: bool, expected: list[float]) -> bool:
    """Does one report show any confirmatory "significant"? The decision family (overall +
    layers, CUPED on) Holm-adjusted, each row's verdict by ``stats.verdict`` with the
    report's minimum customers per arm, as ``assemble._finish_rows`` does."""
    comparisons = row_comparisons(rows, name, sequential, expected)
    adjusted_p = adjust([c.p_value for c in comparisons], method="holm")
    return any(
        verdict(c, p, min_n_per_arm=MIN_CUSTOMERS_PER_ARM).label in (SIGNIFICANT_WIN, SIGNIFICANT_LOSS)
        for c, p in zip(comparisons, adjusted_p, strict=True)
    )


def report_rows(cells: np.ndarray) -> list[list[Moments]]:
    """One experiment's cells (2 x LAYERS x DAYS x 15) -> the report's rows: all customers,
    then each layer; each row = [control, treatment] moments."""
    return [_arms(cells.sum(axis=(1, 2)))] + [_arms(cells[:, g].sum(axis=1)) for g in range(LAYERS)]


def simulate(sims: int, n: int, seed: int = 20240501, family_sims: int | None = None) -> dict[str, Any]:
    """A/A experiments (module docstring); ``family_sims``: how many of them are also read as
    reports (decision family, fixed and daily), default all."""
    family_sims = sims if family_sims is None else family_sims
    tallies = {"uncapped": Tally(), "capped_p99": Tally()}
    reductions = {c: {name: [] for name in TESTS} for c in tallies}
    se_ratios = {c: {name: [] for name in TESTS} for c in tallies}
    report = Tally()
    looks_to_first: dict[str, list[int]] = {name: [] for name in FAMILY_METRICS}
    done = 0
    for x, layer, day in batches(sims, n, seed):
        configs = {"uncapped": cells_of(x, layer, day), "capped_p99": cells_of(capped(x, 0.99), layer, day)}
        for config, cells in configs.items():
            overall = cells.sum(axis=(2, 3))  # sims x 2 x 15
            for s in range(len(overall)):
                read_once(_arms(overall[s]), tallies[config], reductions[config], se_ratios[config], 2.0 * n)
        for s in range(len(x)):
            if done + s >= family_sims:
                break
            # Fixed horizon, read once at the end (capped): overall + 4 layers, Holm.
            rows = report_rows(configs["capped_p99"][s])
            for name in FAMILY_METRICS:
                hit = family_significant(rows, name, False, [2.0 * n] * len(rows))
                report.add(f"{name}_fixed_once", 0.0 if hit else 1.0)
            # Always valid, read daily (uncapped): cumulative moments at the end of each day.
            daily = np.cumsum(configs["uncapped"][s], axis=2)  # 2 x LAYERS x DAYS x 15
            expected = [2.0 * n] + [2.0 * n * share for share in LAYER_SHARES]
            for name in FAMILY_METRICS:
                first = None
                for d in range(DAYS):
                    rows = [_arms(daily[:, :, d].sum(axis=1))] + [_arms(daily[:, g, d]) for g in range(LAYERS)]
                    if max(min(r.n for r in row) for row in rows) < MIN_CUSTOMERS_PER_ARM:
                        continue  # no row has a verdict yet
                    if family_significant(rows, name, True, expected):
                        first = d + 1
                        break
                report.add(f"{name}_sequential_daily", 0.0 if first else 1.0)
                if first:
                    looks_to_first[name].append(first)
        done += len(x)
    out: dict[str, Any] = {}
    for config, tally in tallies.items():
        out[config] = {
            "false_positive_rate": tally.summary(),
            "variance_reduction": {k: round(float(np.mean(v)), 4) for k, v in reductions[config].items() if v},
            "se_ratio": {k: round(float(np.mean(v)), 4) for k, v in se_ratios[config].items() if v},
        }
    out["report_reading"] = {
        "family": f"metric x (all customers + {LAYERS} layers), Holm, CUPED on",
        "any_confirmatory_significant": report.summary(),
        "median_day_of_false_call": {k: float(np.median(v)) for k, v in looks_to_first.items() if v},
    }
    return out


def conversion_aa(sims: int, n: int, control_share: float, seed: int = 20240502) -> dict[str, Any]:
    """CUPED for a CONVERSION metric, A/A at an unbalanced split and a low rate: ``n``
    customers, ``control_share`` of them in the control; each converted in the 14-day
    pre-period with probability 6%, and in the window with 15% if so, else 1.2% (overall
    ~2%). Tests: the report's pooled z without CUPED (``compare(method=DECISION_METHOD)``),
    CUPED + Welch on the 0/1 outcome (``cuped`` + ``compare_values``, per-arm variances) and
    CUPED as OLS with one pooled residual variance (``cuped_ols``)."""
    rng = np.random.default_rng(seed)
    n_control = round(n * control_share)
    tally = Tally()
    reductions = []
    for start in range(0, sims, 500):
        count = min(500, sims - start)
        pre = (rng.random((count, n)) < 0.06).astype(np.int64)
        post = (rng.random((count, n)) < np.where(pre == 1, 0.15, 0.012)).astype(np.int64)
        x = np.stack([post, pre], axis=-1)
        for s in range(count):
            arms = []
            for part in (x[s, :n_control], x[s, n_control:]):
                t = part.sum(axis=0).tolist()
                p = (part.T @ part).tolist()
                arms.append(Moments(len(part), tuple(t), tuple(tuple(r) for r in p)))
            plain = compare(Arm(arms[0].n, arms[0].sums[0]), Arm(arms[1].n, arms[1].sums[0]), method=DECISION_METHOD)
            tally.add("pooled_z_unadjusted", plain.p_value)
            adjusted = cuped(arms, MeanOf(0), MeanOf(1))
            tally.add("cuped_welch", compare_values(*adjusted.estimates, distribution="t").p_value)
            tally.add("cuped_welch_normal", compare_values(*adjusted.estimates, distribution="normal").p_value)
            tally.add("cuped_ols_pooled", cuped_ols(arms)[0].p_value)
            if adjusted.variance_reduction is not None:
                reductions.append(adjusted.variance_reduction)
    return {
        "n": n,
        "control_share": control_share,
        "false_positive_rate": tally.summary(),
        "variance_reduction": round(float(np.mean(reductions)), 4) if reductions else None,
    }


def above_five_percent(result: dict[str, Any], family_level: float = 0.95) -> list[str]:
    """Labels whose false-positive rate is shown to exceed 5%: the lower end of its exact
    (Clopper-Pearson) interval is above 5%, at the Bonferroni level 1 - (1 - family_level)/m
    for the m rates checked together (with m = 20 rates each at 95%, a true 5% would be
    "shown" above 5% in one of them about a third of the time)."""
    rows: dict[str, dict[str, Any]] = {}
    for section in ("uncapped", "capped_p99"):
        for label, row in result[section]["false_positive_rate"].items():
            rows[f"{section}.{label}"] = row
    for label, row in result["report_reading"]["any_confirmatory_significant"].items():
        rows[f"report_reading.{label}"] = row
    # Conversion CUPED: only what the report uses (CUPED + Welch is there as the contrast).
    for label in ("cuped_ols_pooled", "pooled_z_unadjusted"):
        row = result.get("conversion_cuped", {}).get("false_positive_rate", {}).get(label)
        if row is not None:
            rows[f"conversion_cuped.{label}"] = row
    level = 1.0 - (1.0 - family_level) / max(len(rows), 1)
    return [
        label
        for label, row in rows.items()
        if scipy_stats.binomtest(row["hits"], row["runs"]).proportion_ci(level, method="exact").low > 0.05
    ]


def ratio_aa(sims: int, n: int, seed: int = 20240504) -> dict[str, dict[str, Any]]:
    """A/A rates of the average-order-value test alone (plain and CUPED, uncapped and capped
    at p99), each experiment reduced to its two arms' moments only (no layer x day cells, so
    ~5x cheaper than ``simulate``); what the small-arm ``slow`` test runs."""
    tally = Tally()
    post, pre, distribution = TESTS["average_order_value"]
    for x, _layer, _day in batches(sims, n, seed):
        count = x.shape[0]
        group = np.repeat(np.arange(count * 2), n)
        for config, values in (("uncapped", x), ("capped_p99", capped(x, 0.99))):
            flat = group_moments(values.reshape(-1, K), group, count * 2).reshape(count, 2, -1)
            for s in range(count):
                arms = _arms(flat[s])
                plain = compare_values(estimate(arms[0], post), estimate(arms[1], post), distribution=distribution)
                tally.add(f"{config}.average_order_value", _p(plain))
                adjusted = cuped(arms, post, pre).estimates
                tally.add(
                    f"{config}.average_order_value_cuped", _p(compare_values(*adjusted, distribution=distribution))
                )
    return tally.summary()


def aov_power(sims: int, n: int, lift: float, seed: int = 20240503) -> dict[str, Any]:
    """Power of the average-order-value test (plain and CUPED, capped at p99 as the report)
    when the treatment's revenue is ``1 + lift`` times the control's distribution: the
    report's t with the denominator's units (``distribution="t"``) against the plain delta
    method with a normal reference (``"normal"``, before the small-arm correction)."""
    tally = Tally()
    post, pre = TESTS["average_order_value"][:2]
    for x, _layer, _day in batches(sims, n, seed):
        x = x.copy()
        x[:, 1, :, 0] = np.round(x[:, 1, :, 0] * (1.0 + lift)).astype(np.int64)
        x = capped(x, 0.99)
        count = x.shape[0]
        group = np.repeat(np.arange(count * 2), n)
        flat = group_moments(x.reshape(-1, K), group, count * 2).reshape(count, 2, -1)
        for s in range(count):
            arms = _arms(flat[s])
            adjusted = cuped(arms, post, pre).estimates
            for distribution in ("t", "normal"):
                plain = compare_values(estimate(arms[0], post), estimate(arms[1], post), distribution=distribution)
                tally.add(f"{distribution}", _p(plain))
                tally.add(f"{distribution}_cuped", _p(compare_values(*adjusted, distribution=distribution)))
    return {"n_per_arm": n, "revenue_lift": lift, "capped": "p99", "power": tally.summary()}


def small_arms(sims: int, sizes: list[int], power_sims: int, power_n: int, lift: float) -> dict[str, Any]:
    """The single-test A/A rates (``uncapped`` / ``capped_p99`` of ``simulate``, no report
    reading) at each arm size, and the AOV test's power at ``power_n`` per arm."""
    out: dict[str, Any] = {"benchmark": "values_decisions_small_arms", "sims": sims, "by_n_per_arm": {}}
    for n in sizes:
        result = simulate(sims, n, family_sims=0)
        result.pop("report_reading")
        result["intervals_above_5pct"] = [
            f"{section}.{label}"
            for section in ("uncapped", "capped_p99")
            for label, row in result[section]["false_positive_rate"].items()
            if scipy_stats.binomtest(row["hits"], row["runs"]).proportion_ci(0.95, method="exact").low > 0.05
        ]
        out["by_n_per_arm"][str(n)] = result
    out["aov_power"] = aov_power(power_sims, power_n, lift)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sims", type=int, default=20000)
    parser.add_argument("--family-sims", type=int, default=None, help="of which read as reports (default: all)")
    parser.add_argument("--n", type=int, default=2000, help="customers per arm")
    parser.add_argument("--seed", type=int, default=20240501)
    parser.add_argument("--conversion-sims", type=int, default=20000, help="A/A runs of conversion CUPED")
    parser.add_argument("--no-save", action="store_true")
    parser.add_argument(
        "--small-arms",
        default=None,
        help="comma-separated customers per arm (e.g. 500,1000,2000): single-test A/A rates at each size and "
        "the AOV power at the largest; saved as values_decisions_small_arms.json",
    )
    parser.add_argument("--power-lift", type=float, default=0.05, help="revenue lift for --small-arms' power")
    args = parser.parse_args()
    started = time.perf_counter()
    if args.small_arms:
        sizes = [int(v) for v in args.small_arms.split(",")]
        small = small_arms(args.sims, sizes, args.sims, max(sizes), args.power_lift)
        small["seconds"] = round(time.perf_counter() - started, 1)
        small["cpu_seconds"] = round(time.process_time(), 1)
        small["load_average_1m_at_end"] = round(os.getloadavg()[0], 2)
        text = json.dumps(small, indent=2)
        print(text)
        if not args.no_save:
            (ROOT / "bench" / "results" / "values_decisions_small_arms.json").write_text(text + "\n")
        return
    output: dict[str, Any] = {
        "benchmark": "values_decisions",
        "sims": args.sims,
        "n_per_arm": args.n,
        "seed": args.seed,
        "default_expected_n": DEFAULT_EXPECTED_N,
        **simulate(args.sims, args.n, seed=args.seed, family_sims=args.family_sims),
    }
    output["conversion_cuped"] = conversion_aa(args.conversion_sims, 5000, 0.1)
    output["intervals_above_5pct"] = above_five_percent(output)
    output["seconds"] = round(time.perf_counter() - started, 1)
    output["cpu_seconds"] = round(time.process_time(), 1)
    output["load_average_1m_at_end"] = round(os.getloadavg()[0], 2)
    text = json.dumps(output, indent=2)
    print(text)
    if not args.no_save:
        path = ROOT / "bench" / "results" / "values_decisions.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text + "\n")


if __name__ == "__main__":
    main()
