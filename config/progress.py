"""Progress of long steps (imports, recomputes, the demo's delivery wait): a tqdm bar on a
terminal, and when not on one (a log file, CI, ``make demo > demo.log``) a plain line every
``EVERY_SECONDS`` with the count, the share done, the rate and the time left, so a log of a
3-minute step does not go silent.

tqdm stays the bar; it has no line mode (off a terminal it is either silent or redraws one
line with carriage returns, which a log shows as one unreadable line), hence ``ProgressLines``,
which formats its figures with tqdm's own helpers.
"""

from __future__ import annotations

import sys
import time
from typing import IO, Any

from tqdm import tqdm

EVERY_SECONDS = 10.0


class ProgressLines:
    """The part of tqdm's interface the project uses, printed as occasional lines."""

    def __init__(
        self,
        *,
        total: float | None,
        desc: str,
        unit: str = "it",
        unit_scale: bool = False,
        file: IO[str] | None = None,
        every: float = EVERY_SECONDS,
    ) -> None:
        self.total, self.desc, self.unit, self.unit_scale = total, desc, unit, unit_scale
        self.file = file or sys.stderr
        self.every = every
        self.n: float = 0
        self.postfix = ""
        self.started = self.last = time.monotonic()
        self.closed = False

    def _fmt(self, value: float) -> str:
        """1.00MB with ``unit_scale`` (binary prefixes, as the bars), else 1,234 (the unit apart)."""
        return tqdm.format_sizeof(value, divisor=1024) if self.unit_scale else f"{value:,.0f}"

    def line(self, *, now: float | None = None) -> str:
        elapsed = (now or time.monotonic()) - self.started
        unit = self.unit if self.unit_scale else f" {self.unit}"
        if self.total:
            first = f"{self._fmt(self.n)}{self.unit if self.unit_scale else ''}"
            done = f"{first} of {self._fmt(self.total)}{unit} ({100 * self.n / self.total:.0f}%)"
        else:
            done = f"{self._fmt(self.n)}{unit}"
        parts = [f"{self.desc}: {done}"]
        rate = self.n / elapsed if elapsed > 0 else 0.0
        parts.append(f"{tqdm.format_interval(elapsed)} elapsed, {self._fmt(rate)}{unit}/s")
        if self.total and rate > 0 and self.n < self.total:
            parts.append(f"about {tqdm.format_interval((self.total - self.n) / rate)} left")
        if self.postfix:
            parts.append(self.postfix)
        return ", ".join(parts)

    def _maybe_print(self, *, force: bool = False) -> None:
        now = time.monotonic()
        if force or now - self.last >= self.every:
            self.last = now
            self.file.write(self.line(now=now) + "\n")
            self.file.flush()

    def update(self, n: float = 1) -> None:
        self.n += n
        self._maybe_print()

    def set_postfix_str(self, s: str = "", refresh: bool = True) -> None:
        self.postfix = s

    def refresh(self) -> None:
        self._maybe_print()

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            # A last line only for a step long enough to have printed one.
            if self.last != self.started:
                self._maybe_print(force=True)

    def __enter__(self) -> ProgressLines:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def progress_bar(
    *,
    total: float | None,
    desc: str,
    unit: str = "it",
    enabled: bool | None = None,
    unit_scale: bool = False,
    file: IO[str] | None = None,
    **tqdm_kwargs: Any,
) -> tqdm | ProgressLines:
    """``enabled``: True, a bar; False, nothing; None (the default), a bar on a terminal and
    lines elsewhere."""
    stream = file or sys.stderr
    if enabled is False:
        return tqdm(total=total, disable=True)
    if enabled is None and not (hasattr(stream, "isatty") and stream.isatty()):
        return ProgressLines(total=total, desc=desc, unit=unit, unit_scale=unit_scale, file=stream)
    return tqdm(total=total, desc=desc, unit=unit, unit_scale=unit_scale, file=stream, **tqdm_kwargs)
