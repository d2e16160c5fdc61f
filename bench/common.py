"""Small helpers shared by the benchmarks: JSON results, timing, a subprocess's peak RSS,
a throwaway database on the shared PostgreSQL server, a gunicorn on loopback.

Every benchmark prints one JSON document on stdout and saves it under bench/results/.
Benchmarks use their own database (``bench_<name>``) on the server that
``scripts/services.sh`` runs, and drop it when they finish.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import platform
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
PYTHON = sys.executable


def _server() -> tuple[str, int, str, str, int]:
    """The benchmark servers: ``DATABASE_URL``'s PostgreSQL server (host, port, user,
    password) when it names one (``scripts/bench.sh`` exports it), else ``PG_PORT`` on
    loopback (``scripts/services.sh``'s port, 54329 by default); Redis from
    ``CELERY_BROKER_URL``'s port, else ``REDIS_PORT`` (63799)."""
    host, port, user, password = "127.0.0.1", int(os.environ.get("PG_PORT", 54329)), "growth", "growth"
    url = os.environ.get("DATABASE_URL", "")
    if url.startswith(("postgres://", "postgresql://", "pgsql://")):
        parts = urlsplit(url)
        host, port = parts.hostname or host, parts.port or port
        user, password = unquote(parts.username or user), unquote(parts.password or password)
    redis_port = int(os.environ.get("REDIS_PORT", 63799))
    broker = os.environ.get("CELERY_BROKER_URL", "")
    if broker.startswith("redis://"):
        redis_port = urlsplit(broker).port or redis_port
    return host, port, user, password, redis_port


PG_HOST, PG_PORT, PG_USER, PG_PASSWORD, REDIS_PORT = _server()


def log(message: str) -> None:
    """Progress goes to stderr; stdout carries only the JSON result."""
    print(f"[{dt.datetime.now():%H:%M:%S}] {message}", file=sys.stderr, flush=True)


def emit(name: str, result: Mapping[str, Any], *, save: bool = True) -> Path | None:
    """Print the result as JSON and save it as bench/results/<name>.json."""
    text = json.dumps(result, indent=2, sort_keys=False, default=str)
    print(text)
    if not save:
        return None
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(text + "\n")
    return path


@contextlib.contextmanager
def timed() -> Iterator[dict[str, float]]:
    """``with timed() as t: ...`` then ``t["seconds"]``."""
    box: dict[str, float] = {}
    started = time.perf_counter()
    try:
        yield box
    finally:
        box["seconds"] = time.perf_counter() - started


def machine() -> dict[str, Any]:
    """What the numbers were measured on, including how busy the machine was."""
    load1, load5, load15 = os.getloadavg()
    return {
        "when": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "cpus": os.cpu_count(),
        "load_average": [round(load1, 2), round(load5, 2), round(load15, 2)],
        "python": platform.python_version(),
        "platform": platform.platform(),
    }


@dataclass(frozen=True)
class Measured:
    returncode: int
    seconds: float
    cpu_seconds: float  # user + system time of the process itself
    peak_rss_mb: float
    stdout: str
    stderr: str


def run_measured(
    args: Sequence[str], *, env: Mapping[str, str] | None = None, cwd: Path = ROOT, timeout: float = 3600
) -> Measured:
    """Run a command; return its wall time and its own peak resident memory (``wait4``
    reports the child's ``ru_maxrss``, in KiB on Linux)."""
    out_path, err_path = Path(f"/tmp/bench-{os.getpid()}.out"), Path(f"/tmp/bench-{os.getpid()}.err")
    with out_path.open("wb") as out, err_path.open("wb") as err:
        started = time.perf_counter()
        process = subprocess.Popen(list(args), cwd=cwd, env=dict(env) if env else None, stdout=out, stderr=err)
        deadline = started + timeout
        while True:
            pid, status, usage = os.wait4(process.pid, os.WNOHANG)
            if pid:
                break
            if time.perf_counter() > deadline:
                process.kill()
                pid, status, usage = os.wait4(process.pid, 0)
                break
            time.sleep(0.05)
        seconds = time.perf_counter() - started
    process.returncode = os.waitstatus_to_exitcode(status)
    result = Measured(
        returncode=process.returncode,
        seconds=seconds,
        cpu_seconds=usage.ru_utime + usage.ru_stime,
        peak_rss_mb=usage.ru_maxrss / 1024,
        stdout=out_path.read_text(errors="replace"),
        stderr=err_path.read_text(errors="replace"),
    )
    out_path.unlink(missing_ok=True)
    err_path.unlink(missing_ok=True)
    return result


def database_url(name: str) -> str:
    return f"postgres://{PG_USER}:{PG_PASSWORD}@{PG_HOST}:{PG_PORT}/{name}"


def ensure_services() -> None:
    """Start the project's PostgreSQL + Redis (``scripts/services.sh``, on ``PG_PORT`` /
    ``REDIS_PORT``) if they are not running (never stops them). A server named by
    ``DATABASE_URL`` that already answers is used as it is."""
    if os.environ.get("DATABASE_URL", "").startswith(("postgres", "pgsql")) and _answers(PG_HOST, PG_PORT):
        return
    env = {**os.environ, "PG_PORT": str(PG_PORT), "REDIS_PORT": str(REDIS_PORT)}
    script = str(ROOT / "scripts" / "services.sh")
    if subprocess.run([script, "status"], cwd=ROOT, env=env, capture_output=True).returncode != 0:
        subprocess.run([script, "start"], cwd=ROOT, env=env, check=True, capture_output=True)


def _answers(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=2):
            return True
    except OSError:
        return False


def require_tool(command: str, *, package: str) -> str:
    """The path of ``command``; when missing, install Debian's ``package`` with
    ``scripts/system-deps.sh`` (as ``make test`` does), or fail saying what to install."""
    found = shutil.which(command)
    if found is None:
        log(f"{command} is missing: installing Debian's {package} (scripts/system-deps.sh)")
        subprocess.run([str(ROOT / "scripts" / "system-deps.sh")], cwd=ROOT, check=False)
        found = shutil.which(command)
    if found is None:
        raise SystemExit(f"{command} is required: apt-get install {package} (or run scripts/system-deps.sh as root)")
    return found


def _admin_connection() -> Any:
    import psycopg

    return psycopg.connect(
        host=PG_HOST, port=PG_PORT, user=PG_USER, password=PG_PASSWORD, dbname="postgres", autocommit=True
    )


@contextlib.contextmanager
def bench_database(name: str, *, keep: bool = False) -> Iterator[str]:
    """A fresh database ``bench_<name>`` (dropped and recreated, a copy of
    ``BENCH_TEMPLATE_DB`` when that is set), yielding its URL; dropped again afterwards
    unless ``keep``."""
    db = f"bench_{name}"
    # BENCH_TEMPLATE_DB (set by bench/scaling.py): copy an already migrated database instead
    # of starting empty, so each of its many databases skips the ~40 s of migrations.
    template = os.environ.get("BENCH_TEMPLATE_DB", "")
    with _admin_connection() as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{db}"' + (f' TEMPLATE "{template}"' if template else ""))
    try:
        yield database_url(db)
    finally:
        if not keep:
            with _admin_connection() as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')


def django_env(database: str, **extra: str) -> dict[str, str]:
    """Production-like settings for subprocesses (manage.py, gunicorn) on ``database``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "DATABASE_", "CELERY_", "CACHE_"))}
    env.update(
        DJANGO_SETTINGS_MODULE="config.settings",
        DJANGO_SECRET_KEY="bench-only-secret-" + "b" * 40,
        DJANGO_DEBUG="false",
        DJANGO_ALLOWED_HOSTS="127.0.0.1,localhost",
        DJANGO_SECURE_SSL_REDIRECT="false",
        DJANGO_SECURE_COOKIES="false",
        DJANGO_SECURE_HSTS_SECONDS="0",
        DATABASE_URL=database,
        CACHE_URL="locmemcache://",
        CELERY_BROKER_URL=f"redis://127.0.0.1:{REDIS_PORT}/15",
        LOG_LEVEL="WARNING",
    )
    env.update(extra)
    return env


def manage(*args: str, env: Mapping[str, str], check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run([PYTHON, "manage.py", *args], cwd=ROOT, env=dict(env), capture_output=True, text=True)
    if check and result.returncode != 0:
        raise RuntimeError(f"manage.py {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}")
    return result


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def gunicorn(env: Mapping[str, str], *, workers: int = 2, timeout: float = 30) -> Iterator[str]:
    """gunicorn serving config.wsgi on a free loopback port; yields its base URL."""
    port = free_port()
    process = subprocess.Popen(
        [str(Path(PYTHON).with_name("gunicorn")), "config.wsgi", "--bind", f"127.0.0.1:{port}",
         "--workers", str(workers), "--timeout", "120", "--log-level", "warning"],
        cwd=ROOT, env=dict(env), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                with urllib.request.urlopen(f"{base}/healthz", timeout=2) as response:
                    if response.status == 200:
                        break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(
                        f"gunicorn did not start: {process.stderr.read().decode() if process.stderr else ''}"
                    ) from None
                time.sleep(0.2)
        yield base
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
