"""`make bench`'s quick mode: every benchmark script starts, and a quick run writes its JSON
under the quick folder, never over bench/results/."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bench.common import ROOT

BENCH_SH = ROOT / "scripts" / "bench.sh"


def _bench_names() -> list[str]:
    """The names scripts/bench.sh runs when given none (its ``all`` list)."""
    text = BENCH_SH.read_text()
    start = text.index("all=(") + len("all=(")
    return text[start : text.index(")", start)].split()


@pytest.mark.pure
def test_bench_sh__all_list__names_every_benchmark_script() -> None:
    # Every bench/*.py that is a benchmark (not a helper module, not the hour-long soak)
    # is in `make bench`'s list.
    helpers = {"__init__", "common", "assignment_inprocess", "assignment_settings", "assignment_urls", "demo_soak"}
    scripts = {path.stem for path in (ROOT / "bench").glob("*.py")} - helpers
    names = {name.removesuffix("_pgbouncer") for name in _bench_names()}
    assert scripts <= names, f"not run by make bench: {sorted(scripts - names)}"


@pytest.mark.pure
@pytest.mark.parametrize("script", sorted({n.removesuffix("_pgbouncer") for n in _bench_names()}))
def test_bench_script__help__starts_and_accepts_no_save(script: str) -> None:
    # Quick runs pass --no-save so that bench/results/ keeps the reported measurements.
    result = subprocess.run(
        [sys.executable, str(ROOT / "bench" / f"{script}.py"), "--help"],
        cwd=ROOT, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    assert "--no-save" in result.stdout


@pytest.mark.pure
def test_bench_sh__quick_simulation__json_in_quick_dir_results_untouched(tmp_path: Path) -> None:
    # values_decisions needs no server, so no PostgreSQL is started for it.
    results = ROOT / "bench" / "results" / "values_decisions.json"
    before = results.read_bytes()
    # Ports and folder nobody uses: starting a server here would fail the test.
    env = {**os.environ, "BENCH_QUICK_DIR": str(tmp_path), "GROWTH_SERVICES_DIR": str(tmp_path / "services"),
           "PG_PORT": "1", "REDIS_PORT": "1"}  # fmt: skip
    result = subprocess.run(
        [str(BENCH_SH), "--quick", "values_decisions"], cwd=ROOT, env=env, capture_output=True, text=True,
        timeout=300, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    written = json.loads((tmp_path / "values_decisions.json").read_text())
    assert written["benchmark"] == "values_decisions"
    assert written["sims"] < 2000  # the quick size, not the full one
    assert results.read_bytes() == before
    assert not (tmp_path / "services").exists()


@pytest.mark.pure
def test_bench_sh__unknown_name__exit_2_before_starting_anything(tmp_path: Path) -> None:
    env = {**os.environ, "BENCH_QUICK_DIR": str(tmp_path / "quick"), "GROWTH_SERVICES_DIR": str(tmp_path / "services"),
           "PG_PORT": "1", "REDIS_PORT": "1"}  # fmt: skip
    result = subprocess.run(
        [str(BENCH_SH), "--quick", "no_such_bench"], cwd=ROOT, env=env, capture_output=True, text=True,
        timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 2
    assert "no_such_bench" in result.stderr
    assert not any(tmp_path.iterdir())
