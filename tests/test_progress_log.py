"""Rate and ETA of the progress log."""

import pytest

import progress_log


class FakeClock:
    """Stands in for progress_log's `time` module: time() returns what the test sets."""

    def __init__(self):
        self.now = 1000.0

    def time(self):
        return self.now


def test_progress_rate_and_eta_by_hand_and_after_a_restart(monkeypatch):
    clock = FakeClock()
    monkeypatch.setattr(progress_log, "time", clock)
    progress = progress_log.Progress(100, "steps", start=10, interval=0)
    clock.now += 40  # e.g. a first call that traced: 10 steps in 40 s
    progress.done = 20
    assert progress.rate() == pytest.approx(10 / 40)
    assert progress.eta_seconds() == pytest.approx(80 / (10 / 40))
    progress.restart_clock()
    assert progress.rate() == 0 and progress.eta_seconds() is None
    clock.now += 2
    progress.update(10)  # 10 more steps in 2 s
    assert progress.rate() == pytest.approx(5.0)
    assert progress.eta_seconds() == pytest.approx(70 / 5.0)
    assert progress.message() == "30/100 steps, 5.0 steps/s, ETA 0:00:14"
