"""Assignment is a pure function of (seed, id, weights, coverage): the same in
every process, whatever ``PYTHONHASHSEED`` (Python's salted ``hash()`` is never
used), and balanced according to the weights.

One million ids are assigned with the vectorized path in four subprocesses
with different hash seeds; the sha256 of each int8 result must be identical
(and equal to this process's). The same arrays then go through a chi-square
goodness-of-fit test against the configured weights.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest
from scipy.stats import chisquare

from experiments.assignment import assign_bulk

pytestmark = pytest.mark.pure

REPO_ROOT = Path(__file__).resolve().parents[2]
N_IDS = 1_000_000

# name -> (seed, weights, coverage)
CONFIGS: dict[str, tuple[str, list[float], float]] = {
    "50-50": ("checkout-button", [0.5, 0.5], 1.0),
    "3way-equal": ("onboarding-3way", [1 / 3, 1 / 3, 1 / 3], 1.0),
    "10-90": ("pricing-page", [0.1, 0.9], 1.0),
    "10-90-cov0.5": ("pricing-page", [0.1, 0.9], 0.5),
}

# Runs in the subprocesses; the id recipe must match ids() below.
CHILD = """
import hashlib, json, sys
from experiments.assignment import assign_bulk
n = int(sys.argv[1])
configs = json.loads(sys.argv[2])
ids = [f"cust-{i:07d}" for i in range(n)]
out = {}
for name, (seed, weights, coverage) in configs.items():
    arr = assign_bulk(seed=seed, hash_values=ids, weights=weights, coverage=coverage)
    out[name] = [str(arr.dtype), hashlib.sha256(arr.tobytes()).hexdigest()]
print(json.dumps(out))
"""


def ids(n: int) -> list[str]:
    return [f"cust-{i:07d}" for i in range(n)]


@pytest.fixture(scope="module")
def assignments() -> dict[str, npt.NDArray[np.int8]]:
    all_ids = ids(N_IDS)
    return {
        name: assign_bulk(seed=seed, hash_values=all_ids, weights=weights, coverage=coverage)
        for name, (seed, weights, coverage) in CONFIGS.items()
    }


def test_assign_bulk__four_processes_with_different_hashseeds__byte_identical(
    assignments: dict[str, npt.NDArray[np.int8]],
) -> None:
    # Given: four interpreters whose str hashes (and dict/set orders) all differ
    hash_seeds = ["0", "1", "12345", "random"]
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", CHILD, str(N_IDS), json.dumps(CONFIGS)],
            cwd=REPO_ROOT,
            env={**os.environ, "PYTHONHASHSEED": hash_seed, "PYTHONPATH": str(REPO_ROOT)},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for hash_seed in hash_seeds
    ]
    # When
    outputs = []
    for proc in procs:
        stdout, stderr = proc.communicate(timeout=300)
        assert proc.returncode == 0, stderr
        outputs.append(json.loads(stdout))
    # Then: same dtype and sha256 everywhere, including in this process
    here = {name: [str(arr.dtype), hashlib.sha256(arr.tobytes()).hexdigest()] for name, arr in assignments.items()}
    assert all(out == here for out in outputs), (here, outputs)
    assert all(dtype == "int8" for dtype, _ in here.values())


@pytest.mark.parametrize("name", ["50-50", "3way-equal", "10-90"])
def test_assign_bulk__1m_ids__counts_fit_weights_chisquare(
    assignments: dict[str, npt.NDArray[np.int8]], name: str
) -> None:
    _, weights, _ = CONFIGS[name]
    arr = assignments[name]
    assert (arr >= 0).all()  # full coverage: everyone is assigned
    observed = np.bincount(arr, minlength=len(weights))
    expected = np.asarray(weights) * N_IDS
    result = chisquare(observed, f_exp=expected)
    assert result.pvalue > 0.001, (observed.tolist(), result)


def test_assign_bulk__1m_ids_half_coverage__about_half_enrolled_in_weight_ratio(
    assignments: dict[str, npt.NDArray[np.int8]],
) -> None:
    arr = assignments["10-90-cov0.5"]
    enrolled = arr[arr >= 0]
    assert enrolled.size / N_IDS == pytest.approx(0.5, abs=0.005)
    result = chisquare(np.bincount(enrolled, minlength=2), f_exp=np.array([0.1, 0.9]) * enrolled.size)
    assert result.pvalue > 0.001
    # Coverage only drops ids: whoever is enrolled at 50% has the full-coverage variant.
    full = assignments["10-90"]
    assert (full[arr >= 0] == enrolled).all()
