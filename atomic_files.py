"""Outputs that appear whole or not at all, and the JSON files written that way.

A temporary file is named `<path>.tmp-<host>-<pid>-<random>` and created
exclusively (so a file or symlink planted under that name is never written
through); a killed job leaves only such files, and the next write of the same
path removes those whose process no longer runs.
"""

import contextlib
import json
import os
import secrets
import socket

import tensorflow as tf
from absl import logging

import file_names

_TMP_MARK = ".tmp-"


def is_local(path):
    """Whether `path` is on a local file system (not gs://, ...)."""
    return "://" not in path


def process_alive(pid):
    """Whether process `pid` of this host runs (or exists, but is not ours to signal)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def tmp_path(path):
    """A new, unique temporary name for an output that will be renamed to `path`."""
    return f"{path}{_TMP_MARK}{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(4)}"


def _tmp_owner(tmp, path):
    """(host, pid) of a temporary file of `path`, or None if the name is not one of ours."""
    rest = tmp[len(path) + len(_TMP_MARK) :]
    host, _, tail = rest.rpartition("-")
    host, _, pid = host.rpartition("-")
    if not host or not pid.isdigit() or not tail:
        return None
    return host, int(pid)


def remove_stale_tmp_files(path):
    """Removes the temporary files of `path` whose writer (on this host) has exited.

    Returns:
      The removed paths.
    """
    removed = []
    this_host = socket.gethostname()
    for tmp in tf.io.gfile.glob(file_names.glob_escape(path) + _TMP_MARK + "*"):
        owner = _tmp_owner(tmp, path)
        if owner is None or owner[0] != this_host or process_alive(owner[1]):
            continue
        try:
            tf.io.gfile.remove(tmp)
        except tf.errors.NotFoundError:
            continue
        logging.info("Removed %s, left by an interrupted run.", tmp)
        removed.append(tmp)
    return removed


def create_exclusive(path):
    """Creates an empty file at `path`, failing if anything (a file, a symlink) is there.

    Local paths only; other file systems (gs://, ...) have no exclusive create.

    Raises:
      FileExistsError: something already exists at `path`.
    """
    if not is_local(path):
        return
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
    os.close(os.open(path, flags, 0o644))


@contextlib.contextmanager
def atomic_output(path):
    """Yields a temporary path; renames it to `path` only if the block succeeds."""
    parent = os.path.dirname(path)
    if parent:
        tf.io.gfile.makedirs(parent)
    remove_stale_tmp_files(path)
    tmp = tmp_path(path)
    create_exclusive(tmp)
    try:
        yield tmp
        tf.io.gfile.rename(tmp, path, overwrite=True)
    finally:
        if tf.io.gfile.exists(tmp):
            tf.io.gfile.remove(tmp)


def write_json(path, obj, indent=2):
    """Writes `obj` as JSON to `path` atomically; `indent=None` writes compact JSON.

    Compact JSON is encoded by json's C encoder, many times faster than the
    indented (pure Python) one: use it for large files.
    """
    # One write call: json.dump would write each token separately, and every
    # GFile write is a round trip into TensorFlow (seconds for the stats files
    # of 1000 classes).
    text = json.dumps(obj, indent=indent, sort_keys=True)
    with atomic_output(path) as tmp:
        with tf.io.gfile.GFile(tmp, "w") as f:
            f.write(text)


def read_json(path):
    """The JSON object in the file at `path`."""
    with tf.io.gfile.GFile(path) as f:
        return json.load(f)
