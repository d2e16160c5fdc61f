"""Benchmark (simulation, no database): value metrics' A/A false-positive rates and CUPED's
variance reduction on demo-like data (issue 15; prints JSON).

Demo-like customers: a pre-period (14 days) with a 60% chance of orders; in the window a
buy probability that rises with the pre-period's activity, 1-3 orders of log-normal value
(median 45, sigma 0.6) scaled by the customer's own spending level, so revenue is
zero-inflated, skewed and correlated with the pre-period, as in the demo's events.

Per simulated A/A experiment (both arms from the same distribution, ``--n`` customers per
arm) the per-customer arrays are reduced to sufficient statistics (``Moments``: the sums
the database returns) and tested with the report's functions:

* revenue per customer (mean, Welch t), orders per customer (mean, Welch t),
* average order value (ratio revenue / orders, delta method, normal),
* the same three with CUPED (theta pooled across arms), and the sequential (always-valid)
  revenue test read once;

Twice: uncapped, and with revenue capped at the 99th percentile (``capped_p99``, the
product's ``cap_percentile``). ``false_positive_rate`` = share of p < 0.05 (target <= 5%, within the binomial noise of
``--sims`` runs); ``variance_reduction`` = CUPED's mean reduction; ``se_ratio`` = CUPED's
standard error / the unadjusted one (its square is the share of customers needed).

Run: ``.venv/bin/python bench/values_decisions.py --sims 2000 --n 2000``.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from experiments.stats import MeanOf, Moments, RatioOf, cap_rank, compare_values, cuped, estimate  # noqa: E402


def _order_sums(rng: np.random.Generator, counts: np.ndarray, cap: int) -> np.ndarray:
    """Sum of ``counts[i]`` log-normal order values (median 45, sigma 0.6), vectorised."""
    values = rng.lognormal(np.log(45.0), 0.6, (len(counts), cap))
    return (values * (np.arange(cap) < np.minimum(counts, cap)[:, None])).sum(axis=1)


def customers(rng: np.random.Generator, n: int) -> np.ndarray:
    """Columns: revenue, orders, pre revenue, pre orders (per customer, in the window)."""
    level = rng.lognormal(0.0, 0.8, n)  # each customer's spending level
    pre_orders = np.minimum(rng.poisson(0.9 * level) * (rng.random(n) < 0.6), 12)
    pre_revenue = _order_sums(rng, pre_orders, 12) * level
    buy = rng.random(n) < np.clip(0.05 + 0.1 * pre_orders, 0, 0.9)
    orders = np.where(buy, rng.integers(1, 4, n), 0)
    revenue = _order_sums(rng, orders, 3) * level
    return np.column_stack([np.round(revenue, 2), orders, np.round(pre_revenue, 2), pre_orders]).astype(float)


def moments(x: np.ndarray) -> Moments:
    """What the database returns for one arm: n, sums and the cross-product table."""
    sums = tuple(float(v) for v in x.sum(axis=0))
    products = x.T @ x
    return Moments(len(x), sums, tuple(tuple(float(v) for v in row) for row in products))


TESTS = {
    "revenue_per_customer": (MeanOf(0), MeanOf(2), "t"),
    "orders_per_customer": (MeanOf(1), MeanOf(3), "t"),
    "average_order_value": (RatioOf(0, 1), RatioOf(2, 3), "normal"),
}


def capped(a: np.ndarray, b: np.ndarray, percentile: float) -> tuple[np.ndarray, np.ndarray]:
    """Revenue (and pre-period revenue, same cap) capped at the nearest-rank percentile of
    both arms' revenue together, as ``value_moments`` does in the database."""
    pooled = np.sort(np.concatenate([a[:, 0], b[:, 0]]))
    cap = pooled[cap_rank(len(pooled), percentile) - 1]
    out = []
    for x in (a, b):
        x = x.copy()
        x[:, 0] = np.minimum(x[:, 0], cap)
        x[:, 2] = np.minimum(x[:, 2], cap)
        out.append(x)
    return out[0], out[1]


def simulate(sims: int, n: int, seed: int = 20240501, cap: float | None = None) -> dict[str, Any]:
    """A/A experiments; ``cap``: capping percentile of revenue (None: none)."""
    rng = np.random.default_rng(seed)
    hits: dict[str, int] = {}
    reductions: dict[str, list[float]] = {name: [] for name in TESTS}
    se_ratios: dict[str, list[float]] = {name: [] for name in TESTS}
    defined: dict[str, int] = {}
    for _ in range(sims):
        a, b = customers(rng, n), customers(rng, n)
        if cap is not None:
            a, b = capped(a, b, cap)
        arms = [moments(a), moments(b)]
        for name, (post, pre, distribution) in TESTS.items():
            plain = compare_values(estimate(arms[0], post), estimate(arms[1], post), distribution=distribution)
            adjusted = cuped(arms, post, pre)
            with_cuped = compare_values(*adjusted.estimates, distribution=distribution)
            for label, result in ((name, plain), (f"{name}_cuped", with_cuped)):
                if result.p_value is not None:
                    defined[label] = defined.get(label, 0) + 1
                    hits[label] = hits.get(label, 0) + (result.p_value < 0.05)
            if adjusted.variance_reduction is not None:
                reductions[name].append(adjusted.variance_reduction)
            if plain.se and with_cuped.se:
                se_ratios[name].append(with_cuped.se / plain.se)
        sequential = compare_values(
            estimate(arms[0], MeanOf(0)), estimate(arms[1], MeanOf(0)), sequential=True, expected_n=2 * n
        )
        if sequential.p_value is not None:
            defined["revenue_sequential"] = defined.get("revenue_sequential", 0) + 1
            hits["revenue_sequential"] = hits.get("revenue_sequential", 0) + (sequential.p_value < 0.05)
    band = 2.576 * math.sqrt(0.05 * 0.95 / sims)
    return {
        "false_positive_rate": {k: round(hits.get(k, 0) / v, 4) for k, v in defined.items()},
        "band_99pct": [round(0.05 - band, 4), round(0.05 + band, 4)],
        "variance_reduction": {k: round(float(np.mean(v)), 4) for k, v in reductions.items() if v},
        "se_ratio": {k: round(float(np.mean(v)), 4) for k, v in se_ratios.items() if v},
        "defined": defined,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sims", type=int, default=2000)
    parser.add_argument("--n", type=int, default=2000, help="customers per arm")
    parser.add_argument("--no-save", action="store_true", help="Do not write bench/results/values_decisions.json.")
    args = parser.parse_args()
    started = time.perf_counter()
    output = {
        "benchmark": "values_decisions",
        "sims": args.sims,
        "n_per_arm": args.n,
        "uncapped": simulate(args.sims, args.n),
        "capped_p99": simulate(args.sims, args.n, cap=0.99),
    }
    output["seconds"] = round(time.perf_counter() - started, 1)
    text = json.dumps(output, indent=2)
    print(text)
    if args.no_save:
        return
    path = ROOT / "bench" / "results" / "values_decisions.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text + "\n")


if __name__ == "__main__":
    main()
