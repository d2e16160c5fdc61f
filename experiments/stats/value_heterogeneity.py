"""Heterogeneity of a value metric: does the treatment effect differ between layers?

Input: one ``Estimate`` (``experiments.stats.moments``: value, per-customer variance v, n;
CUPED-adjusted when CUPED applied in that layer) per (layer, variant) cell of a dimension.
In layer l the effect of treatment t is the absolute difference

    d_lt = value_lt - value_lc,      Var(value) = v / n  (delta method for ratios)

and, within one layer, two treatments share the control, so their differences covary:

    Sigma_l = V_lc 1 1' + diag(V_lt)           (V = v / n)

H0: every treatment's effect is the same in every layer (no variant x layer interaction).
Stacking the defined d_lt of all layers into d with block-diagonal covariance Sigma and a
design X that maps d_lt to its treatment's common effect beta_t, the generalised least
squares fit beta_hat = (X' Sigma^-1 X)^-1 X' Sigma^-1 d leaves the Wald / Cochran statistic

    Q = (d - X beta_hat)' Sigma^-1 (d - X beta_hat)  ~  chi2(df),  df = len(d) - rank(X)

(multivariate fixed-effect homogeneity test: Cochran 1954, Biometrics 10:101; Hedges &
Olkin 1985, Statistical Methods for Meta-Analysis, ch. 9; Jackson, White & Riley 2011,
Stat Med 30:2481). With one treatment it is Cochran's Q, sum_l w_l (d_l - d_bar)^2 with
w_l = 1 / (V_lc + V_lt), = statsmodels' ``combine_effects(d, V).q``; with several it is
the Wald test of the interaction terms of OLS y ~ variant * layer on the per-customer
values with HC2 standard errors (each cell's mean then has variance s^2 / n exactly);
the tests check both. Large-sample (chi-square, not F): as the ratio metrics' delta
method, it needs enough customers per cell for the means to be near-normal.

Cells whose estimate or variance is undefined (no customers, one customer, a ratio with a
zero denominator) are left out with a note; a layer without a usable control is left out.
Undefined (with a reason) when fewer than two layers, or no treatment in two layers,
remain, or every remaining difference has zero variance.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np

from experiments.stats._common import _NUMERICAL_FAILURE, Reason
from experiments.stats._lazy import lazy_module
from experiments.stats.interaction import HeterogeneityResult, _undefined_heterogeneity
from experiments.stats.moments import Estimate

# Loaded on first use: see experiments.stats._lazy (not at Django setup).
stats = lazy_module("scipy.stats")

__all__ = ["value_heterogeneity"]


def value_heterogeneity(
    cells: Mapping[tuple[str, str], Estimate], control_variant: str, alpha: float = 0.05
) -> HeterogeneityResult:
    """Cochran / Wald test that each treatment's effect on a value metric is the same in
    every layer (module docstring). ``cells`` maps (layer, variant) to that cell's estimate."""
    control_variant = str(control_variant)
    notes: list[Reason] = []
    all_layers = sorted({layer for layer, _ in cells})
    treatments = sorted({variant for _, variant in cells} - {control_variant})
    all_variants = [control_variant, *treatments]

    def usable(estimate: Estimate | None) -> bool:
        return estimate is not None and estimate.value is not None and estimate.variance is not None and estimate.n > 0

    skipped_cells = 0
    skipped_layers = 0
    zero_variance = 0
    blocks: list[tuple[str, list[str], np.ndarray, np.ndarray]] = []
    for layer in all_layers:
        control = cells.get((layer, control_variant))
        if not usable(control):
            skipped_layers += 1
            continue
        assert control is not None and control.value is not None and control.variance is not None
        v_c = control.variance / control.n
        names: list[str] = []
        diffs: list[float] = []
        variances: list[float] = []
        for t in treatments:
            est = cells.get((layer, t))
            if not usable(est):
                if est is not None and est.n > 0:
                    skipped_cells += 1
                continue
            assert est is not None and est.value is not None and est.variance is not None
            v_t = est.variance / est.n
            if v_c + v_t <= 0.0:
                zero_variance += 1
                continue
            names.append(t)
            diffs.append(est.value - control.value)
            variances.append(v_t)
        if not names:
            continue
        cov = np.full((len(names), len(names)), v_c) + np.diag(variances)
        blocks.append((layer, names, np.array(diffs), cov))

    if skipped_layers:
        notes.append(
            Reason(
                "layers_without_control_dropped",
                f"{skipped_layers} layer(s) without a usable control estimate (no customers, or too few for a "
                "variance) were left out.",
            )
        )
    if skipped_cells:
        notes.append(
            Reason(
                "cells_without_estimate_dropped",
                f"{skipped_cells} layer/variant cell(s) without a usable estimate or variance were left out.",
            )
        )
    if zero_variance:
        notes.append(
            Reason(
                "zero_variance_dropped",
                f"{zero_variance} layer/treatment difference(s) with zero variance (every customer had the same "
                "value) were left out.",
            )
        )
    layers = [layer for layer, *_ in blocks]
    used_variants = [control_variant, *sorted({t for _, names, _, _ in blocks for t in names})]
    if len(layers) < 2:
        reason = Reason("fewer_than_two_layers", "Fewer than two layers have a usable treatment effect.")
        return _undefined_heterogeneity(reason, layers, used_variants if layers else all_variants, notes)

    d = np.concatenate([diffs for _, _, diffs, _ in blocks])
    treatment_index = {t: i for i, t in enumerate(used_variants[1:])}
    x = np.zeros((len(d), len(treatment_index)))
    sigma = np.zeros((len(d), len(d)))
    row = 0
    for _, names, _, cov in blocks:
        size = len(names)
        sigma[row : row + size, row : row + size] = cov
        for j, t in enumerate(names):
            x[row + j, treatment_index[t]] = 1.0
        row += size
    df = len(d) - int(np.linalg.matrix_rank(x))
    if df <= 0:
        reason = Reason("no_overlap", "No treatment has an effect in two layers, so effects cannot be compared.")
        return _undefined_heterogeneity(reason, layers, used_variants, notes)
    try:
        # Whitening by the Cholesky factor: Q is the residual sum of squares of the
        # whitened GLS regression (numerically better than forming Sigma^-1).
        factor = np.linalg.cholesky(sigma)
        wd = np.linalg.solve(factor, d)
        wx = np.linalg.solve(factor, x)
        beta, *_ = np.linalg.lstsq(wx, wd, rcond=None)
        residual = wd - wx @ beta
        statistic = float(residual @ residual)
    except np.linalg.LinAlgError:  # pragma: no cover - blocks are positive definite by construction
        return _undefined_heterogeneity(_NUMERICAL_FAILURE, layers, used_variants, notes)
    p_value = float(stats.chi2.sf(statistic, df))
    if not (math.isfinite(statistic) and math.isfinite(p_value)):  # pragma: no cover
        return _undefined_heterogeneity(_NUMERICAL_FAILURE, layers, used_variants, notes)
    if p_value < alpha:
        message = (
            f"The effect on the value differs between layers (Wald test of equal differences, p = {p_value:.2g}): "
            "read the layers separately."
        )
    else:
        message = (
            f"No evidence that the effect on the value differs between layers (Wald test of equal differences, "
            f"p = {p_value:.2g}): differences between layers are consistent with noise."
        )
    return HeterogeneityResult(statistic, df, p_value, tuple(layers), tuple(used_variants), message, tuple(notes))
