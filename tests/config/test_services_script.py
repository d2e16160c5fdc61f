"""scripts/services.sh: as root, PostgreSQL runs as 'postgres', which must reach its data folder."""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

pytestmark = [
    pytest.mark.pure,
    pytest.mark.skipif(
        os.geteuid() != 0 or shutil.which("runuser") is None, reason="as root only, with runuser (util-linux)"
    ),
]


def _postgres_user_exists() -> bool:
    try:
        pwd.getpwnam("postgres")
    except KeyError:
        return False
    return True


def _pg_datadir(services: Path) -> Path:
    result = subprocess.run(
        [str(ROOT / "scripts" / "services.sh"), "pg-datadir"],
        env={**os.environ, "GROWTH_SERVICES_DIR": str(services)},
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    return Path(result.stdout.strip())


@pytest.fixture
def shared_tmp() -> Iterator[Path]:
    # pytest's tmp_path sits under /tmp/pytest-of-root (mode 700): not reachable by postgres.
    folder = Path(tempfile.mkdtemp(dir="/var/tmp", prefix="growth-test-"))
    folder.chmod(0o755)
    yield folder
    shutil.rmtree(folder)


@pytest.mark.skipif(not _postgres_user_exists(), reason="needs the postgres user (Debian's postgresql)")
def test_services_pg_datadir__checkout_private_to_root__cluster_placed_where_postgres_can_reach(
    shared_tmp: Path,
) -> None:
    # Given: a checkout inside a folder of mode 700 (as /root is)
    private = shared_tmp / "root-home"
    private.mkdir(mode=0o700)
    services = private / "checkout" / "var" / "services"

    # When
    datadir = _pg_datadir(services)

    # Then: not under the private folder, but a per-checkout folder postgres can enter
    assert not datadir.is_relative_to(private)
    assert datadir.parent.name.startswith("growth-pg-") and datadir.parent.parent == Path("/var/tmp")
    assert _pg_datadir(services) == datadir
    assert _pg_datadir(private / "other" / "services") != datadir


@pytest.mark.skipif(not _postgres_user_exists(), reason="needs the postgres user (Debian's postgresql)")
def test_services_pg_datadir__checkout_reachable__cluster_under_var_services(shared_tmp: Path) -> None:
    services = shared_tmp / "checkout" / "var" / "services"
    assert _pg_datadir(services) == services / "pg"
