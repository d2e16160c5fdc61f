"""config.progress: long steps report progress in logs, not only on a terminal."""

from __future__ import annotations

import io

import pytest
from tqdm import tqdm

from config.progress import ProgressLines, progress_bar

pytestmark = pytest.mark.pure


def test_progress_bar__not_a_terminal__lines_with_count_share_rate_and_time_left() -> None:
    # Given: output to a file (a log), not a terminal
    log = io.StringIO()
    bar = progress_bar(total=4 * 1024**2, desc="events", unit="B", unit_scale=True, enabled=None, file=log)
    assert isinstance(bar, ProgressLines)
    bar.every = 0.0  # a line at every update, instead of every ~10 s

    # When: a quarter is done
    bar.started -= 10  # ten seconds ago
    bar.update(1024**2)

    # Then: one line that says how far, how fast and how long still
    line = log.getvalue()
    assert line.endswith("\n") and line.count("\n") == 1
    assert line == "events: 1.00MB of 4.00MB (25%), 00:10 elapsed, 102kB/s, about 00:30 left\n"


def test_progress_lines__updates_within_the_interval__one_line_per_interval() -> None:
    log = io.StringIO()
    bar = ProgressLines(total=1000, desc="deliveries", unit="msg", file=log, every=3600)
    for _ in range(100):
        bar.update(1)
    bar.set_postfix_str("sent 100")
    bar.refresh()
    assert log.getvalue() == ""  # nothing before the interval has passed
    bar.last -= 3600
    bar.refresh()
    assert log.getvalue().startswith("deliveries: 100 of 1,000 msg (10%)")
    assert log.getvalue().rstrip().endswith("sent 100")


def test_progress_bar__on_a_terminal__a_tqdm_bar_and_disabled__silent() -> None:
    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    assert isinstance(progress_bar(total=1, desc="x", file=Tty()), tqdm)
    log = io.StringIO()
    with progress_bar(total=10, desc="x", enabled=False, file=log) as bar:
        bar.update(10)
    assert log.getvalue() == ""
