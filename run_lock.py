"""An exclusive lock file: one run at a time per model_dir."""

import json
import os
import socket
import time

import tensorflow as tf
from absl import logging

import atomic_files


class RunLock:
    """An exclusive lock file: one holder at a time, stale locks taken over.

    The file holds the holder's host, pid and start time. A lock whose holder
    ran on this host and has exited is stale and is taken over with a
    warning, and so is an empty or unreadable one (left by a run that could
    not write it, say on a full disk): on local disks a lock appears only
    with its contents (written aside, then hard-linked into place), so it is
    never one being taken. Any other existing lock makes `acquire` fail
    naming its holder. Locks on non-local file systems are best effort (no
    exclusive create).

    Args:
      path: the lock file.
      what: what the lock protects, for messages (e.g. "--model_dir=ckpt/a").
    """

    def __init__(self, path, what):
        self.path = path
        self.what = what
        self.held = False

    def _holder(self):
        """The holder recorded in the lock, or None when it is empty or unreadable."""
        try:
            with tf.io.gfile.GFile(self.path) as f:
                holder = json.loads(f.read())
        except (tf.errors.OpError, ValueError):  # JSON and UTF-8 errors are ValueErrors
            return None
        if not isinstance(holder, dict) or not isinstance(holder.get("pid"), int):
            return None
        return holder

    def _create(self, text):
        """Creates the lock holding `text`; FileExistsError when one exists."""
        if not atomic_files.is_local(self.path):
            with tf.io.gfile.GFile(self.path, "w") as f:
                f.write(text)
            return
        tmp = f"{self.path}.{os.getpid()}.new"
        try:
            atomic_files.create_exclusive(tmp)
            with open(tmp, "w") as f:
                f.write(text)
                f.flush()
                os.fsync(f.fileno())
            # link() creates the name only if nothing is there, even a symlink.
            os.link(tmp, self.path)
        finally:
            if os.path.lexists(tmp):
                os.remove(tmp)

    def acquire(self):
        """Takes the lock.

        Raises:
          RuntimeError: another live process holds it, naming that process.
        """
        tf.io.gfile.makedirs(os.path.dirname(self.path) or ".")
        me = {
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "start_time": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        }
        for _ in range(2):
            try:
                self._create(json.dumps(me))
            except FileExistsError:
                holder = self._holder()
                if not tf.io.gfile.exists(self.path):
                    continue  # released meanwhile
                if holder is None and atomic_files.is_local(self.path):
                    logging.warning(
                        "Taking over the lock %s, which is empty or unreadable (its run could "
                        "not write it, e.g. on a full disk).",
                        self.path,
                    )
                    tf.io.gfile.remove(self.path)
                    continue
                stale = (
                    holder is not None
                    and holder.get("host") == me["host"]
                    and not atomic_files.process_alive(holder["pid"])
                )
                if not stale:
                    who = (
                        f"pid {holder.get('pid')} on {holder.get('host')}, started "
                        f"{holder.get('start_time')}"
                        if holder
                        else "an unknown process"
                    )
                    raise RuntimeError(
                        f"{self.what} is in use by another run ({who}; lock file {self.path}). "
                        "Wait for it to finish, or delete the lock file if that process is "
                        "gone."
                    ) from None
                logging.warning(
                    "Taking over the stale lock %s of pid %s, which has exited.",
                    self.path,
                    holder.get("pid"),
                )
                tf.io.gfile.remove(self.path)
                continue
            self.held = True
            return self
        raise RuntimeError(f"{self.what}: could not take the lock {self.path}.")

    def release(self):
        """Removes the lock file, if this object holds the lock."""
        if self.held:
            self.held = False
            if tf.io.gfile.exists(self.path):
                tf.io.gfile.remove(self.path)

    def __enter__(self):
        return self.acquire()

    def __exit__(self, *exc):
        self.release()
