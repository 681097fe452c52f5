"""Small shared helpers: record encoding, file names, atomic writes, progress."""

import collections
import contextlib
import errno
import gc
import json
import os
import secrets
import socket
import sys
import time

import numpy as np
import tensorflow as tf
from absl import logging

# ---------------------------------------------------------------------------
# File layouts (docs/method.md, "Record formats"; docs/pseudo_labels.md). One
# function per layout so that writers and readers cannot disagree.


def shard_path(data_dir, prefix, shard, num_shards):
    """`{data_dir}/{prefix}-%05d-of-%05d`: the shard naming of every TFRecord set."""
    return os.path.join(data_dir, f"{prefix}-{shard:05d}-of-{num_shards:05d}")


def labeled_shard_path(data_dir, subset, shard, num_shards):
    """`{data_dir}/{subset}-%05d-of-%05d`."""
    return shard_path(data_dir, subset, shard, num_shards)


def unlabeled_shard_path(data_dir, shard, num_shards, prefix="extra"):
    """`{data_dir}/unlabeled/{prefix}-%05d-of-%05d`."""
    return shard_path(os.path.join(data_dir, "unlabeled"), prefix, shard, num_shards)


def task_shard_path(data_dir, prefix, task, shard, num_shards):
    """`{data_dir}/{prefix}-{task}-%05d-of-%05d`: one filter task's part of a shard.

    The filter writes these (`filtered_path`); reassign reads and rewrites them.
    """
    return shard_path(data_dir, f"{prefix}-{task:d}", shard, num_shards)


def prediction_path(output_dir, shard, num_shards, worker):
    """`{output_dir}/train-info-%05d-of-%05d-%05d`: one record per input image."""
    return os.path.join(output_dir, f"train-info-{shard:05d}-of-{num_shards:05d}-{worker:05d}")


def info_path(info_dir, shard, num_shards, worker):
    """`{info_dir}/info-%05d-of-%05d-%05d.txt`: JSON {"image_num": N} of one worker's part."""
    return os.path.join(info_dir, f"info-{shard:05d}-of-{num_shards:05d}-{worker:05d}.txt")


def filtered_path(output_dir, task, shard, num_shards):
    """`{output_dir}/data/train-%d-%05d-of-%05d`: filtered and balanced records."""
    return task_shard_path(os.path.join(output_dir, "data"), "train", task, shard, num_shards)


def prelim_stats_path(prelim_stats_dir, shard, task):
    """`{prelim_stats_dir}/prelim_stats_%05d_%d.json`: the filter's pass-1 bins of a shard and task."""
    return os.path.join(prelim_stats_dir, f"prelim_stats_{shard:05d}_{task:d}.json")


def total_counts_path(prelim_stats_dir, cumulative=False):
    """`{prelim_stats_dir}/total_counts.json`, or with `cumulative` `total_counts_sum.json`.

    The pass-1 bins summed over all shards; cumulative: per class, the images
    at or above each bin.
    """
    name = "total_counts_sum.json" if cumulative else "total_counts.json"
    return os.path.join(prelim_stats_dir, name)


def threshold_path(output_dir):
    """`{output_dir}/threshold.json`: the filter's threshold and image count per class."""
    return os.path.join(output_dir, "threshold.json")


def num_image_across_cat_path(output_dir):
    """`{output_dir}/num_image_across_cat.json`: the images kept over all classes, capped per class."""
    return os.path.join(output_dir, "num_image_across_cat.json")


def filter_stats_path(output_dir, shard, task):
    """`{output_dir}/stats/stats_%05d_%d.json`: what pass 2 of the filter kept of a shard and task."""
    return os.path.join(output_dir, "stats", f"stats_{shard:05d}_{task:d}.json")


def final_stats_path(output_dir):
    """`{output_dir}/stats/final_stats.json`: the filter's totals, once every shard is done."""
    return os.path.join(output_dir, "stats", "final_stats.json")


def count_records(path, num_parts=1, part=0):
    """Records of a TFRecord file, or of its records part, part + num_parts, part + 2 num_parts, ..."""
    dataset = tf.data.TFRecordDataset(path)
    if num_parts > 1:
        dataset = dataset.shard(num_parts, part)
    return int(dataset.reduce(np.int64(0), lambda n, _: n + 1).numpy())


def parse_shard_ids(shard_id, num_shards):
    """'3' or '0,4,8' -> [3] or [0, 4, 8]; ValueError naming --shard_id when out of range."""
    try:
        ids = [int(s) for s in str(shard_id).split(",") if s.strip() != ""]
    except ValueError as e:
        raise ValueError(f"--shard_id={shard_id!r}: expected an id or a comma list.") from e
    bad = [i for i in ids if not 0 <= i < num_shards]
    if not ids or bad:
        raise ValueError(f"--shard_id={shard_id!r}: ids must lie in [0, {num_shards}).")
    return ids


# ---------------------------------------------------------------------------
# tf.train.Example features.


def bytes_feature(value):
    return tf.train.Feature(bytes_list=tf.train.BytesList(value=[value]))


def int64_feature(values):
    values = np.atleast_1d(values).astype(np.int64).tolist()
    return tf.train.Feature(int64_list=tf.train.Int64List(value=values))


def float_feature(values):
    values = np.atleast_1d(values).astype(np.float32).tolist()
    return tf.train.Feature(float_list=tf.train.FloatList(value=values))


def labeled_example(image_bytes, label):
    """A labeled record: `image/encoded` and the 1-based `image/class/label` (label + 1)."""
    return tf.train.Example(
        features=tf.train.Features(
            feature={
                "image/encoded": bytes_feature(image_bytes),
                "image/class/label": int64_feature(int(label) + 1),
            }
        )
    )


def unlabeled_example(image_bytes, num_classes, label=-1):
    """A raw unlabeled record: the labeled keys plus zero placeholders.

    Args:
      image_bytes: the encoded image.
      num_classes: length of the all-zero placeholder `probabilities`.
      label: the 0-based true class when it is known (SVHN's and MNIST's
        unlabeled images, as the published SVHN preprocessing kept it), stored
        as label + 1 in `image/class/label`; -1 (unknown) is stored as 0.
        Training never reads it; the filter measures pseudo-label accuracy.
    """
    return tf.train.Example(
        features=tf.train.Features(
            feature={
                "image/encoded": bytes_feature(image_bytes),
                "image/class/label": int64_feature(int(label) + 1 if label >= 0 else 0),
                "probabilities": float_feature(np.zeros([num_classes], np.float32)),
                "label": int64_feature(0),
                "prob": float_feature(0.0),
            }
        )
    )


def prediction_example(probabilities):
    """A prediction record: the full `probabilities` vector and its argmax `classes`."""
    probabilities = np.asarray(probabilities, np.float32)
    return tf.train.Example(
        features=tf.train.Features(
            feature={
                "probabilities": float_feature(probabilities),
                "classes": int64_feature(int(np.argmax(probabilities))),
            }
        )
    )


def pseudo_labeled_example(image_bytes, probabilities, label=None):
    """A filtered/reassigned record: image, 0-based `label`, top-1 `prob`, `probabilities`."""
    probabilities = np.asarray(probabilities, np.float32)
    if label is None:
        label = int(np.argmax(probabilities))
    return tf.train.Example(
        features=tf.train.Features(
            feature={
                "image/encoded": bytes_feature(image_bytes),
                "label": int64_feature(label),
                "prob": float_feature(probabilities[label]),
                "probabilities": float_feature(probabilities),
            }
        )
    )


# A pseudo-labeled record encoded by hand, in-graph for a whole batch, for the
# filter's pass 2: building a tf.train.Example takes ~0.1 ms for 1000
# probabilities (one Python float per value), and tf.io.encode_proto copies
# the image once per nesting level and handles floats one by one (~0.3 ms per
# record); joining precomputed pieces costs ~1.5 us per record. Wire format:
# Example{features(1): Features{feature(1): map entry{key(1), value(2):
# Feature{bytes_list(1) | float_list(2) | int64_list(3): List{value(1)}}}}},
# list values packed, keys in sorted order.
_FLOAT_LIST, _INT64_LIST = 0x12, 0x1A  # Feature field tags of float_list(2), int64_list(3)


def _varint(value):
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _feature_entry(key, kind, payload):
    """(parts, size) of one `Features.feature` map entry; `payload` is the list's value bytes."""
    list_header = b"\n" + _varint(len(payload))
    feature_size = len(list_header) + len(payload)
    feature_header = bytes([kind]) + _varint(feature_size)
    key_part = b"\n" + _varint(len(key)) + key
    value_header = b"\x12" + _varint(len(feature_header) + feature_size)
    entry_size = len(key_part) + len(value_header) + len(feature_header) + feature_size
    entry_header = b"\n" + _varint(entry_size)
    parts = [entry_header, key_part, value_header, feature_header, list_header, payload]
    return parts, len(entry_header) + entry_size


_MAX_VARINT_BYTES = 5  # values < 2**35: any TF string length


def _tf_row_bytes(rows, widths=None):
    """The raw bytes of each row of a numeric tensor [n, ...], as strings [n].

    Args:
      rows: tensor of a fixed-size dtype with a static row shape.
      widths: optional int32 [n]: keep only the first widths[i] bytes of row i.

    Returns:
      string tensor [n], bytes in host order (little-endian, as protobuf
      wants; PseudoLabeledEncoder refuses big-endian hosts).
    """
    row_bytes = rows.dtype.size * int(np.prod(rows.shape[1:]))
    n = tf.shape(rows)[0]
    # serialize_tensor writes a TensorProto whose last field is tensor_content,
    # the tensor's memory: row i sits at a fixed offset from the end.
    blob = tf.io.serialize_tensor(rows)
    start = tf.strings.length(blob) - n * row_bytes
    if widths is None:
        widths = tf.fill([n], row_bytes)
    return tf.strings.substr(blob, start + tf.range(n) * row_bytes, widths)


def _tf_varint_size(values):
    """Bytes of the protobuf varints of non-negative int64 values < 2**35."""
    thresholds = tf.constant([1 << (7 * i) for i in range(1, _MAX_VARINT_BYTES)], tf.int64)
    return 1 + tf.reduce_sum(tf.cast(values[..., None] >= thresholds, tf.int64), axis=-1)


def _tf_varints(values):
    """Protobuf varints of non-negative int64 values [n, k] < 2**35, as strings [n, k]."""
    flat = tf.reshape(values, [-1])
    shifts = tf.constant([7 * i for i in range(_MAX_VARINT_BYTES)], tf.int64)
    groups = tf.bitwise.bitwise_and(tf.bitwise.right_shift(flat[:, None], shifts), 0x7F)
    num_bytes = _tf_varint_size(flat)
    more = tf.range(_MAX_VARINT_BYTES, dtype=tf.int64)[None, :] < num_bytes[:, None] - 1
    data = tf.cast(tf.where(more, tf.bitwise.bitwise_or(groups, 0x80), groups), tf.uint8)
    strings = _tf_row_bytes(data, tf.cast(num_bytes, tf.int32))
    return tf.reshape(strings, tf.shape(values))


class PseudoLabeledEncoder:
    """Serializes batches of pseudo-labeled records in-graph.

    Calling it gives, for each row, a serialized tf.train.Example that parses
    to `pseudo_labeled_example(image, probabilities, label)`, its features in
    key order (tests/oracles.py builds the same bytes with protobuf).

    Args:
      num_classes: length of every probability vector.
    """

    def __init__(self, num_classes):
        if sys.byteorder != "little":
            raise NotImplementedError("PseudoLabeledEncoder copies floats in host byte order")
        self.num_classes = num_classes
        # Everything but the image entry's lengths is constant, or depends on
        # the label only: build those pieces once with the Python encoder
        # (`[:-1]`: all parts of an entry but its payload).
        self._label_entries = tf.constant(
            [
                b"".join(_feature_entry(b"label", _INT64_LIST, _varint(c))[0])
                for c in range(num_classes)
            ]
        )
        self._prob_prefix = b"".join(_feature_entry(b"prob", _FLOAT_LIST, bytes(4))[0][:-1])
        self._probs_prefix = b"".join(
            _feature_entry(b"probabilities", _FLOAT_LIST, bytes(4 * num_classes))[0][:-1]
        )
        self._encode = tf.function(
            self.encode_batch,
            input_signature=[
                tf.TensorSpec([None], tf.string),
                tf.TensorSpec([None, num_classes], tf.float32),
                tf.TensorSpec([None], tf.int64),
            ],
        )

    def __call__(self, images, probabilities, labels):
        """Serialized records [n] of images [n], probabilities [n, C] and 0-based labels [n]."""
        return self._encode(images, probabilities, tf.cast(labels, tf.int64))

    def encode_batch(self, images, probabilities, labels):
        """Like __call__, as plain TensorFlow ops: for use inside a tf.function or tf.data map.

        Args:
          images: string tensor [n].
          probabilities: float32 tensor [n, num_classes].
          labels: int64 tensor [n], in [0, num_classes).

        Returns:
          string tensor [n] of serialized tf.train.Example records.
        """
        key = b"\n\x0dimage/encoded"
        # Sizes of the image entry's nested messages, inside out: BytesList,
        # Feature, map entry; then the Features message. Each is preceded by
        # a one-byte tag and the varint of its size.
        image = tf.cast(tf.strings.length(images), tf.int64)
        bytes_list = 1 + _tf_varint_size(image) + image
        feature = 1 + _tf_varint_size(bytes_list) + bytes_list
        entry = len(key) + 1 + _tf_varint_size(feature) + feature
        label_entries = tf.gather(self._label_entries, labels)
        features = (
            1
            + _tf_varint_size(entry)
            + entry
            + tf.cast(tf.strings.length(label_entries), tf.int64)
            + len(self._prob_prefix)
            + 4
            + len(self._probs_prefix)
            + 4 * self.num_classes
        )
        varints = tf.unstack(
            _tf_varints(tf.stack([features, entry, feature, bytes_list, image], axis=1)), axis=1
        )
        top_prob = tf.gather(probabilities, labels, batch_dims=1)
        return tf.strings.join(
            [
                b"\n",
                varints[0],
                b"\n",
                varints[1],
                key,
                b"\x12",
                varints[2],
                b"\n",
                varints[3],
                b"\n",
                varints[4],
                images,
                label_entries,
                self._prob_prefix,
                _tf_row_bytes(top_prob),
                self._probs_prefix,
                _tf_row_bytes(probabilities),
            ]
        )


def encode_jpeg(image, quality=95):
    """Encodes a uint8 [H, W, C] array as JPEG bytes."""
    image = np.asarray(image, dtype=np.uint8)
    if image.ndim == 2:
        image = image[:, :, None]
    return tf.io.encode_jpeg(image, quality=quality).numpy()


# ---------------------------------------------------------------------------
# Atomic writes: a reader never sees a half-written output. A temporary file
# is named `<path>.tmp-<host>-<pid>-<random>` and created exclusively (so a
# file or symlink planted under that name is never written through); a killed
# job leaves only such files, and the next write of the same path removes
# those whose process no longer runs.

_TMP_MARK = ".tmp-"


def _is_local(path):
    return "://" not in path


def _process_alive(pid):
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
    for tmp in tf.io.gfile.glob(glob_escape(path) + _TMP_MARK + "*"):
        owner = _tmp_owner(tmp, path)
        if owner is None or owner[0] != this_host or _process_alive(owner[1]):
            continue
        try:
            tf.io.gfile.remove(tmp)
        except tf.errors.NotFoundError:
            continue
        logging.info("Removed %s, left by an interrupted run.", tmp)
        removed.append(tmp)
    return removed


def glob_escape(path):
    """`path` with glob metacharacters escaped, for tf.io.gfile.glob."""
    return "".join(f"[{c}]" if c in "*?[" else c for c in path)


def create_exclusive(path):
    """Creates an empty file at `path`, failing if anything (a file, a symlink) is there.

    Local paths only; other file systems (gs://, ...) have no exclusive create.

    Raises:
      FileExistsError: something already exists at `path`.
    """
    if not _is_local(path):
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
        if not _is_local(self.path):
            with tf.io.gfile.GFile(self.path, "w") as f:
                f.write(text)
            return
        tmp = f"{self.path}.{os.getpid()}.new"
        try:
            create_exclusive(tmp)
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
                if holder is None and _is_local(self.path):
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
                    and not _process_alive(holder["pid"])
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
        if self.held:
            self.held = False
            if tf.io.gfile.exists(self.path):
                tf.io.gfile.remove(self.path)

    def __enter__(self):
        return self.acquire()

    def __exit__(self, *exc):
        self.release()


# ---------------------------------------------------------------------------
# Full disks.

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
    written aside and renamed (`atomic_output`), so nothing half-written is.

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


@contextlib.contextmanager
def gc_paused():
    """Pauses Python's cyclic garbage collector for the block.

    Building or parsing trees of many small lists (the JSON stats of 1000
    classes) triggers full collections, each walking the ~300k objects that
    TensorFlow creates at import: 0.6 s of a 0.8 s step. Nothing such a block
    builds is cyclic garbage.
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def write_tfrecord(path, serialized_records):
    """Writes serialized records to `path` atomically; returns how many were written."""
    count = 0
    with atomic_output(path) as tmp:
        with tf.io.TFRecordWriter(tmp) as writer:
            for record in serialized_records:
                writer.write(record)
                count += 1
    return count


def write_tfrecord_batches(path, batches):
    """Like write_tfrecord, for an iterable of sequences of serialized records.

    Returns:
      The number of records written.
    """
    count = 0
    with atomic_output(path) as tmp:
        with tf.io.TFRecordWriter(tmp) as writer:
            write = writer.write
            for batch in batches:
                # One C-level loop per batch: a Python loop would add ~0.1 us per record.
                collections.deque(map(write, batch), maxlen=0)
                count += len(batch)
    return count


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
    with tf.io.gfile.GFile(path) as f:
        return json.load(f)


# ---------------------------------------------------------------------------
# Progress.


def format_seconds(seconds):
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
        rate = self.rate()
        if not self.total or rate <= 0:
            return None
        return (self.total - self.done) / rate

    def message(self):
        rate = self.rate()
        total = f"/{self.total}" if self.total else ""
        eta = self.eta_seconds()
        eta_text = f", ETA {format_seconds(eta)}" if eta is not None else ""
        return f"{self._prefix}{self.done}{total} {self.name}, {rate:.1f} {self.name}/s{eta_text}"

    def update(self, count=1, force=False):
        self.done += count
        now = time.time()
        if force or now - self._last >= self._interval:
            self._last = now
            logging.info(self.message())
