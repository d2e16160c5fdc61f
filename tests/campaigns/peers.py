"""Real local peers for the campaign tests and the delivery benchmark: an SMTP server
(aiosmtpd), an HTTP provider (http.server in a thread), a private redis-server and a real
Celery worker process. Nothing here is a mock: each peer speaks its real protocol on
loopback, and counts what it received by delivery key."""

from __future__ import annotations

import collections
import contextlib
import json
import logging
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
KEY_HEADER = re.compile(rb"^X-Delivery-Key: *(\S+)", re.MULTILINE | re.IGNORECASE)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until(predicate: Any, *, timeout: float, interval: float = 0.1, message: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {message}")


# --- SMTP -------------------------------------------------------------------------------


class SmtpSink:
    """An aiosmtpd server that counts every message it accepts, by ``X-Delivery-Key``.

    ``received`` counts raw acceptances per key (a resend of the same key counts twice);
    ``unique`` is the set of keys; ``refuse`` makes it answer with an SMTP code.

    It advertises ``PIPELINING`` (RFC 2920) in its EHLO answer, as production MTAs
    (Postfix, Exim, the big providers) do; aiosmtpd reads commands from its stream one at a
    time, so pipelined commands are answered in order. ``pipelining=False`` leaves the
    extension out (a server the client must talk to one command at a time)."""

    def __init__(self, *, pipelining: bool = True) -> None:
        from aiosmtpd.controller import Controller

        logging.getLogger("mail.log").setLevel(logging.WARNING)  # aiosmtpd logs every command at INFO
        self.lock = threading.Lock()
        self.received: collections.Counter[str] = collections.Counter()
        self.messages: list[bytes] = []
        self.keep_messages = True
        self.refuse: dict[str, str] = {}  # recipient → SMTP reply, e.g. "550 no such user"
        self.pipelining = pipelining
        self.ehlo_extensions: list[str] = []
        # Called with the delivery key in the server's thread before each "250" (acceptance).
        self.before_accept: Callable[[str], None] | None = None
        self.port = free_port()
        self.controller = Controller(self, hostname="127.0.0.1", port=self.port)

    async def handle_EHLO(
        self, server: Any, session: Any, envelope: Any, hostname: str, responses: list[str]
    ) -> list[str]:
        session.host_name = hostname
        if self.pipelining:
            responses = [*responses[:-1], "250-PIPELINING", responses[-1]]
        self.ehlo_extensions = [r[4:] for r in responses[1:]]
        return responses

    async def handle_RCPT(self, server: Any, session: Any, envelope: Any, address: str, rcpt_options: Any) -> str:
        reply = self.refuse.get(address)
        if reply:
            return reply
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        data = envelope.original_content or envelope.content
        match = KEY_HEADER.search(data[:4096])
        key = match.group(1).decode() if match else ""
        if self.before_accept is not None:
            self.before_accept(key)
        with self.lock:
            self.received[key] += 1
            if self.keep_messages:
                self.messages.append(data)
        return "250 Message accepted"

    @property
    def unique(self) -> set[str]:
        with self.lock:
            return set(self.received)

    @property
    def total(self) -> int:
        with self.lock:
            return sum(self.received.values())

    def duplicates(self) -> dict[str, int]:
        with self.lock:
            return {k: n for k, n in self.received.items() if n > 1}

    def start(self) -> SmtpSink:
        self.controller.start()
        return self

    def stop(self) -> None:
        self.controller.stop()


# --- HTTP provider ----------------------------------------------------------------------


class HttpProvider:
    """A provider API on loopback honouring ``Idempotency-Key``: a key delivered once is
    not delivered again (the answer is replayed), like a real provider. ``script`` queues
    answers ``(status, headers)`` per key (or for any key under ``"*"``); the default is 200.
    Every request is recorded with its arrival time."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.requests: list[dict[str, Any]] = []
        self.delivered: collections.Counter[str] = collections.Counter()
        self.script: dict[str, list[tuple[int, dict[str, str]]]] = collections.defaultdict(list)
        provider = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                body = json.loads(self.rfile.read(length) or b"{}")
                key = self.headers.get("Idempotency-Key", "")
                status, headers = provider._answer(key, body, dict(self.headers), self.path)
                payload = json.dumps({"id": f"msg-{key}"} if status < 300 else {"error": status}).encode()
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

        self.port = free_port()
        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1/messages"

    def _answer(self, key: str, body: dict[str, Any], headers: dict[str, str], path: str) -> tuple[int, dict[str, str]]:
        with self.lock:
            self.requests.append({"key": key, "body": body, "headers": headers, "path": path, "at": time.time()})
            queue = self.script.get(key) or self.script.get("*")
            status, extra = queue.pop(0) if queue else (200, {})
            if 200 <= status < 300:
                self.delivered[key] += 1
            return status, extra

    def attempts(self, key: str) -> list[dict[str, Any]]:
        with self.lock:
            return [r for r in self.requests if r["key"] == key]

    @property
    def unique_delivered(self) -> set[str]:
        with self.lock:
            return set(self.delivered)

    def start(self) -> HttpProvider:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


# --- Redis ------------------------------------------------------------------------------


class PrivateRedis:
    """A redis-server of our own on a free port (never the shared one): fault tests stop and
    start it. Append-only persistence keeps queued messages across a restart."""

    def __init__(self) -> None:
        self.port = free_port()
        self.dir = tempfile.mkdtemp(prefix="campaigns-redis-")
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> PrivateRedis:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("redis-server is not installed")
        self.process = subprocess.Popen(
            [
                binary,
                "--bind",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--dir",
                self.dir,
                "--save",
                "",
                "--appendonly",
                "yes",
                "--appendfsync",
                "everysec",
                "--protected-mode",
                "yes",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_until(self.ping, timeout=10, message="redis-server to start")
        return self

    def ping(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(timeout=10)
            self.process = None
        wait_until(lambda: not self.ping(), timeout=5, message="redis-server to stop")

    def cleanup(self) -> None:
        with contextlib.suppress(Exception):
            self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


# --- Celery worker ----------------------------------------------------------------------


class Worker:
    """``celery -A config worker`` as a real process group, started with its own environment."""

    def __init__(
        self, env: dict[str, str], *, concurrency: int = 2, name: str = "campaigns-test", queues: str = ""
    ) -> None:
        self.env = env
        self.concurrency = concurrency
        self.queues = queues  # ``-Q``: comma-separated queues; "" consumes every queue (config/queues.py)
        self.name = name
        self.log_path = Path(tempfile.mkstemp(prefix="campaigns-worker-", suffix=".log")[1])
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, *, wait: bool = True) -> Worker:
        log = self.log_path.open("ab")
        self._mark = self.log_path.stat().st_size
        self.process = subprocess.Popen(
            [
                str(ROOT / ".venv/bin/celery"),
                "-A",
                "config",
                "worker",
                "--concurrency",
                str(self.concurrency),
                "--hostname",
                f"{self.name}@%h",
                "--loglevel",
                "INFO",
                "--without-gossip",
                "--without-mingle",
                "--without-heartbeat",
                *(["--queues", self.queues] if self.queues else []),
            ],
            cwd=ROOT,
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        if wait:
            wait_until(self.ready, timeout=60, interval=0.2, message=f"worker ready (log {self.log_path})")
        return self

    def ready(self) -> bool:
        if self.process is not None and self.process.poll() is not None:
            raise AssertionError(f"worker exited with {self.process.returncode}: {self.log()[-3000:]}")
        with self.log_path.open("rb") as handle:
            handle.seek(self._mark)
            marker = f"{self.name}@".encode()
            return any(marker in line and b' ready."' in line for line in handle.read().splitlines())

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def kill9(self) -> None:
        """SIGKILL the whole worker (main process and pool children), as a crashed host would."""
        if self.process is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)
            # The pool processes too: SIGKILL is delivered at once, but a process on a busy
            # machine may take a moment to exit. Zombies count as gone (nothing runs).
            deadline = time.monotonic() + 10
            while _group_running(self.process.pid) and time.monotonic() < deadline:
                time.sleep(0.05)
            self.process = None

    def stop(self) -> None:
        if self.process is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.kill9()
        self.process = None


def database_url(settings_db: dict[str, Any]) -> str:
    return (
        f"postgres://{settings_db['USER']}:{settings_db['PASSWORD']}@{settings_db['HOST']}:"
        f"{settings_db['PORT']}/{settings_db['NAME']}"
    )


@contextlib.contextmanager
def celery_broker(url: str) -> Iterator[None]:
    """Point this process's Celery app (the producer side) at ``url`` for the block."""
    from config.celery import app

    names = ("broker_url", "broker_read_url", "broker_write_url")
    previous = {name: app.conf[name] for name in names}
    for name in names:
        app.conf[name] = url
    app._after_fork()  # drop the connection and producer pools built for the old URL
    try:
        yield
    finally:
        for name, value in previous.items():
            app.conf[name] = value
        app._after_fork()


def _group_running(pgid: int) -> bool:
    """Whether a process of group ``pgid`` still runs (not a zombie), from /proc."""
    for entry in os.listdir("/proc") if os.path.isdir("/proc") else []:
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as handle:
                fields = handle.read().rsplit(b")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[2]) == pgid and fields[0] not in (b"Z", b"X"):
            return True
    return False
