"""The embedded default's Celery broker: kombu's filesystem transport, made safe for
concurrent processes and for a consumer killed mid-delivery.

Why a subclass and not kombu's transport as it is (kombu 5.7, ``kombu/transport/filesystem.py``):

- ``Channel._put`` creates the message file in the queue folder, then locks it, then writes.
  ``Channel._get`` takes no lock: it lists the folder, moves the file away and reads it. A
  consumer that lists the folder between the producer's ``open()`` and its ``write()`` gets
  an empty or partial file, and ``loads()`` raises ``JSONDecodeError`` out of the worker's
  consumer: Celery logs "Unrecoverable error" and the worker exits (``make demo``'s worker
  died so in 2 of 3 runs). With ``store_processed`` off, the file is moved into the system
  temporary folder, which may be another file system: ``shutil.move`` then copies a file the
  producer may still be writing.
- The exchange table (``control/<exchange>.exchange``) is rewritten in place: a new table is
  truncated before its lock is taken, so a publisher reading it can see an empty file too.
- A message is deleted from disk as soon as it is read; kombu keeps the only copy in the
  consumer's memory until the task acknowledges it. A worker killed with SIGKILL (the OOM
  killer, a crash) loses every message it had taken but not acknowledged.

What this transport does instead (same folders, same file names, same JSON payloads; a
queue written by kombu's transport is read by this one):

- **Writes are atomic**: a message (and an exchange table) is written to a temporary file in
  ``staging/`` on the same file system and moved into place with ``os.replace``, so a reader
  sees no file or the whole file, never part of one.
- **Takes are atomic**: a consumer claims a message by ``os.rename`` into its own
  ``processing/<consumer>/`` folder; a rename succeeds for exactly one consumer. A file that
  still does not parse is moved to ``corrupt/`` and logged, never raised into the worker.
- **Nothing taken is lost**: the claimed file stays in ``processing/<consumer>/`` until the
  message is acknowledged (deleted then), rejected or restored at shutdown (moved back to
  the queue). Each consumer holds an exclusive ``flock`` on ``processing/<consumer>.lock``
  for its life; the kernel releases it when the process dies however it dies. Every consumer
  checks the other consumers' locks when it starts and every ``RECOVER_EVERY_SECONDS``: a
  lock it can take belongs to a dead consumer, whose claimed messages it moves back into the
  queue. Redelivery is safe because every task here is idempotent (``acks_late``).

Hand-written because kombu's other embedded transports do not fit: ``memory://`` is one
process only, and the SQLAlchemy transport on SQLite would contend for the database's single
write lock with the application itself.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import threading
import time
import uuid
from pathlib import Path
from queue import Empty
from typing import Any

from kombu.transport import filesystem, virtual
from kombu.utils.encoding import bytes_to_str, str_to_bytes
from kombu.utils.json import dumps, loads

logger = logging.getLogger(__name__)

RECOVER_EVERY_SECONDS = 10.0


def _atomic_write(path: Path, data: bytes, staging: Path) -> None:
    """Write ``data`` to ``path`` so that no reader ever sees a partial file.

    No fsync: the race this closes is between processes, which share the page cache; a
    power cut may still lose the last messages, as it would with Redis's ``appendfsync
    everysec``."""
    tmp = staging / f"{uuid.uuid4().hex}.tmp"
    with open(tmp, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


class _Claims:
    """This process's claim folder and the lock that says it is alive (one per process:
    a forked child gets its own, see ``for_root``). A child forked after the lock was taken
    shares it (flock belongs to the open file, which fork shares), so a consumer's claims
    are put back only once it and such children are all gone: scripts/demo.sh stops the
    worker's whole process group when the worker dies."""

    _lock = threading.Lock()
    _by_pid: dict[tuple[int, str], _Claims] = {}

    def __init__(self, root: Path) -> None:
        self.root = root
        self.name = f"{os.getpid()}-{uuid.uuid4().hex[:12]}"
        self.folder = root / self.name
        root.mkdir(parents=True, exist_ok=True)
        # Lock under a temporary name, then rename into place: a recoverer scanning for
        # ``*.lock`` can never find the file before it is locked and take it for a dead one.
        tmp = root / f".{self.name}.locking"
        self._lock_file = open(tmp, "a+b")
        fcntl.flock(self._lock_file.fileno(), fcntl.LOCK_EX)
        self.folder.mkdir(exist_ok=True)
        os.replace(tmp, root / f"{self.name}.lock")

    @classmethod
    def for_root(cls, root: Path) -> _Claims:
        key = (os.getpid(), str(root))
        with cls._lock:
            claims = cls._by_pid.get(key)
            if claims is None:
                claims = cls._by_pid[key] = cls(root)
            return claims


def recover_dead_consumers(*, processing: Path, queue_folder: Path, own: str | None = None) -> int:
    """Move the messages claimed by consumers that no longer hold their lock back into the
    queue folder; return how many."""
    moved = 0
    try:
        names = os.listdir(processing)
    except FileNotFoundError:
        return 0
    for entry in names:
        if not entry.endswith(".lock") or entry.startswith("."):
            continue
        name = entry[: -len(".lock")]
        if name == own:
            continue
        lock_path = processing / entry
        try:
            f = open(lock_path, "r+b")  # not "a": never re-create a lock another recoverer removed
        except FileNotFoundError:
            continue
        with f:
            try:
                fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                continue  # alive
            folder = processing / name
            for message in sorted(os.listdir(folder)) if folder.is_dir() else []:
                with contextlib.suppress(FileNotFoundError):
                    os.rename(folder / message, queue_folder / message)
                    moved += 1
            with contextlib.suppress(OSError):
                folder.rmdir()
            with contextlib.suppress(FileNotFoundError):
                lock_path.unlink()
    if moved:
        logger.warning("broker: %d message(s) claimed by a consumer that died were put back in the queue", moved)
    return moved


class QoS(virtual.QoS):
    """Deletes a claimed message's file when it is acknowledged, not when it is read."""

    def ack(self, delivery_tag: str) -> None:
        super().ack(delivery_tag)
        self.channel._claim_done(delivery_tag, requeue=False)

    def reject(self, delivery_tag: str, requeue: bool = False) -> None:
        # kombu's reject(requeue=True) publishes a copy; the claimed file is then dropped.
        super().reject(delivery_tag, requeue=requeue)
        self.channel._claim_done(delivery_tag, requeue=False)

    def restore_unacked(self) -> list[Any]:
        """At shutdown: move every claimed file back into the queue (rather than publishing
        copies, so a crash in the middle cannot leave both a copy and the claim)."""
        self._flush()
        for delivery_tag in list(self._delivered):
            self.channel._claim_done(delivery_tag, requeue=True)
        self._delivered.clear()
        return []


class Channel(filesystem.Channel):
    QoS = QoS

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._claimed: dict[str, Path] = {}
        self._recovered_at = 0.0
        for folder in (self.staging_folder, self.corrupt_folder):
            folder.mkdir(parents=True, exist_ok=True)

    # --- folders ---------------------------------------------------------------------------
    @property
    def _root(self) -> Path:
        return Path(self.data_folder_in).parent

    @property
    def staging_folder(self) -> Path:
        return Path(self.transport_options.get("staging_folder") or self._root / "staging")

    @property
    def processing_folder(self) -> Path:
        return Path(self.transport_options.get("processing_folder") or self._root / "processing")

    @property
    def corrupt_folder(self) -> Path:
        return Path(self.transport_options.get("corrupt_folder") or self._root / "corrupt")

    # --- messages --------------------------------------------------------------------------
    def _put(self, queue: str, payload: Any, **kwargs: Any) -> None:
        # kombu's name: milliseconds, then a uuid, then the queue; sorted names are FIFO.
        name = f"{round(time.monotonic() * 1000)}_{uuid.uuid4()}.{queue}.msg"
        try:
            _atomic_write(Path(self.data_folder_out) / name, str_to_bytes(dumps(payload)), self.staging_folder)
        except OSError as exc:
            raise filesystem.ChannelError(f"Cannot add file {name!r} to directory") from exc

    def _get(self, queue: str) -> Any:
        claims = _Claims.for_root(self.processing_folder)
        now = time.monotonic()
        if now - self._recovered_at > RECOVER_EVERY_SECONDS:
            self._recovered_at = now
            recover_dead_consumers(
                processing=self.processing_folder, queue_folder=Path(self.data_folder_in), own=claims.name
            )
        suffix = f".{queue}.msg"
        folder = Path(self.data_folder_in)
        for name in sorted(os.listdir(folder)):
            if name.partition(".")[2] != suffix[1:]:
                continue
            claimed = claims.folder / name
            try:
                os.rename(folder / name, claimed)
            except FileNotFoundError:
                continue  # another consumer took it
            try:
                payload = loads(bytes_to_str(claimed.read_bytes()))
                delivery_tag = payload["properties"]["delivery_tag"]
            except (ValueError, KeyError, TypeError) as exc:
                os.replace(claimed, self.corrupt_folder / name)
                logger.error("broker: unreadable message %s moved to %s (%s)", name, self.corrupt_folder, exc)
                continue
            self._claimed[delivery_tag] = claimed
            return payload
        raise Empty()

    def _claim_done(self, delivery_tag: str, *, requeue: bool) -> None:
        claimed = self._claimed.pop(delivery_tag, None)
        if claimed is None:
            return
        with contextlib.suppress(FileNotFoundError):
            if requeue:
                os.rename(claimed, Path(self.data_folder_in) / claimed.name)
            else:
                claimed.unlink()

    # --- exchange tables -------------------------------------------------------------------
    @contextlib.contextmanager
    def _table_lock(self) -> Any:
        self.control_folder.mkdir(parents=True, exist_ok=True)
        with open(self.control_folder / ".tables.lock", "a+b") as f:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX)
            yield

    def get_table(self, exchange: str) -> list[filesystem.exchange_queue_t]:
        try:
            data = self._exchange_file(exchange).read_bytes()
        except FileNotFoundError:
            return []
        return [filesystem.exchange_queue_t(*q) for q in loads(bytes_to_str(data))]

    def _write_table(self, exchange: str, queues: list[filesystem.exchange_queue_t]) -> None:
        _atomic_write(self._exchange_file(exchange), str_to_bytes(dumps(queues)), self.staging_folder)

    def _queue_bind(self, exchange: str, routing_key: str, pattern: str, queue: str) -> None:
        entry = filesystem.exchange_queue_t(routing_key or "", pattern or "", queue or "")
        with self._table_lock():
            queues = self.get_table(exchange)
            if entry not in queues:
                self._write_table(exchange, [entry, *queues])

    def _delete(self, queue: str, exchange: str, routing_key: str, pattern: str, *args: Any, **kwargs: Any) -> None:
        virtual.Channel._delete(self, queue, exchange, routing_key, pattern, *args, **kwargs)
        entry = filesystem.exchange_queue_t(routing_key or "", pattern or "", queue or "")
        with self._table_lock():
            queues = self.get_table(exchange)
            if entry in queues:
                self._write_table(exchange, [q for q in queues if q != entry])


class Transport(filesystem.Transport):
    Channel = Channel
    global_state = virtual.BrokerState()
