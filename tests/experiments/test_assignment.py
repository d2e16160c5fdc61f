"""Tests for experiments.assignment (pure: no Django, no database).

Golden vectors: ``growthbook_cases.json`` next to this file is a verbatim
copy of the relevant sections of the published GrowthBook SDK spec cases
(repository growthbook/growthbook, packages/sdk-js/test/cases.json; see its
``_source`` entry). Every case is tested.

Cross-check: for 20,000 ids of mixed shapes (including non-ASCII and astral
characters) and several weight/coverage configurations, ``assign`` and
``assign_bulk`` must equal the installed ``growthbook`` SDK's public
``GrowthBook(...).run(Experiment(...))`` id by id.
"""

from __future__ import annotations

import json
import math
import random
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from growthbook import Experiment, GrowthBook
from growthbook import core as gb_core
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scipy.stats import chi2_contingency

from experiments import assignment

pytestmark = pytest.mark.pure

CASES: dict[str, Any] = json.loads((Path(__file__).with_name("growthbook_cases.json")).read_text(encoding="utf-8"))
REPO_ROOT = Path(__file__).resolve().parents[2]

# Arbitrary strings *including* lone surrogates (JS strings may contain them;
# hypothesis' text() excludes them by default).
ANY_CHAR = st.one_of(
    st.characters(),
    st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF, categories=["Cs"]),
)
ANY_TEXT = st.text(alphabet=ANY_CHAR, max_size=40)


def _ids(n: int, *, seed: int = 20240601) -> list[str]:
    """Mixed-shape external ids: numeric, prefixed, UUID, non-ASCII, astral."""
    rng = random.Random(seed)
    shapes = (
        lambda i: str(i),
        lambda i: f"cust_{i:08d}",
        lambda i: str(uuid.UUID(int=rng.getrandbits(128))),
        lambda i: f"{rng.getrandbits(48):x}",
        lambda i: f"usuário-{i}-ñ",
        lambda i: f"顧客{i}",
        lambda i: f"🧪{i}🚀",
    )
    return [shapes[i % len(shapes)](i) for i in range(n)]


def _sdk_assign(
    gb: GrowthBook, *, seed: str, hash_value: str, weights: list[float], coverage: float, hash_version: int
) -> int | None:
    gb.set_attributes({"id": hash_value})
    result = gb.run(
        Experiment(
            key=seed,
            variations=list(range(len(weights))),
            weights=list(weights),
            coverage=coverage,
            hashVersion=hash_version,
        )
    )
    return result.variationId if result.inExperiment else None


def _valid_weights(k: int) -> st.SearchStrategy[list[float]]:
    return st.lists(st.floats(min_value=0.01, max_value=1.0), min_size=k, max_size=k).map(
        lambda ws: [w / sum(ws) for w in ws]
    )


WEIGHTS = st.integers(min_value=2, max_value=6).flatmap(_valid_weights)


# ---------------------------------------------------------------------------
# Golden vectors (published spec cases)
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("seed", "value", "version", "expected"),
    CASES["hash"],
    ids=[f"{s!r}-{v!r}-v{ver}" for s, v, ver, _ in CASES["hash"]],
)
def test_hash__spec_case__matches_published_bucket(seed: str, value: str, version: int, expected: float | None) -> None:
    assert assignment.hash(seed, value, version) == expected


@pytest.mark.parametrize(
    ("seed", "value", "version", "expected"),
    [c for c in CASES["hash"] if c[3] is not None],
    ids=[f"{s!r}-{v!r}-v{ver}" for s, v, ver, e in CASES["hash"] if e is not None],
)
def test_hash_bulk__spec_case__matches_published_bucket(seed: str, value: str, version: int, expected: float) -> None:
    assert assignment.hash_bulk(seed, [value, value], version).tolist() == [expected, expected]


def test_hash_bulk__unknown_version__raises() -> None:
    with pytest.raises(ValueError, match="hash version"):
        assignment.hash_bulk("abc", ["def"], 99)


@pytest.mark.parametrize(
    ("args", "expected"),
    [(c[1], c[2]) for c in CASES["getBucketRange"]],
    ids=[c[0] for c in CASES["getBucketRange"]],
)
def test_get_bucket_ranges__spec_case__matches_published_ranges(args: list[Any], expected: list[list[float]]) -> None:
    num_variations, coverage, weights = args
    ranges = assignment.get_bucket_ranges(num_variations, coverage, weights)
    # Upstream compares after rounding (0.2 * 0.2 == 0.04000000000000001).
    assert [list(r) for r in ranges] == [pytest.approx(r, abs=1e-12) for r in expected]
    # ...and we are bit-identical to the SDK's float arithmetic.
    assert ranges == gb_core.getBucketRanges(num_variations, coverage, weights)


@pytest.mark.parametrize(
    ("n", "ranges", "expected"),
    [(c[1], c[2], c[3]) for c in CASES["chooseVariation"]],
    ids=[c[0] for c in CASES["chooseVariation"]],
)
def test_choose_variation__spec_case__matches_published_index(
    n: float, ranges: list[list[float]], expected: int
) -> None:
    tuples = [(s, e) for s, e in ranges]
    assert assignment.choose_variation(n, tuples) == expected
    assert assignment.choose_variation_bulk(np.array([n]), tuples).tolist() == [expected]


@pytest.mark.parametrize(
    ("user_id", "namespace", "expected"),
    [(c[1], c[2], c[3]) for c in CASES["inNamespace"]],
    ids=[c[0] for c in CASES["inNamespace"]],
)
def test_in_namespace__spec_case__matches_published_membership(
    user_id: str, namespace: list[Any], expected: bool
) -> None:
    namespace_id, start, end = namespace
    assert assignment.in_namespace(user_id, namespace_id, start, end) is expected
    bulk = assignment.in_namespace_bulk([user_id], namespace_id=namespace_id, start=start, end=end)
    assert bulk.tolist() == [expected]


@pytest.mark.parametrize(
    ("n", "expected"),
    CASES["getEqualWeights"],
    ids=[str(c[0]) for c in CASES["getEqualWeights"]],
)
def test_get_equal_weights__spec_case__matches_published_weights(n: int, expected: list[float]) -> None:
    assert assignment.get_equal_weights(n) == pytest.approx(expected, abs=1e-8)


@pytest.mark.parametrize(
    ("context", "experiment", "value", "in_experiment"),
    [(c[1], c[2], c[3], c[4]) for c in CASES["run"]],
    ids=[c[0] for c in CASES["run"]],
)
def test_assign__spec_run_case__matches_published_variation(
    context: dict[str, Any], experiment: dict[str, Any], value: int, in_experiment: bool
) -> None:
    variations = experiment["variations"]
    got = assignment.assign(
        seed=experiment.get("seed") or experiment["key"],
        hash_value=context["attributes"]["id"],
        weights=experiment.get("weights") or assignment.get_equal_weights(len(variations)),
        coverage=experiment.get("coverage", 1),
        # The spec's (and SDK's) default hash version is 1.
        hash_version=experiment.get("hashVersion", 1),
    )
    assert got == (variations.index(value) if in_experiment else None)


# ---------------------------------------------------------------------------
# FNV-1a and the non-ASCII convention
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [("", 0x811C9DC5), ("a", 0xE40C292C), ("foobar", 0xBF9CF968)],
)
def test_fnv1a32__reference_vectors__match_fnv1a_spec(text: str, expected: int) -> None:
    assert assignment.fnv1a32(text) == expected


def _fnv_over_units(units: list[int]) -> int:
    h = 0x811C9DC5
    for u in units:
        h = ((h ^ u) * 0x01000193) % 2**32
    return h


@pytest.mark.parametrize(
    ("text", "units"),
    [
        ("é", [0xE9]),  # UTF-8 would be C3 A9
        ("日本", [0x65E5, 0x672C]),
        ("😀", [0xD83D, 0xDE00]),  # astral: a surrogate pair, as JS charCodeAt
        ("\ud800x", [0xD800, 0x78]),  # lone surrogate hashed as itself
    ],
)
def test_fnv1a32__non_ascii__hashes_utf16_code_units(text: str, units: list[int]) -> None:
    assert assignment.fnv1a32(text) == _fnv_over_units(units)
    assert assignment.fnv1a32(text) == gb_core.fnv1a32(text)


@settings(max_examples=300)
@given(text=ANY_TEXT)
def test_fnv1a32__any_string__equals_sdk(text: str) -> None:
    assert assignment.fnv1a32(text) == gb_core.fnv1a32(text)


@settings(max_examples=300)
@given(seed=ANY_TEXT, value=ANY_TEXT, version=st.sampled_from([1, 2, 3]))
def test_hash__any_strings__equals_sdk(seed: str, value: str, version: int) -> None:
    assert assignment.hash(seed, value, version) == gb_core.gbhash(seed, value, version)


# ---------------------------------------------------------------------------
# Cross-check against the installed growthbook SDK (20,000 ids)
# ---------------------------------------------------------------------------

SDK_CONFIGS = [
    pytest.param("checkout-button", [0.5, 0.5], 1.0, 2, id="50-50"),
    pytest.param("pricing-page", [0.1, 0.9], 1.0, 2, id="10-90"),
    pytest.param("onboarding-3way", [1 / 3, 1 / 3, 1 / 3], 1.0, 2, id="3way-equal"),
    pytest.param("search-ranking", [0.2, 0.3, 0.5], 0.6, 2, id="3way-uneven-cov0.6"),
    pytest.param("email-subject", [0.5, 0.5], 0.25, 2, id="50-50-cov0.25"),
    pytest.param("upsell", [0.1, 0.9], 0.8, 2, id="10-90-cov0.8"),
    pytest.param("legacy-v1", [0.3, 0.7], 0.9, 1, id="hash-v1"),
    pytest.param("bad-weights", [0.7, 0.6], 1.0, 2, id="invalid-weights-fallback"),
]


@pytest.fixture(scope="module")
def sdk_ids() -> list[str]:
    return _ids(20_000)


@pytest.mark.parametrize(("seed", "weights", "coverage", "hash_version"), SDK_CONFIGS)
def test_assign__20k_ids__equals_growthbook_sdk_run(
    sdk_ids: list[str], seed: str, weights: list[float], coverage: float, hash_version: int
) -> None:
    gb = GrowthBook(attributes={"id": ""})
    expected = [
        _sdk_assign(gb, seed=seed, hash_value=i, weights=weights, coverage=coverage, hash_version=hash_version)
        for i in sdk_ids
    ]
    scalar = [
        assignment.assign(seed=seed, hash_value=i, weights=weights, coverage=coverage, hash_version=hash_version)
        for i in sdk_ids
    ]
    bulk = assignment.assign_bulk(
        seed=seed, hash_values=sdk_ids, weights=weights, coverage=coverage, hash_version=hash_version
    )
    assert scalar == expected
    assert bulk.tolist() == [-1 if v is None else v for v in expected]
    # Sanity: every variant is actually used (the check is not vacuous).
    assert {v for v in expected if v is not None} == set(range(len(weights)))


def test_in_holdout__5k_ids__equals_sdk_rollout_coverage() -> None:
    """The holdout is GrowthBook's percentage rollout (force rule + coverage)."""
    percent = 12.5
    gb = GrowthBook(
        attributes={"id": ""},
        features={
            "holdout": {
                "defaultValue": False,
                "rules": [
                    {
                        "force": True,
                        "coverage": percent / 100,
                        "hashVersion": 2,
                        "seed": assignment.HOLDOUT_SEED,
                    }
                ],
            }
        },
    )
    ids = _ids(5_000)
    expected = []
    for i in ids:
        gb.set_attributes({"id": i})
        expected.append(bool(gb.get_feature_value("holdout", False)))
    assert [assignment.in_holdout(i, percent=percent) for i in ids] == expected
    assert assignment.in_holdout_bulk(ids, percent=percent).tolist() == expected


# ---------------------------------------------------------------------------
# Scalar == vectorized (hypothesis)
# ---------------------------------------------------------------------------


@settings(max_examples=200, suppress_health_check=[HealthCheck.too_slow])
@given(seed=ANY_TEXT, values=st.lists(ANY_TEXT, max_size=30), version=st.sampled_from([1, 2]))
def test_hash_bulk__arbitrary_unicode_ids__equals_scalar_hash(seed: str, values: list[str], version: int) -> None:
    expected = [assignment.hash(seed, v, version) for v in values]
    assert assignment.hash_bulk(seed, values, version).tolist() == expected


@settings(max_examples=200, suppress_health_check=[HealthCheck.too_slow])
@given(
    seed=ANY_TEXT,
    values=st.lists(ANY_TEXT, max_size=30),
    weights=WEIGHTS,
    coverage=st.floats(min_value=-0.5, max_value=1.5),
    version=st.sampled_from([1, 2]),
)
def test_assign_bulk__arbitrary_ids_and_configs__equals_scalar_assign(
    seed: str, values: list[str], weights: list[float], coverage: float, version: int
) -> None:
    scalar = [
        assignment.assign(seed=seed, hash_value=v, weights=weights, coverage=coverage, hash_version=version)
        for v in values
    ]
    bulk = assignment.assign_bulk(
        seed=seed, hash_values=values, weights=weights, coverage=coverage, hash_version=version
    )
    assert bulk.dtype == np.int8
    assert bulk.tolist() == [-1 if v is None else v for v in scalar]


@settings(max_examples=200)
@given(
    seed=ANY_TEXT,
    value=ANY_TEXT.filter(bool),
    weights=WEIGHTS,
    coverage=st.floats(min_value=0.0, max_value=1.0),
)
def test_assign__any_input__equals_spec_composition(
    seed: str, value: str, weights: list[float], coverage: float
) -> None:
    """assign == chooseVariation(hash(seed, value, 2), getBucketRanges(...))."""
    n = assignment.hash(seed, value, 2)
    assert n is not None
    expected = assignment.choose_variation(n, assignment.get_bucket_ranges(len(weights), coverage, weights))
    got = assignment.assign(seed=seed, hash_value=value, weights=weights, coverage=coverage)
    assert got == (None if expected == assignment.NO_VARIANT else expected)


@settings(max_examples=100)
@given(
    values=st.lists(ANY_TEXT, max_size=30),
    namespace_id=ANY_TEXT,
    bounds=st.tuples(st.floats(0, 1), st.floats(0, 1)).map(sorted),
)
def test_in_namespace_bulk__arbitrary_ids__equals_scalar(
    values: list[str], namespace_id: str, bounds: list[float]
) -> None:
    start, end = bounds
    expected = [assignment.in_namespace(v, namespace_id, start, end) for v in values]
    got = assignment.in_namespace_bulk(values, namespace_id=namespace_id, start=start, end=end)
    assert got.tolist() == expected


@settings(max_examples=100)
@given(values=st.lists(ANY_TEXT, max_size=30), percent=st.floats(0, 100))
def test_in_holdout_bulk__arbitrary_ids__equals_scalar(values: list[str], percent: float) -> None:
    expected = [assignment.in_holdout(v, percent=percent) for v in values]
    assert assignment.in_holdout_bulk(values, percent=percent).tolist() == expected


@pytest.mark.parametrize("ids", [[], [""], ["", ""], ["", "a", ""]], ids=repr)
def test_assign_bulk__empty_inputs__returns_minus_one_per_empty_id(ids: list[str]) -> None:
    got = assignment.assign_bulk(seed="exp", hash_values=ids, weights=[0.5, 0.5], coverage=1.0)
    assert got.tolist() == [
        -1 if v is None else v for v in (assignment.assign(seed="exp", hash_value=i, weights=[0.5, 0.5]) for i in ids)
    ]
    assert all(g == -1 for g, i in zip(got.tolist(), ids, strict=True) if not i)


def test_assign_bulk__iterables_and_arrays__accepted() -> None:
    ids = [f"cust-{i}" for i in range(100)]
    expected = assignment.assign_bulk(seed="exp", hash_values=ids, weights=[0.5, 0.5]).tolist()
    from_gen = assignment.assign_bulk(seed="exp", hash_values=(i for i in ids), weights=[0.5, 0.5])
    from_np = assignment.assign_bulk(seed="exp", hash_values=np.array(ids), weights=[0.5, 0.5])
    assert from_gen.tolist() == expected
    assert from_np.tolist() == expected


@pytest.mark.parametrize("num_variations", [3, 130, 300], ids=lambda n: f"{n}-variations")
def test_assign_bulk__many_variations__equals_scalar_with_wide_dtype(num_variations: int) -> None:
    weights = assignment.get_equal_weights(num_variations)
    ids = _ids(3_000)
    scalar = [assignment.assign(seed="wide", hash_value=i, weights=weights) for i in ids]
    bulk = assignment.assign_bulk(seed="wide", hash_values=ids, weights=weights)
    assert bulk.dtype == (np.int8 if num_variations <= 127 else np.int16)
    assert bulk.tolist() == [-1 if v is None else v for v in scalar]


# ---------------------------------------------------------------------------
# Range layout / stickiness
# ---------------------------------------------------------------------------

ALL_V2_BUCKETS = np.arange(10_000, dtype=np.float64) / 10_000


@settings(max_examples=200)
@given(
    weights=WEIGHTS,
    coverages=st.tuples(st.floats(0, 1), st.floats(0, 1)).map(sorted),
)
def test_get_bucket_ranges__raising_coverage__never_moves_a_bucket_between_variants(
    weights: list[float], coverages: list[float]
) -> None:
    """Exhaustive over all 10000 v2 buckets: lower coverage => none or same variant."""
    low, high = coverages
    before = assignment.choose_variation_bulk(ALL_V2_BUCKETS, assignment.get_bucket_ranges(len(weights), low, weights))
    after = assignment.choose_variation_bulk(ALL_V2_BUCKETS, assignment.get_bucket_ranges(len(weights), high, weights))
    moved = (before != -1) & (before != after)
    assert not moved.any()


@settings(max_examples=50, deadline=None)
@given(seed=st.text(min_size=1, max_size=20), weights=WEIGHTS)
def test_assign__coverage_0_2_to_0_4__ids_only_join_never_switch(seed: str, weights: list[float]) -> None:
    ids = _ids(2_000)
    before = assignment.assign_bulk(seed=seed, hash_values=ids, weights=weights, coverage=0.2)
    after = assignment.assign_bulk(seed=seed, hash_values=ids, weights=weights, coverage=0.4)
    assert not ((before != -1) & (before != after)).any()
    assert ((before == -1) & (after != -1)).any()  # some ids did join


def test_get_bucket_ranges__negative_weight__falls_back_to_equal_weights() -> None:
    # Documented divergence from the JS SDK, same as the installed Python SDK.
    assert assignment.get_bucket_ranges(2, 1.0, [1.2, -0.2]) == [(0, 0.5), (0.5, 1.0)]
    assert assignment.get_bucket_ranges(2, 1.0, [1.2, -0.2]) == gb_core.getBucketRanges(2, 1.0, [1.2, -0.2])


def test_get_bucket_ranges__nan_coverage__matches_no_bucket() -> None:
    ranges = assignment.get_bucket_ranges(2, math.nan, None)
    assert all(v == -1 for v in assignment.choose_variation_bulk(ALL_V2_BUCKETS, ranges).tolist())


# ---------------------------------------------------------------------------
# assign() contract
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("weights", [[], [1.0]], ids=["no-variations", "one-variation"])
def test_assign__fewer_than_two_variations__raises(weights: list[float]) -> None:
    with pytest.raises(ValueError, match="two variations"):
        assignment.assign(seed="exp", hash_value="cust-1", weights=weights)
    with pytest.raises(ValueError, match="two variations"):
        assignment.assign_bulk(seed="exp", hash_values=["cust-1"], weights=weights)


def test_assign__empty_hash_value__returns_none() -> None:
    assert assignment.assign(seed="exp", hash_value="", weights=[0.5, 0.5]) is None
    assert assignment.assign(seed="exp", hash_value="", weights=[0.5, 0.5], hash_version=1) is None


def test_assign__unknown_hash_version__returns_none() -> None:
    assert assignment.assign(seed="exp", hash_value="cust-1", weights=[0.5, 0.5], hash_version=3) is None


def test_assign__zero_coverage__returns_none_for_everyone() -> None:
    ids = _ids(1_000)
    assert all(assignment.assign(seed="exp", hash_value=i, weights=[0.5, 0.5], coverage=0) is None for i in ids)


def test_assign__weights_as_tuple_or_numpy__same_result() -> None:
    ids = _ids(500)
    as_list = [assignment.assign(seed="exp", hash_value=i, weights=[0.1, 0.9]) for i in ids]
    as_tuple = [assignment.assign(seed="exp", hash_value=i, weights=(0.1, 0.9)) for i in ids]
    as_np = [assignment.assign(seed="exp", hash_value=i, weights=np.array([0.1, 0.9])) for i in ids]
    assert as_list == as_tuple == as_np


# ---------------------------------------------------------------------------
# Holdout
# ---------------------------------------------------------------------------


def test_in_holdout__raising_percent__only_adds_members() -> None:
    ids = _ids(20_000)
    previous = np.zeros(len(ids), dtype=bool)
    for percent in (0, 0.5, 1, 5, 10, 33.33, 50, 99.99, 100):
        current = assignment.in_holdout_bulk(ids, percent=percent)
        assert not (previous & ~current).any()
        previous = current
    assert previous.all()
    assert not assignment.in_holdout_bulk(ids, percent=0).any()


def test_in_holdout__10_percent__holds_out_about_10_percent() -> None:
    share = assignment.in_holdout_bulk(_ids(100_000), percent=10).mean()
    assert share == pytest.approx(0.10, abs=0.005)


def test_in_holdout__experiment_assignment__independent() -> None:
    ids = _ids(100_000)
    holdout = assignment.in_holdout_bulk(ids, percent=20)
    variant = assignment.assign_bulk(seed="checkout-button", hash_values=ids, weights=[0.5, 0.5])
    table = [[int(((variant == v) & (holdout == h)).sum()) for v in (0, 1)] for h in (False, True)]
    assert chi2_contingency(table).pvalue > 0.001


def test_in_holdout__empty_id__never_held_out() -> None:
    assert assignment.in_holdout("", percent=100) is False
    assert assignment.in_holdout_bulk([""], percent=100).tolist() == [False]


@pytest.mark.parametrize("percent", [-1, 100.5, math.nan], ids=str)
def test_in_holdout__percent_outside_0_100__raises(percent: float) -> None:
    with pytest.raises(ValueError, match="percent"):
        assignment.in_holdout("cust-1", percent=percent)
    with pytest.raises(ValueError, match="percent"):
        assignment.in_holdout_bulk(["cust-1"], percent=percent)


# ---------------------------------------------------------------------------
# Module hygiene
# ---------------------------------------------------------------------------


def test_module__imported_alone__does_not_import_django() -> None:
    code = (
        "import sys, experiments.assignment\n"
        "bad = sorted(m for m in sys.modules if m == 'django' or m.startswith('django.'))\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, check=True, timeout=60)
