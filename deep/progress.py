"""Progress of long work (training epochs, scoring passes) on stderr.

On a terminal a tqdm bar (it redraws in place); otherwise (a log file, a pipe, a CI job) a plain
line at most every ``interval`` seconds, because tqdm's carriage-return redraws make unreadable
logs. The plain line is tqdm's own meter text (``tqdm.format_meter``) plus the latest figures.

``LENSBENCH_PROGRESS=0`` turns progress off; ``LENSBENCH_PROGRESS_INTERVAL`` sets the seconds
between plain lines (default 30).
"""

from __future__ import annotations

import math
import os
import sys
import time
from typing import TextIO

from tqdm import tqdm

PROGRESS_ENV = "LENSBENCH_PROGRESS"
INTERVAL_ENV = "LENSBENCH_PROGRESS_INTERVAL"
DEFAULT_INTERVAL_S = 30.0


def _format(value) -> str:
    if isinstance(value, float):
        return f"{value:.4g}" if math.isfinite(value) else str(value)
    return str(value)


class Progress:
    """``total`` steps of ``unit`` named ``desc``. ``update(**figures)`` after each step (the
    figures, e.g. ``train_loss=0.41``, are shown beside the count); ``alive(detail)`` inside a
    long step keeps the output from going silent. Use as a context manager (or ``close()``)."""

    def __init__(self, total: int | None, desc: str, *, unit: str = "it",
                 stream: TextIO | None = None, interval: float | None = None,
                 enabled: bool | None = None) -> None:
        self.total, self.desc, self.unit = total, desc, unit
        self.stream = stream if stream is not None else sys.stderr
        if interval is None:
            interval = float(os.environ.get(INTERVAL_ENV) or DEFAULT_INTERVAL_S)
        self.interval = interval
        if enabled is None:
            enabled = os.environ.get(PROGRESS_ENV, "") not in ("0", "false", "no")
        self.enabled = enabled
        self.n = 0
        self.figures: dict[str, str] = {}
        self.detail = ""
        self.start = self.last_line = time.monotonic()
        self.lines, self.last_written = 0, -1
        is_tty = enabled and hasattr(self.stream, "isatty") and self.stream.isatty()
        self.bar = (tqdm(total=total, desc=desc, unit=unit, file=self.stream, leave=False,
                         dynamic_ncols=True, mininterval=0.5) if is_tty else None)

    def update(self, n: int = 1, **figures) -> None:
        self.n += n
        self.figures = {key: _format(value) for key, value in figures.items()}
        self.detail = ""
        if self.bar is not None:
            self.bar.set_postfix(self.figures, refresh=False)
            self.bar.update(n)
        else:
            self._line_if_due()

    def alive(self, detail: str = "") -> None:
        """Within a step: show ``detail`` (e.g. ``"batch 40/120"``) when the output has been
        quiet for ``interval`` seconds."""
        self.detail = detail
        if self.bar is not None:
            self.bar.set_postfix_str(", ".join(filter(None, [self._figures(), detail])),
                                     refresh=False)
            if time.monotonic() - self.last_line >= 1:  # redraw at most once a second
                self.bar.refresh()
                self.last_line = time.monotonic()
        else:
            self._line_if_due()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        elif self.enabled and self.lines and self.last_written != self.n:
            self._write()  # a log that showed the work also shows its end

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ------------------------------------------------------------------ plain lines
    def _figures(self) -> str:
        return ", ".join(f"{key} {value}" for key, value in self.figures.items())

    def _line_if_due(self) -> None:
        if self.enabled and time.monotonic() - self.last_line >= self.interval:
            self._write()

    def _write(self) -> None:
        now = time.monotonic()
        meter = tqdm.format_meter(self.n, self.total, now - self.start, prefix=self.desc,
                                  unit=self.unit, ncols=0)
        extra = ", ".join(filter(None, [self._figures(), self.detail]))
        self.stream.write(f"{meter}{' | ' + extra if extra else ''}\n")
        self.stream.flush()
        self.last_line, self.last_written = now, self.n
        self.lines += 1
