"""Stopping training cleanly on SIGTERM/SIGINT (what a cloud VM sends before it stops).

`StopOnSignals` turns SIGTERM and SIGINT into a request to stop: it sets a
boolean `tf.Variable` that the compiled training loop reads before every
step (`train_lib.make_train_loop`), so a loop call of `--iterations_per_loop`
steps ends after the step that is running, and the training saves a
checkpoint of that step (`train_lib.train`). A second signal of the same
kind kills the process as the first would have without this.

Why not `tf.distribute.experimental.PreemptionCheckpointHandler`: it counts
calls of a one-step function and saves after the next call, so with many
steps in one compiled call the stop would wait for the whole call; it
handles SIGTERM only (not Ctrl-C), does nothing for CPU or TPU VMs on GCP,
restores the latest checkpoint itself (without this project's fallback to
the previous readable one when the latest is truncated), adds its own
counter to the checkpoints, and ends the process in its `exit_fn` from
inside the training loop, before the run's lock is released.

Python runs signal handlers in the main thread only between bytecodes, not
while it waits for a compiled loop call to return. The handlers therefore
also write to a wakeup pipe (`signal.set_wakeup_fd`), and a helper thread
reading it sets the variable while the call runs.
"""

import os
import signal
import threading

import tensorflow as tf
from absl import logging

SIGNALS = (signal.SIGTERM, signal.SIGINT)
# The exit status of a training stopped by SIGTERM/SIGINT after saving its
# checkpoint: EX_TEMPFAIL of sysexits.h ("try again later"), distinct from
# errors (1), bad flags (1) and a kill by a signal (128 + N, or -N).
PREEMPTED_EXIT_CODE = 75


class Preempted(Exception):  # noqa: N818 (a stop, not an error)
    """Training stopped on a signal after saving a checkpoint of `step`."""

    def __init__(self, step):
        self.step = step
        super().__init__(f"preempted at step {step}, checkpoint saved")


def stop_variable():
    """The boolean variable that requests a stop (False until a signal arrives)."""
    return tf.Variable(False, trainable=False, name="stop_requested", dtype=tf.bool)


class StopOnSignals:
    """Context manager: SIGTERM/SIGINT set `variable` instead of ending the process.

    Outside the main thread (where Python cannot install handlers) it does
    nothing. The previous handlers and wakeup fd are restored on exit.

    Args:
      variable: a boolean `tf.Variable` (see `stop_variable`).
    """

    def __init__(self, variable):
        self.variable = variable
        self.signal_name = None
        self._previous = {}
        self._previous_wakeup_fd = None
        self._pipe = None
        self._thread = None

    def _handler(self, signum, frame):
        del frame
        name = signal.Signals(signum).name
        if self.signal_name == name:
            # A second signal of the same kind: stop now, as without us.
            logging.warning("%s again: stopping without a checkpoint.", name)
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)
            return
        if self.signal_name is None:
            self.signal_name = name
            logging.warning("%s received: stopping after the current step.", name)
        self.variable.assign(True)

    def _watch(self, read_fd):
        # Runs while the main thread waits inside a compiled loop call.
        while True:
            try:
                data = os.read(read_fd, 64)
            except OSError:
                return
            if not data:
                return
            if any(byte in (int(s) for s in SIGNALS) for byte in data):
                self.variable.assign(True)

    def __enter__(self):
        if threading.current_thread() is not threading.main_thread():
            return self
        read_fd, write_fd = os.pipe()
        os.set_blocking(write_fd, False)
        self._pipe = (read_fd, write_fd)
        self._previous_wakeup_fd = signal.set_wakeup_fd(write_fd, warn_on_full_buffer=False)
        for signum in SIGNALS:
            self._previous[signum] = signal.signal(signum, self._handler)
        self._thread = threading.Thread(
            target=self._watch, args=(read_fd,), name="stop-on-signals", daemon=True
        )
        self._thread.start()
        return self

    def __exit__(self, *exc):
        if self._pipe is None:
            return
        for signum, previous in self._previous.items():
            signal.signal(signum, previous)
        signal.set_wakeup_fd(self._previous_wakeup_fd)
        read_fd, write_fd = self._pipe
        os.close(write_fd)
        self._thread.join(timeout=10)
        os.close(read_fd)
        self._pipe = None
