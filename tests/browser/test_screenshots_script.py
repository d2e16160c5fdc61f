"""``scripts/screenshots.py`` against a running server: signs in as the marketer and the
growth user and saves the README's PNGs (the lift report of the experiment with the most
winning cells, the playbook, a dimension, the campaign list, the renewal campaign in the builder)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.browser.conftest import ROOT
from tests.browser.data import campaigns_with_results
from tests.factories import UserFactory

pytestmark = pytest.mark.django_db(transaction=True, serialized_rollback=True)

PASSWORD = "correct-horse-battery-staple"
PNG = b"\x89PNG\r\n\x1a\n"


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "screenshots.py"), *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=180,
    )


def test_screenshots_script__demo_like_data__saves_the_readme_pngs(app_server, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    campaigns_with_results()
    UserFactory(username="mia", groups=["marketer"])
    UserFactory(username="gus", groups=["growth"])
    done = _run(
        "--base-url", app_server, "--marketer", f"mia:{PASSWORD}", "--growth", f"gus:{PASSWORD}", "--out", str(tmp_path)
    )
    assert done.returncode == 0, done.stderr
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["builder.png", "campaigns.png", "dimension.png", "lift-report.png", "tier-playbook.png"]
    for path in tmp_path.iterdir():
        assert path.read_bytes().startswith(PNG) and path.stat().st_size > 20_000, path.name
    # The win-back campaign wins overall and in one RFM tier; the renewal in one window.
    assert "lift report of experiment winback-recall" in done.stdout
    assert done.stdout.count(".png") == 5


def test_screenshots_script__wrong_password__says_so(app_server, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    done = _run("--base-url", app_server, "--marketer", "nobody:nope", "--out", str(tmp_path))
    assert done.returncode == 1
    assert "cannot sign in as 'nobody'" in done.stderr
