"""Full disks: recognizing them in errors, and one message instead of a traceback."""

import contextlib
import errno
import os
import sys

import tensorflow as tf

_DISK_FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT)
# TensorFlow's file writers report ENOSPC/EDQUOT as ResourceExhaustedError
# with "<path>; <strerror>".
_DISK_FULL_TEXTS = ("No space left on device", "Disk quota exceeded")


def disk_full_path(error):
    """The path a full-disk error names: "" when it names none, None when it is no full disk.

    Looks through the errors `error` was raised from, since loaders wrap
    TensorFlow's errors in their own.
    """
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if isinstance(error, OSError) and error.errno in _DISK_FULL_ERRNOS:
            return os.fsdecode(error.filename) if error.filename is not None else ""
        if isinstance(error, tf.errors.OpError):
            for text in _DISK_FULL_TEXTS:
                if f"; {text}" in error.message:
                    head = error.message.split(f"; {text}", 1)[0]
                    # Graph errors start with "{{function_node ...}} ".
                    return head.rsplit("}} ", 1)[-1].strip()
                if text in error.message:
                    return ""
        error = error.__cause__ or error.__context__
    return None


@contextlib.contextmanager
def exit_on_full_disk(script_name, where, kept):
    """Turns a full disk into one message and exit status 1, instead of a traceback.

    The message says which path is full and what was kept; outputs are
    written aside and renamed (`atomic_files.atomic_output`), so nothing half-written is.

    Args:
      script_name: the entry point, e.g. "main.py".
      where: the output the run writes to, named when the error names no path.
      kept: a function returning what was kept, asked when the disk is full.
    """
    try:
        yield
    except Exception as e:  # noqa: BLE001 (re-raised unless it is a full disk)
        path = disk_full_path(e)
        if path is None:
            raise
        message = (
            f"{script_name}: error: no space left on the device of {path or where} "
            f"(writing {where}). Kept: {kept()}. Free some space and run the same command "
            "again."
        )
        sys.exit(message)
