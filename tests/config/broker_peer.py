"""A producer or consumer process on the embedded broker, for tests/config/test_broker.py.

    python tests/config/broker_peer.py produce ROOT TRANSPORT NAME COUNT SIZE
    python tests/config/broker_peer.py consume ROOT TRANSPORT NAME [--no-ack-first]

A consumer appends each message id it acknowledges to ROOT/received-NAME.txt (one line,
flushed) and stops after IDLE seconds without a message once ROOT/done exists. With
``--no-ack-first`` it takes one message, writes its id to ROOT/held-NAME.txt and sleeps
without acknowledging it (the test kills it).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from kombu import Connection

IDLE = 3.0


def connection(root: Path, transport: str) -> Connection:
    folders = {n: root / n for n in ("queue", "processed", "control")}
    for folder in folders.values():
        folder.mkdir(parents=True, exist_ok=True)
    return Connection(
        "filesystem://",
        transport=transport,
        transport_options={
            "data_folder_in": str(folders["queue"]),
            "data_folder_out": str(folders["queue"]),
            "processed_folder": str(folders["processed"]),
            "control_folder": str(folders["control"]),
            "polling_interval": 0.001,
        },
    )


def produce(root: Path, transport: str, name: str, count: int, size: int) -> None:
    padding = "x" * size
    with connection(root, transport) as conn:
        queue = conn.SimpleQueue("work")
        for i in range(count):
            queue.put({"id": f"{name}-{i}", "padding": padding})
        queue.close()


def consume(root: Path, transport: str, name: str, hold_first: bool) -> None:
    with connection(root, transport) as conn:
        queue = conn.SimpleQueue("work")
        if hold_first:
            message = queue.get(timeout=30)
            (root / f"held-{name}.txt").write_text(message.payload["id"])
            time.sleep(120)
            return
        with open(root / f"received-{name}.txt", "a") as out:
            idle_since = time.monotonic()
            while True:
                try:
                    message = queue.get(timeout=0.2)
                except queue.Empty:
                    if (root / "done").exists() and time.monotonic() - idle_since > IDLE:
                        return
                    continue
                idle_since = time.monotonic()
                out.write(message.payload["id"] + "\n")
                out.flush()
                message.ack()


if __name__ == "__main__":
    role, root, transport, name = sys.argv[1], Path(sys.argv[2]), sys.argv[3], sys.argv[4]
    if role == "produce":
        produce(root, transport, name, int(sys.argv[5]), int(sys.argv[6]))
    else:
        consume(root, transport, name, hold_first="--no-ack-first" in sys.argv)
