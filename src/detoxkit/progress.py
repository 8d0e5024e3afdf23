"""The one progress path for long jobs (runs, training, conversions, scans).

On a terminal: a tqdm bar. Otherwise (logs, CI, a notebook's captured stderr): a log
line every `every_s` seconds and at the end, with rate and ETA.
"""

from __future__ import annotations

import logging
import sys
import time

log = logging.getLogger(__name__)


class Progress:
    def __init__(self, total: int, desc: str, unit: str = "samples", initial: int = 0,
                 every_s: float = 10.0):
        self.total, self.desc, self.unit = total, desc, unit
        self.done = initial
        self._start_done = initial
        self._t0 = self._last = time.monotonic()
        self._every = every_s
        self._bar = None
        if sys.stderr.isatty():
            from tqdm import tqdm

            self._bar = tqdm(total=total, initial=initial, desc=desc, unit=unit.rstrip("s"),
                             dynamic_ncols=True)

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def update(self, n: int = 1) -> None:
        self.done += n
        if self._bar is not None:
            self._bar.update(n)
            return
        now = time.monotonic()
        if now - self._last >= self._every or self.done >= self.total:
            self._last = now
            log.info("%s", self.line(now))

    def note(self, text: str) -> None:
        """What the job is doing now (a stage name, the last loss): shown next to the bar, or
        logged at once without a terminal."""
        if self._bar is not None:
            self._bar.set_postfix_str(text, refresh=True)
        else:
            log.info("%s: %s", self.desc, text)

    def line(self, now: float | None = None) -> str:
        now = now or time.monotonic()
        rate = (self.done - self._start_done) / max(now - self._t0, 1e-9)
        left = (self.total - self.done) / rate if rate > 0 else float("inf")
        eta = f"{left / 60:.1f} min" if left != float("inf") else "?"
        pct = 100.0 * self.done / self.total if self.total else 100.0
        return (f"{self.desc}: {self.done}/{self.total} {self.unit} ({pct:.0f}%), "
                f"{rate:.1f} {self.unit}/s, ETA {eta}")

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
