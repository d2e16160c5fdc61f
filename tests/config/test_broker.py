"""The embedded broker (config.broker) under concurrent producer and consumer processes.

Each test runs real processes (tests/config/broker_peer.py) on a broker folder of its own.
``TRANSPORT`` is the transport the settings select on the embedded default; setting it to
kombu's own (``kombu.transport.filesystem:Transport``) shows what these tests catch: a
consumer reading a half-written file dies on JSONDecodeError, and a consumer killed after
taking a message loses it.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

PEER = Path(__file__).with_name("broker_peer.py")
TRANSPORT = os.environ.get("GROWTH_TEST_BROKER_TRANSPORT", "config.broker:Transport")
ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.pure


def _peer(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, str(PEER), *args],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _finish(process: subprocess.Popen[str], timeout: float = 90) -> None:
    try:
        _, err = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        _, err = process.communicate()
        pytest.fail(f"{process.args} did not finish: {err[-2000:]}")
    assert process.returncode == 0, err[-3000:]


def _received(root: Path) -> list[str]:
    return [line for f in sorted(root.glob("received-*.txt")) for line in f.read_text().splitlines()]


def test_broker__three_producer_and_two_consumer_processes__every_message_once_no_crash(tmp_path: Path) -> None:
    # Given: two consumer processes polling the queue as fast as they can
    consumers = [_peer("consume", str(tmp_path), TRANSPORT, f"c{i}") for i in range(2)]
    # When: three producer processes publish 150 messages of 256 KB each at the same time
    # (large bodies widen the moment a file is being written, which is when kombu's
    # transport lets a consumer read it)
    producers = [_peer("produce", str(tmp_path), TRANSPORT, f"p{i}", "150", str(256 * 1024)) for i in range(3)]
    for producer in producers:
        _finish(producer)
    (tmp_path / "done").touch()
    for consumer in consumers:
        _finish(consumer)

    # Then: both consumers lived to the end, and every message was received exactly once
    received = _received(tmp_path)
    expected = {f"p{p}-{i}" for p in range(3) for i in range(150)}
    assert len(received) == len(set(received)), "a message was delivered twice"
    assert set(received) == expected, f"{len(expected - set(received))} message(s) lost"
    assert not list((tmp_path / "queue").iterdir())


def test_broker__consumer_killed_holding_an_unacked_message__next_consumer_receives_it(tmp_path: Path) -> None:
    # Given: 20 messages, and a consumer that took one and has not acknowledged it
    _finish(_peer("produce", str(tmp_path), TRANSPORT, "p", "20", "10"))
    holder = _peer("consume", str(tmp_path), TRANSPORT, "holder", "--no-ack-first")
    held_file = tmp_path / "held-holder.txt"
    deadline = time.monotonic() + 30
    while not held_file.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    held = held_file.read_text()

    # When: it is killed with SIGKILL, and another consumer starts
    holder.send_signal(signal.SIGKILL)
    holder.wait(timeout=10)
    (tmp_path / "done").touch()
    _finish(_peer("consume", str(tmp_path), TRANSPORT, "next"))

    # Then: the other consumer received all 20, the killed one's message included
    received = _received(tmp_path)
    assert held in received
    assert sorted(received) == sorted(f"p-{i}" for i in range(20))
