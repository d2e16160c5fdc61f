"""Heterogeneity: does the lift differ between the layers of one dimension?"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from experiments.stats._common import _NUMERICAL_FAILURE, Arm, Reason, _jsonable
from experiments.stats._lazy import lazy_module

# Loaded on first use: see experiments.stats._lazy (not at Django setup).
optimize = lazy_module("scipy.optimize")
special = lazy_module("scipy.special")
stats = lazy_module("scipy.stats")
families = lazy_module("statsmodels.genmod.families")
glm = lazy_module("statsmodels.genmod.generalized_linear_model")
sm_exceptions = lazy_module("statsmodels.tools.sm_exceptions")

# --------------------------------------------------------------------------
# heterogeneity(): does the lift differ between layers?
# --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Cell:
    """Counts for one (layer, variant) cell of a dimension."""

    layer: str
    variant: str
    n: int
    conversions: int

    def __post_init__(self) -> None:
        arm = Arm(self.n, self.conversions)
        object.__setattr__(self, "n", arm.n)
        object.__setattr__(self, "conversions", arm.conversions)
        object.__setattr__(self, "layer", str(self.layer))
        object.__setattr__(self, "variant", str(self.variant))


@dataclass(frozen=True, slots=True)
class HeterogeneityResult:
    """Likelihood-ratio test of variant x layer interaction (one per dimension).

    statistic = 2 (llf_full - llf_reduced), df = difference in the number of
    (identifiable) parameters, p_value = P(chi2_df > statistic).
    layers/variants: those used after dropping uninformative ones (``notes``).
    """

    statistic: float | None
    df: int | None
    p_value: float | None
    layers: tuple[str, ...]
    variants: tuple[str, ...]
    message: str
    notes: tuple[Reason, ...] = ()
    undefined: dict[str, Reason] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return _jsonable(self)


def _undefined_heterogeneity(
    reason: Reason, layers: Sequence[str], variants: Sequence[str], notes: list[Reason]
) -> HeterogeneityResult:
    return HeterogeneityResult(
        None,
        None,
        None,
        tuple(layers),
        tuple(variants),
        "Cannot test whether the lift differs between layers: " + reason.message,
        tuple(notes),
        {"statistic": reason, "df": reason, "p_value": reason},
    )


def _binomial_loglik(x: np.ndarray, n: np.ndarray, prob: np.ndarray) -> float:
    """sum log C(n, x) + x log p + (n - x) log(1 - p), with 0 log 0 = 0."""
    log_comb = special.gammaln(n + 1) - special.gammaln(x + 1) - special.gammaln(n - x + 1)
    return float(np.sum(log_comb + special.xlogy(x, prob) + special.xlog1py(n - x, -prob)))


def _separated(design: np.ndarray, x: np.ndarray, n: np.ndarray) -> bool:
    """Does the binomial MLE fail to exist (complete or quasi-complete separation)?

    Linear-programming check (Albert & Anderson 1984, Biometrika 71:1; Konis 2007,
    DPhil thesis, Oxford, "Linear programming algorithms for detecting separated
    data in binary logistic regression models"): the MLE is infinite iff some
    direction b moves every cell's linear predictor towards its data, without
    changing cells that have both outcomes: s_i x_i'b >= 0 for one-sided cells
    (s = +1 if all converted, -1 if none did), x_i'b = 0 for two-sided cells, and
    x_i'b != 0 somewhere.  We maximise sum s_i x_i'b within the box |b| <= 1.
    """
    one_sided = (x == 0) | (x == n)
    if not one_sided.any():
        return False
    sign = np.where(x[one_sided] == n[one_sided], 1.0, -1.0)
    rows = sign[:, None] * design[one_sided]
    two_sided = design[~one_sided]
    result = optimize.linprog(
        -rows.sum(axis=0),
        A_ub=-rows,
        b_ub=np.zeros(len(rows)),
        A_eq=two_sided if len(two_sided) else None,
        b_eq=np.zeros(len(two_sided)) if len(two_sided) else None,
        bounds=[(-1.0, 1.0)] * design.shape[1],
        method="highs",
    )
    return bool(result.status == 0 and -result.fun > 1e-9)


def heterogeneity(cells: Sequence[Cell], control_variant: str) -> HeterogeneityResult:
    """Does the lift (on the log-odds scale) differ between layers?

    Binomial GLM with logit link on the aggregated (layer, variant) counts,
    endog = [conversions, n - conversions] (statsmodels GLM, families.Binomial()):
      reduced: variant + layer;  full: variant + layer + variant x layer.
    LR = 2 (llf_full - llf_reduced) ~ chi2(df), df = #params(full) -
    #params(reduced) (Agresti, Categorical Data Analysis, 3rd ed., 4.4.4/5.2.4;
    McCullagh & Nelder 1989, 4.4.3).

    The full model has one free parameter per non-empty cell (it is saturated),
    so its maximised log-likelihood is closed-form: p_hat = x / n per cell.  It
    is computed that way instead of by IRLS, which avoids false separation
    warnings for cells at 0% or 100%; then LR is the reduced model's deviance
    and df = #cells - rank(reduced design).  The tests check this against two
    statsmodels GLM fits.

    Data handling (each reported in ``notes``): cells are summed per
    (layer, variant); cells with n = 0 are dropped; a layer (or a non-control
    variant) whose cells are all at 0% or all at 100% is dropped, repeatedly -
    it carries no information about the interaction and, in the limit, adds
    nothing to either likelihood.  Undefined (with reasons) when fewer than 2
    layers or 2 variants remain, the control variant is missing or has no
    variation, no layer has both control and treatment (df = 0), or the reduced
    fit shows separation or does not converge.
    """
    notes: list[Reason] = []
    totals: dict[tuple[str, str], list[int]] = {}
    for cell in cells:
        if not isinstance(cell, Cell):
            raise TypeError("cells must be Cell instances")
        counts = totals.setdefault((cell.layer, cell.variant), [0, 0])
        counts[0] += cell.n
        counts[1] += cell.conversions
    control_variant = str(control_variant)
    all_layers = sorted({layer for layer, _ in totals})
    all_variants = sorted({variant for _, variant in totals})

    empty = [key for key, (n, _) in totals.items() if n == 0]
    if empty:
        notes.append(
            Reason("empty_cells_dropped", f"{len(empty)} layer/variant cell(s) with no customers were left out.")
        )
    present = {key: (n, x) for key, (n, x) in totals.items() if n > 0}
    if not any(variant == control_variant for _, variant in present):
        reason = Reason("control_variant_missing", f"The control variant {control_variant!r} has no customers.")
        return _undefined_heterogeneity(reason, all_layers, all_variants, notes)

    # Drop layers/variants without variation (all cells 0% or all 100%) until stable.
    while True:
        dropped_any = False
        for position, kind in ((0, "layer"), (1, "variant")):
            groups: dict[str, list[tuple[int, int]]] = {}
            for key, counts in present.items():
                groups.setdefault(key[position], []).append(counts)
            for name, group in sorted(groups.items()):
                flat = all(x == 0 for _, x in group) or all(x == n for n, x in group)
                if not flat:
                    continue
                if kind == "variant" and name == control_variant:
                    reason = Reason(
                        "control_without_variation",
                        "The control converted at 0% (or 100%) in every layer, so lifts are undefined.",
                    )
                    return _undefined_heterogeneity(reason, all_layers, all_variants, notes)
                notes.append(
                    Reason(
                        f"{kind}_without_variation_dropped",
                        f"{kind.capitalize()} {name!r} converted at 0% (or 100%) in every cell "
                        "and tells us nothing about differences in lift; it was left out.",
                    )
                )
                present = {k: v for k, v in present.items() if k[position] != name}
                dropped_any = True
        if not dropped_any:
            break

    layers = sorted({layer for layer, _ in present})
    variants = [control_variant, *sorted({v for _, v in present} - {control_variant})]
    if len(layers) < 2:
        reason = Reason("fewer_than_two_layers", "Fewer than two layers have usable data.")
        return _undefined_heterogeneity(reason, layers, variants, notes)
    if len(variants) < 2:
        reason = Reason("fewer_than_two_variants", "Fewer than two variants have usable data.")
        return _undefined_heterogeneity(reason, layers, variants, notes)

    keys = sorted(present, key=lambda k: (layers.index(k[0]), variants.index(k[1])))
    n = np.array([present[k][0] for k in keys], dtype=float)
    x = np.array([present[k][1] for k in keys], dtype=float)
    # Reduced design: intercept + variant dummies (reference: control) + layer
    # dummies (reference: first layer in sorted order).
    columns = [np.ones(len(keys))]
    columns += [np.array([k[1] == v for k in keys], dtype=float) for v in variants[1:]]
    columns += [np.array([k[0] == layer for k in keys], dtype=float) for layer in layers[1:]]
    design = np.column_stack(columns)
    rank = int(np.linalg.matrix_rank(design))
    df = len(keys) - rank
    if df <= 0:
        reason = Reason(
            "no_overlap",
            "No layer has both the control and a treatment with data, so lifts cannot be compared.",
        )
        return _undefined_heterogeneity(reason, layers, variants, notes)

    if _separated(design, x, n):
        reason = Reason(
            "separation",
            "Some layer/variant combinations are perfectly predictable (a 0% or 100% "
            "pattern across cells), so the lifts cannot be compared on the model's scale.",
        )
        return _undefined_heterogeneity(reason, layers, variants, notes)

    endog = np.column_stack([x, n - x])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            fit = glm.GLM(endog, design, family=families.Binomial()).fit(maxiter=100)
        except (ValueError, np.linalg.LinAlgError) as exc:  # pragma: no cover - defensive
            reason = Reason("did_not_converge", f"The model could not be fitted ({exc}).")
            return _undefined_heterogeneity(reason, layers, variants, notes)
    fitted = np.asarray(fit.mu, dtype=float)
    categories = {type(w.message) for w in caught}
    if (
        not fit.converged
        or categories & {sm_exceptions.ConvergenceWarning, sm_exceptions.IterationLimitWarning}
        or not np.all((fitted > 0.0) & (fitted < 1.0))
    ):
        reason = Reason("did_not_converge", "The model fit did not converge.")
        return _undefined_heterogeneity(reason, layers, variants, notes)
    # statsmodels raises PerfectSeparationWarning whenever fitted == observed
    # rates, i.e. also for a perfect but finite fit; real separation was ruled
    # out above, so this only means the main-effects model fits exactly.
    if sm_exceptions.PerfectSeparationWarning in categories:
        notes.append(Reason("perfect_fit", "The lift (as an odds ratio) is exactly the same in every layer."))

    llf_full = _binomial_loglik(x, n, x / n)
    llf_reduced = _binomial_loglik(x, n, fitted)
    statistic = max(0.0, 2.0 * (llf_full - llf_reduced))
    p_value = float(stats.chi2.sf(statistic, df))
    if not (math.isfinite(statistic) and math.isfinite(p_value)):  # pragma: no cover
        return _undefined_heterogeneity(_NUMERICAL_FAILURE, layers, variants, notes)
    if p_value < 0.05:
        message = f"The lift differs between layers (p = {p_value:.2g}): read the layers separately."
    else:
        message = (
            f"No evidence that the lift differs between layers (p = {p_value:.2g}): "
            "differences between layers are consistent with noise."
        )
    return HeterogeneityResult(statistic, df, p_value, tuple(layers), tuple(variants), message, tuple(notes))
