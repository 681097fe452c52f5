"""Progress of long jobs: done/total, rate and ETA in the log."""

import time

from absl import logging


def format_seconds(seconds):
    """`seconds` as H:MM:SS (negative ones as 0:00:00)."""
    seconds = int(max(0, seconds))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h:d}:{m:02d}:{s:02d}"


class Progress:
    """Logs `done/total`, rate and ETA of a long job at most every `interval` seconds.

    Args:
      total: number of units (images, steps) the job will process, or None.
      name: what is being counted, e.g. "images".
      start: units already done before this process started (resumed work),
        excluded from the rate.
      interval: minimum seconds between two log lines.
    """

    def __init__(self, total, name="items", start=0, interval=10.0, prefix=""):
        self.total = total
        self.name = name
        self.done = start
        self._start_count = start
        self._t0 = time.time()
        self._last = 0.0
        self._interval = interval
        self._prefix = prefix

    def rate(self):
        """Units per second since the start (or the last restart_clock); 0 before any."""
        elapsed = time.time() - self._t0
        return (self.done - self._start_count) / elapsed if elapsed > 0 else 0.0

    def restart_clock(self):
        """Measures the rate from now on, without the units done so far.

        For work whose first unit carries a one-off cost, such as a training
        loop's first call, which traces and compiles it.
        """
        self._start_count = self.done
        self._t0 = time.time()

    def eta_seconds(self):
        """Seconds left at the current rate; None without a total or a rate."""
        rate = self.rate()
        if not self.total or rate <= 0:
            return None
        return (self.total - self.done) / rate

    def message(self):
        """The log line: done/total, rate and ETA."""
        rate = self.rate()
        total = f"/{self.total}" if self.total else ""
        eta = self.eta_seconds()
        eta_text = f", ETA {format_seconds(eta)}" if eta is not None else ""
        return f"{self._prefix}{self.done}{total} {self.name}, {rate:.1f} {self.name}/s{eta_text}"

    def update(self, count=1, force=False):
        """Counts `count` more units; logs if `interval` has passed since the last line, or `force`."""
        self.done += count
        now = time.time()
        if force or now - self._last >= self._interval:
            self._last = now
            logging.info(self.message())
