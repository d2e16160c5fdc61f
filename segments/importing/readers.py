"""Streaming readers: JSON Lines and CSV, line by line (memory flat in file size).

Each yields ``(line number, record, error)``; a bad line (encoding, JSON, ragged CSV row)
is an error for that line, never for the file. A CSV header with missing, unknown or
repeated columns is fatal (``ImportFileError``), before anything loads.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO, Any

from tqdm import tqdm

from config.progress import ProgressLines, progress_bar
from segments.importing.records import loads_json


class ImportFileError(Exception):
    """The file cannot be imported at all (missing columns, unreadable)."""


# (line number, record or None, (field, message) or None)
Line = tuple[int, Any, tuple[str, str] | None]


class _Progress:
    """Bytes read, reported to tqdm every so often (a per-line update would cost more than parsing)."""

    def __init__(self, bar: tqdm | ProgressLines | None) -> None:
        self.bar, self.pending = bar, 0

    def add(self, n: int) -> None:
        self.pending += n
        if self.pending >= 1 << 20 and self.bar is not None:
            self.bar.update(self.pending)
            self.pending = 0

    def flush(self) -> None:
        if self.bar is not None and self.pending:
            self.bar.update(self.pending)
        self.pending = 0


def read_jsonl(stream: IO[bytes], progress: _Progress | None = None) -> Iterator[Line]:
    for number, raw in enumerate(stream, 1):
        if progress is not None:
            progress.add(len(raw))
        if number == 1 and raw.startswith(b"\xef\xbb\xbf"):
            raw = raw[3:]
        if not raw.strip():
            continue
        try:
            yield number, loads_json(raw), None
        except UnicodeDecodeError as exc:
            yield number, None, ("", f"Not valid UTF-8 ({exc.reason} at byte {exc.start}).")
        except (ValueError, RecursionError) as exc:
            yield number, None, ("", f"Not valid JSON: {exc}.")


class _DecodedLines:
    """Decode a binary stream line by line; a line that is not UTF-8 is reported and skipped."""

    def __init__(self, stream: IO[bytes], progress: _Progress | None) -> None:
        self.stream, self.progress = stream, progress
        self.line = 0  # physical line number of the last line handed out
        self.bad: list[tuple[int, str]] = []

    def __iter__(self) -> Iterator[str]:
        for raw in self.stream:
            self.line += 1
            if self.progress is not None:
                self.progress.add(len(raw))
            try:
                yield raw.decode("utf-8-sig" if self.line == 1 else "utf-8")
            except UnicodeDecodeError as exc:
                self.bad.append((self.line, f"Not valid UTF-8 ({exc.reason} at byte {exc.start})."))


def read_csv(
    stream: IO[bytes],
    *,
    required: Iterable[str],
    allowed: Iterable[str],
    progress: _Progress | None = None,
) -> Iterator[Line]:
    """Rows as ``{column: value}`` without empty cells (an empty cell is an absent field)."""
    lines = _DecodedLines(stream, progress)
    reader = csv.reader(iter(lines), strict=True)
    try:
        header = next(reader)
    except StopIteration:
        raise ImportFileError("The file is empty: expected a header line.") from None
    except csv.Error as exc:
        raise ImportFileError(f"Line {lines.line}: unreadable header ({exc}).") from None
    if lines.bad:
        raise ImportFileError(f"Line {lines.bad[0][0]}: {lines.bad[0][1]}")
    header = [name.strip() for name in header]
    missing = [name for name in required if name not in header]
    unknown = [name for name in header if name not in set(allowed)]
    duplicated = sorted({name for name in header if header.count(name) > 1})
    problems = []
    if missing:
        problems.append(f"missing column(s): {', '.join(missing)}")
    if unknown:
        problems.append(f"unknown column(s): {', '.join(unknown)} (allowed: {', '.join(allowed)})")
    if duplicated:
        problems.append(f"repeated column(s): {', '.join(duplicated)}")
    if problems:
        raise ImportFileError(f"Line 1 (header): {'; '.join(problems)}.")
    width = len(header)
    while True:
        start = lines.line + 1
        try:
            row = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:
            yield from ((n, None, ("", m)) for n, m in lines.bad)
            lines.bad.clear()
            yield lines.line, None, ("", f"Unreadable CSV ({exc}).")
            continue
        if lines.bad:
            yield from ((n, None, ("", m)) for n, m in lines.bad)
            start = lines.bad[-1][0] + 1
            lines.bad.clear()
        if not row:
            continue
        if len(row) != width:
            yield start, None, ("", f"Expected {width} fields (as in the header), got {len(row)}.")
            continue
        yield start, {name: value for name, value in zip(header, row, strict=True) if value != ""}, None
    yield from ((n, None, ("", m)) for n, m in lines.bad)


def detect_format(path: Path, given: str | None) -> str:
    if given:
        return given
    suffixes = [s.lower() for s in path.suffixes]
    if ".csv" in suffixes:
        return "csv"
    if ".jsonl" in suffixes or ".ndjson" in suffixes or ".json" in suffixes:
        return "jsonl"
    raise ImportFileError(f"Cannot tell the format of '{path.name}': use --format csv or --format jsonl.")


def _open_lines(
    path: Path, fmt: str, *, columns: tuple[str, ...], required: tuple[str, ...], bar: tqdm | ProgressLines | None
) -> tuple[Iterator[Line], IO[bytes], _Progress]:
    stream = path.open("rb")
    progress = _Progress(bar)
    try:
        if fmt == "csv":
            return read_csv(stream, required=required, allowed=columns, progress=progress), stream, progress
        return read_jsonl(stream, progress), stream, progress
    except BaseException:
        stream.close()
        raise


def _progress_bar(path: Path, label: str, enabled: bool | None) -> tqdm | ProgressLines:
    # enabled=None: a bar when stderr is a terminal, else a progress line every ~10 s.
    return progress_bar(
        total=os.path.getsize(path), unit="B", unit_scale=True, unit_divisor=1024, desc=label, enabled=enabled
    )
