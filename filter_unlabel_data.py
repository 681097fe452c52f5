"""Filters teacher predictions by confidence and balances classes (SPEC §8).

Two passes over the predictions of a sharded unlabeled set:

1. `--only_get_stats=1`, once per shard (and task): per predicted class, count
   the images in each top-1 probability bin [t, t + 0.01) for t = 0.00 ... 1.00
   (the last bin holds every probability >= 1.0). Writes
   `{prelim_stats_dir}/prelim_stats_%05d_%d.json`.
2. `--only_get_stats=0`, once per shard (and task), after pass 1 finished for
   every shard: sums the bins of all shards, picks a confidence threshold per
   class, and writes this shard's kept images, repeated (upsampling) or
   subsampled (downsampling) so that every class gets about `--num_image`
   images over all shards, to `{output_dir}/data/train-%d-%05d-of-%05d`.

The work of one shard may be split among `--total_replicas` filter tasks:
predictions of a shard come from W prediction workers (worker w predicted input
records w, w + W, w + 2W, ...), and task t handles workers
[t * W / total_replicas, (t + 1) * W / total_replicas). `--task=-1` is one
task, numbered 0 in file names, that handles every worker.

Every job of pass 2 computes the same thresholds from the same statistics, so
no job waits for another; random draws are seeded with (seed, shard, task), so
a re-run writes byte-identical files.

Provenance: the prediction info files name the checkpoint that predicted
(prefix, step, a fingerprint of its contents). Pass 1 copies it into the
shard's stats (key "provenance"); pass 2 refuses predictions of more than one
checkpoint, among the pass-1 stats and between them and the info files of the
shards it filters, and records the checkpoint in threshold.json and the
stats. Info files of older prediction runs hold only `image_num`: they are
accepted with a warning, as predictions of an unknown checkpoint.

True labels: when the raw unlabeled records carry their true class in
`image/class/label` (class + 1; 0 = unknown, as for real unlabeled data), the
stats report the accuracy of the pseudo labels per class and overall, before
filtering (every prediction) and after filtering and balancing (the written
records, copies counted).

`--shard_id` takes one shard or a comma-separated list (`--shard_id=0,4,8`):
one process then runs the pass for each, paying TensorFlow's start-up and
pass 2's reading of every shard's stats once. Every listed shard is attempted;
a shard that fails does not stop the others, and the job exits with an error
naming each failed shard, its file and the reason. A failed shard leaves its
earlier outputs as they were: outputs are written under temporary names and
renamed only when complete.

Pass 2 runs in TensorFlow except for the final write calls: labels, bins and
copies are computed per batch in a tf.data pipeline, and the output records
(the bytes of `utils.serialize_pseudo_labeled`) are built in-graph by
`utils.PseudoLabeledEncoder`.
"""

import functools
import hashlib
import json
import os
import re
import sys
from typing import NamedTuple

import numpy as np
import tensorflow as tf
from absl import app, flags, logging

import utils

# Bin edges t = i / 100. Selection compares flag values with the float64 grid
# (so --min_threshold=0.3 hits t = 0.30 exactly); images are binned in float32,
# the precision of the stored probabilities, so that a stored probability equal
# to float32(0.3) lands in the 0.30 bin rather than just below it.
THRESHOLDS = np.arange(101) / 100.0
_THRESHOLDS_F32 = THRESHOLDS.astype(np.float32)
NUM_BINS = len(THRESHOLDS)

_PREDICTION_BATCH = 4096
# Pass 2 reads images in batches of about _BATCH_BYTES, at most _IMAGE_BATCH
# images: large enough that the per-batch Python work is negligible.
_IMAGE_BATCH = 1024
_BATCH_BYTES = 16 * 1024 * 1024
# Message of the in-graph check; _diagnose then tells which count is off.
_COUNT_MISMATCH = "input records, predictions and image_num disagree"
_READ_BUFFER = 8 * 1024 * 1024
# Kept images are shuffled in chunks of about this many encoded bytes: a shard
# of a large unlabeled set does not fit in memory, and the trainer shuffles
# again anyway.
_SHUFFLE_BUFFER_BYTES = 512 * 1024 * 1024
_NUM_SAMPLES_PER_CLASS = 10
_JPEG_MAGIC = b"\xff\xd8\xff"
# Key of the provenance in the pass-1 stats, next to the class ids; class ids
# are digits, so it can never be taken for one.
PROVENANCE_KEY = "provenance"
_MAX_LISTED = 20


class FilterError(ValueError):
    """Inputs are missing or inconsistent; the message names the file(s)."""


# ---------------------------------------------------------------------------
# File names.


def input_path(input_dir, file_prefix, shard_id, num_shards):
    """`{input_dir}/{file_prefix}-%05d-of-%05d`: the raw unlabeled records of a shard."""
    return os.path.join(input_dir, f"{file_prefix}-{shard_id:05d}-of-{num_shards:05d}")


def prelim_stats_path(prelim_stats_dir, shard_id, task_id):
    """`{prelim_stats_dir}/prelim_stats_%05d_%d.json`: pass-1 bins of one shard and task."""
    return os.path.join(prelim_stats_dir, f"prelim_stats_{shard_id:05d}_{task_id:d}.json")


def stats_path(output_dir, shard_id, task_id):
    """`{output_dir}/stats/stats_%05d_%d.json`: kept counts of one shard and task."""
    return os.path.join(output_dir, "stats", f"stats_{shard_id:05d}_{task_id:d}.json")


def _uid(label):
    return str(int(label))


def _op_text(error):
    """The useful part of a TensorFlow error message, without the graph-function names."""
    text = getattr(error, "message", None) or str(error)
    text = re.sub(r"\{\{function_node [^}]*\}\}\s*", "", text)
    text = re.sub(r"\s*\[Op:[^\]]*\]( name: ?)?\s*$", "", text)
    return text.strip()


def _listed(items, limit=_MAX_LISTED):
    items = [str(i) for i in items]
    return ", ".join(items[:limit]) + (" ..." if len(items) > limit else "")


def _read_json_file(path, what):
    """The JSON object of `path`; FilterError naming the file if it is not readable JSON."""
    try:
        obj = utils.read_json(path)
    except (ValueError, OSError, tf.errors.OpError) as e:
        raise FilterError(f"cannot read {what} {path}: {_op_text(e)}") from e
    if not isinstance(obj, dict):
        raise FilterError(f"{what} {path} holds {type(obj).__name__}, expected a JSON object")
    return obj


# ---------------------------------------------------------------------------
# Tasks and prediction workers.


def discover_label_replicas(info_dir, shard_id, num_shards):
    """Number W of prediction workers of a shard, from its info files.

    Args:
      info_dir: directory of `info-%05d-of-%05d-%05d.txt` files.
      shard_id: shard whose info files are listed.
      num_shards: total number of shards.

    Returns:
      W such that exactly the info files of workers 0..W-1 exist.

    Raises:
      FilterError: no info file, or the worker ids are not 0..W-1.
    """
    pattern = utils.info_path(info_dir, shard_id, num_shards, 0)[: -len("00000.txt")] + "*.txt"
    workers = []
    for path in tf.io.gfile.glob(pattern):
        match = re.fullmatch(r"(\d{5})\.txt", os.path.basename(path).rsplit("-", 1)[-1])
        if match:
            workers.append(int(match.group(1)))
    workers.sort()
    if not workers:
        raise FilterError(f"no prediction info file matches {pattern}")
    if workers != list(range(len(workers))):
        raise FilterError(
            f"info files matching {pattern} are for workers {workers}, expected 0..{len(workers) - 1}; "
            "pass --total_label_replicas"
        )
    return len(workers)


def task_workers(task, total_replicas, total_label_replicas):
    """The task number used in file names and the prediction workers it handles.

    Args:
      task: filter task in [0, total_replicas), or -1 for a single task.
      total_replicas: number of filter tasks per shard.
      total_label_replicas: number W of prediction workers per shard.

    Returns:
      (task_id, workers): task_id is 0 for task -1; workers is the contiguous
      block [task_id * k, (task_id + 1) * k) with k = W / total_replicas.

    Raises:
      FilterError: inconsistent task, total_replicas and W.
    """
    if total_replicas < 1:
        raise FilterError(f"--total_replicas must be >= 1, got {total_replicas}")
    if task == -1:
        if total_replicas != 1:
            raise FilterError(
                f"--task=-1 means a single task, but --total_replicas={total_replicas}; "
                f"pass --task in [0, {total_replicas})"
            )
        task = 0
    if not 0 <= task < total_replicas:
        raise FilterError(f"--task={task} is not in [0, --total_replicas={total_replicas})")
    if total_label_replicas < total_replicas or total_label_replicas % total_replicas:
        raise FilterError(
            f"{total_label_replicas} prediction workers per shard cannot be split evenly "
            f"among --total_replicas={total_replicas} filter tasks"
        )
    per_task = total_label_replicas // total_replicas
    return task, list(range(task * per_task, (task + 1) * per_task))


def _resolve_workers(info_dir, shard_id, num_shards, task, total_replicas, total_label_replicas):
    if total_label_replicas == -1:
        total_label_replicas = discover_label_replicas(info_dir, shard_id, num_shards)
    task_id, workers = task_workers(task, total_replicas, total_label_replicas)
    return task_id, workers, total_label_replicas


def _check_data_type(data_type):
    if data_type != "tfrecord":
        raise FilterError(f"--data_type={data_type!r} is not supported; only 'tfrecord' is")


# ---------------------------------------------------------------------------
# Prediction info files and provenance.


class Info(NamedTuple):
    """What one prediction worker's info file says.

    Attributes:
      path: the info file.
      image_num: number of predictions of the worker.
      provenance: {"checkpoint", "global_step", "fingerprint", "use_ema"} of
        the checkpoint that predicted, or None for an info file of an older
        prediction run (only `image_num`).
      input_file: the input shard the worker read, if the file says so.
      input_bytes: its size then, if the file says so.
    """

    path: str
    image_num: int
    provenance: dict | None
    input_file: str | None = None
    input_bytes: int | None = None


def _parse_provenance(raw, path):
    """The provenance dict kept from the `provenance` of an info or stats file."""
    fingerprint = raw.get("fingerprint") if isinstance(raw, dict) else None
    checkpoint = raw.get("checkpoint") if isinstance(raw, dict) else None
    if not isinstance(fingerprint, str) or not fingerprint or not isinstance(checkpoint, str):
        raise FilterError(
            f"{path}: 'provenance' must be an object with the 'checkpoint' prefix and a non-empty "
            f"'fingerprint' string, got {json.dumps(raw)[:200]}"
        )
    step = raw.get("global_step")
    step = -1 if step is None else step  # -1: unknown, as predict_label.py writes it
    use_ema = raw.get("use_ema")
    if (
        not isinstance(step, int)
        or isinstance(step, bool)
        or not (use_ema is None or isinstance(use_ema, bool))
    ):
        raise FilterError(
            f"{path}: provenance 'global_step' must be an integer and 'use_ema' a boolean, "
            f"got {step!r} and {use_ema!r}"
        )
    return {
        "checkpoint": checkpoint,
        "global_step": step,
        "fingerprint": fingerprint,
        "use_ema": use_ema,
    }


def read_info(info_dir, shard_id, num_shards, worker):
    """Reads one prediction worker's info file.

    Returns:
      An Info.

    Raises:
      FilterError: the file is missing or malformed.
    """
    path = utils.info_path(info_dir, shard_id, num_shards, worker)
    if not tf.io.gfile.exists(path):
        raise FilterError(f"missing prediction info file {path}")
    info = _read_json_file(path, "prediction info file")
    try:
        image_num = int(info["image_num"])
    except (ValueError, KeyError, TypeError) as e:
        raise FilterError(f"cannot read image_num from {path}: {e!r}") from e
    if image_num < 0:
        raise FilterError(f"{path}: image_num={image_num} is negative")
    raw = info.get(PROVENANCE_KEY)
    if raw is None:
        return Info(path, image_num, None)
    provenance = _parse_provenance(raw, path)
    input_bytes = raw.get("input_bytes")
    return Info(
        path,
        image_num,
        provenance,
        raw.get("input_file"),
        input_bytes if isinstance(input_bytes, int) else None,
    )


def _same_checkpoint(a, b):
    # The fingerprint identifies the weights; EMA and raw weights of one
    # checkpoint predict differently, so they count as different sources.
    return a["fingerprint"] == b["fingerprint"] and a.get("use_ema") == b.get("use_ema")


def describe_provenance(provenance):
    """'ckpt/teacher/ckpt-3000 (step 3000, fingerprint 1a2b3c4d5e6f, EMA weights)'."""
    if provenance is None:
        return "an unknown checkpoint (info files without provenance)"
    step = provenance.get("global_step", -1)
    parts = [
        f"step {step}" if step is not None and step >= 0 else "step unknown",
        f"fingerprint {provenance['fingerprint'][:12]}",
    ]
    if provenance.get("use_ema") is not None:
        parts.append("EMA weights" if provenance["use_ema"] else "raw weights")
    return f"{provenance['checkpoint']} ({', '.join(parts)})"


def common_provenance(sources, what, hint):
    """The one checkpoint that all `sources` come from.

    Args:
      sources: list of (where, provenance or None); `where` names a shard and
        its file, e.g. "shard 3 (/data/prelim_stats_00003_0.json)".
      what: what the sources are, for messages, e.g. "the pass-1 stats".
      hint: how to fix a mix, appended to the error.

    Returns:
      (provenance, where): the shared provenance and the first source that
      has it; (None, None) when no source knows its checkpoint.

    Raises:
      FilterError: two sources come from different checkpoints; the message
        names each checkpoint (prefix and step) and one source of each.
    """
    groups = []  # [provenance, [where, ...]]
    unknown = []
    for where, provenance in sources:
        if provenance is None:
            unknown.append(where)
            continue
        for group in groups:
            if _same_checkpoint(group[0], provenance):
                group[1].append(where)
                break
        else:
            groups.append([provenance, [where]])
    if len(groups) > 1:
        described = "; ".join(
            f"{describe_provenance(p)} for {len(places)} of them, e.g. {places[0]}"
            for p, places in groups[:4]
        )
        raise FilterError(
            f"{what} come from {len(groups)} different checkpoints: {described}. {hint}"
        )
    if unknown and groups:
        logging.warning(
            "%d of %d of %s do not say which checkpoint predicted (written by an older "
            "predict_label.py), e.g. %s; assuming %s",
            len(unknown),
            len(sources),
            what,
            unknown[0],
            describe_provenance(groups[0][0]),
        )
    if not groups:
        return None, None
    return groups[0][0], groups[0][1][0]


def _shard_provenance(infos, shard_id):
    """The checkpoint of a shard's predictions, from the Info of its workers."""
    provenance, _ = common_provenance(
        [
            (f"shard {shard_id} worker {w} ({info.path})", info.provenance)
            for w, info in infos.items()
        ],
        f"the prediction info files of shard {shard_id}",
        f"Predict shard {shard_id} again with one checkpoint.",
    )
    if provenance is None:
        logging.warning(
            "the info files of shard %d (e.g. %s) do not say which checkpoint predicted (written "
            "by an older predict_label.py): predictions of different checkpoints cannot be told "
            "apart",
            shard_id,
            next(iter(infos.values())).path,
        )
    return provenance


def _check_input_file(infos, input_file):
    """Checks that the predictions were made on this input file.

    A changed size means other records than the predicted ones, whose pseudo
    labels would then belong to other images: an error. Another file name
    (e.g. a copy of the data elsewhere) is only a warning.
    """
    size = None
    for info in infos.values():
        if info.input_bytes is not None:
            size = tf.io.gfile.stat(input_file).length if size is None else size
            if size != info.input_bytes:
                raise FilterError(
                    f"{info.path} says its predictions were made on {info.input_file} of "
                    f"{info.input_bytes} bytes, but {input_file} has {size} bytes: the input "
                    "changed after prediction; predict this shard again"
                )
        if info.input_file and os.path.basename(info.input_file) != os.path.basename(input_file):
            logging.warning(
                "%s says its predictions are for %s, but they are filtered with %s",
                info.path,
                info.input_file,
                input_file,
            )


# ---------------------------------------------------------------------------
# Diagnosing broken files. The fast readers (fixed-length parsing, zipped
# tf.data pipelines) only say that something failed; these slow record-by-
# record checks run after a failure to say which file and record, and never
# raise themselves.


def _example_problem(record, key, kind, length=None):
    """Why `record` is not a tf.train.Example with `length` values of `kind` under `key`, or None.

    kind is "bytes_list", "float_list" or "int64_list"; length None means any
    number of values (one of each record is still required).
    """
    try:
        example = tf.train.Example.FromString(record)
    except Exception as e:  # protobuf's DecodeError, across protobuf versions
        return f"is not a tf.train.Example ({e})"
    feature = example.features.feature
    if key not in feature:
        return f"has no '{key}' feature"
    found = feature[key].WhichOneof("kind")
    if found != kind:
        return f"has a '{key}' {found or 'empty'} feature, expected {kind}"
    values = getattr(feature[key], kind).value
    if length is not None and len(values) != length:
        return f"has {len(values)} values in '{key}', expected {length}"
    return None


def _input_record_problem(record):
    problem = _example_problem(record, "image/encoded", "bytes_list", 1)
    if problem is None:
        feature = tf.train.Example.FromString(record).features.feature
        if "image/class/label" in feature:
            problem = _example_problem(record, "image/class/label", "int64_list", 1)
    return problem


def _prediction_record_problem(num_classes):
    def check(record):
        problem = _example_problem(record, "probabilities", "float_list")
        if problem is None:
            example = tf.train.Example.FromString(record)
            found = len(example.features.feature["probabilities"].float_list.value)
            if found != num_classes:
                problem = f"has {found} probabilities, expected --num_label_classes={num_classes}"
        return problem

    return check


def scan_records(path, check=None):
    """Reads a TFRecord file record by record to find what is wrong with it.

    Args:
      path: the file.
      check: optional function (serialized record) -> problem text or None.

    Returns:
      (num_records, problem): the records read, and a description of the
      first problem ("record 7 has no 'probabilities' feature", "truncated or
      corrupt TFRecord data after record 9 (...)") or None.
    """
    count = 0
    try:
        for record in tf.data.TFRecordDataset(path, buffer_size=_READ_BUFFER):
            if check is not None:
                problem = check(record.numpy())
                if problem:
                    return count, f"record {count} {problem}"
            count += 1
    except tf.errors.OpError as e:
        return count, (
            f"truncated or corrupt TFRecord data after {count} good records ({_op_text(e)})"
        )
    return count, None


def _worker_count(num_records, num_workers, worker):
    """Records worker, worker + W, ... of a file of num_records records."""
    return len(range(worker, num_records, num_workers))


def _diagnose(input_file, prediction_file, num_workers, worker, num_classes, image_num, error):
    """The FilterError explaining why pass 2 failed to read one worker's input and predictions.

    Checks, in this order, the input file (TFRecord framing, `image/encoded`,
    `image/class/label`), the prediction file (framing, `probabilities` of
    num_classes values), then the counts of both against each other and the
    info file. Never raises: an undiagnosed failure is described as is.
    """
    try:
        num_input, problem = scan_records(input_file, _input_record_problem)
        if problem:
            return FilterError(f"{input_file}: {problem}")
        num_pred, problem = (
            scan_records(prediction_file, _prediction_record_problem(num_classes))
            if tf.io.gfile.exists(prediction_file)
            else (0, None)
        )
        if problem:
            return FilterError(f"{prediction_file}: {problem}")
        num_input = _worker_count(num_input, num_workers, worker)
        if num_pred != num_input:
            return FilterError(
                f"{prediction_file} has {num_pred} predictions but {input_file} has "
                f"{num_input} records for prediction worker {worker} of {num_workers} "
                f"(records {worker}, {worker} + {num_workers}, ...)"
            )
        if num_pred != image_num:
            return FilterError(
                f"{prediction_file} and {input_file} (worker {worker} of {num_workers}) have "
                f"{num_pred} records but the info file says image_num={image_num}"
            )
    except Exception as e:  # The diagnosis must never hide the original failure.
        logging.exception("diagnosing %s failed", prediction_file)
        return FilterError(
            f"cannot read {input_file} or {prediction_file}: {_op_text(error)} "
            f"(and the diagnosis failed: {e!r})"
        )
    return FilterError(f"cannot read {input_file} or {prediction_file}: {_op_text(error)}")


# ---------------------------------------------------------------------------
# Reading predictions.


def read_prediction_batches(path, num_classes, batch_size=_PREDICTION_BATCH):
    """Yields the `probabilities` of a prediction file as float32 arrays [batch, num_classes].

    Raises:
      FilterError: a record's vector length differs from num_classes, a value
        is negative or not finite, or the file cannot be parsed (truncated,
        corrupt, a record without `probabilities`); the message names the file.
    """
    # Fixed-length parsing is 2-3x faster than ragged parsing; when it fails,
    # scan_records finds the record to blame.
    spec = {"probabilities": tf.io.FixedLenFeature([num_classes], tf.float32)}
    dataset = (
        tf.data.TFRecordDataset(path, buffer_size=_READ_BUFFER)
        .batch(batch_size)
        .map(lambda s: tf.io.parse_example(s, spec)["probabilities"])
        .prefetch(2)
    )
    start = 0
    try:
        for batch in dataset:
            probs = batch.numpy()
            if not np.all(np.isfinite(probs)) or np.any(probs < 0):
                raise FilterError(
                    f"{path}: negative or non-finite probabilities near record {start}"
                )
            start += len(probs)
            yield probs
    except tf.errors.OpError as e:
        _, problem = scan_records(path, _prediction_record_problem(num_classes))
        if problem:
            raise FilterError(f"{path}: {problem}") from e
        raise FilterError(f"cannot read predictions from {path}: {_op_text(e)}") from e


def top1(probabilities):
    """Predicted class (argmax) and its probability of a [n, num_classes] array."""
    labels = np.argmax(probabilities, axis=1)
    return labels, probabilities[np.arange(len(labels)), labels]


def bin_index(top_prob):
    """Index i of the bin [t_i, t_{i+1}) holding each probability; >= 1.0 goes to bin 100."""
    return np.searchsorted(_THRESHOLDS_F32, np.asarray(top_prob, np.float32), side="right") - 1


def count_bins(labels, bins, num_classes):
    """Counts per (class, bin) as an int64 array [num_classes, NUM_BINS]."""
    flat = np.asarray(labels, np.int64) * NUM_BINS + np.asarray(bins, np.int64)
    return np.bincount(flat, minlength=num_classes * NUM_BINS).reshape(num_classes, NUM_BINS)


# ---------------------------------------------------------------------------
# Pass 1.


def _counts_to_json(counts, keep_empty):
    """{uid: [[t, count], ...]}, the layout of the published stats files."""
    thresholds = THRESHOLDS.tolist()
    return {
        _uid(c): list(map(list, zip(thresholds, row.tolist(), strict=True)))
        for c, row in enumerate(counts)
        if keep_empty or row.any()
    }


@utils.gc_paused()
def read_prelim_stats(path, num_classes):
    """Reads a pass-1 stats file.

    Returns:
      (counts, provenance): the int array [num_classes, NUM_BINS] and the
      checkpoint of the predictions (None if the file does not say).

    Raises:
      FilterError: the file is not readable or not in the layout of
        write_prelim_stats; the message names it.
    """
    obj = _read_json_file(path, "pass-1 stats file")
    raw_provenance = obj.pop(PROVENANCE_KEY, None)
    provenance = None if raw_provenance is None else _parse_provenance(raw_provenance, path)
    counts = np.zeros([num_classes, NUM_BINS], np.int64)
    for uid, pairs in obj.items():
        if not uid.isdigit() or int(uid) >= num_classes:
            raise FilterError(
                f"{path}: class {uid!r} is not in [0, --num_label_classes={num_classes})"
            )
        try:
            bins = [t for t, _ in pairs]
            counts[int(uid)] = [n for _, n in pairs]
        except (TypeError, ValueError) as e:
            raise FilterError(f"{path}: class {uid} is not a list of [t, count] pairs") from e
        if bins != THRESHOLDS.tolist():
            raise FilterError(f"{path}: class {uid} does not have the 101 bins 0.00 ... 1.00")
    return counts, provenance


class PrelimStats(NamedTuple):
    """Pass-1 result of one shard and task: see count_shard."""

    task_id: int
    counts: np.ndarray
    provenance: dict | None


def count_shard(
    prediction_dir,
    info_dir,
    shard_id,
    num_shards,
    num_label_classes,
    *,
    task=-1,
    total_replicas=1,
    total_label_replicas=-1,
):
    """Pass 1: per-class histogram of top-1 probabilities of one shard (and task).

    Args:
      prediction_dir: directory of `train-info-*` prediction files.
      info_dir: directory of `info-*.txt` image-count files.
      shard_id: shard to count.
      num_shards: total number of shards.
      num_label_classes: length of every probability vector.
      task: filter task, or -1 for a single task.
      total_replicas: number of filter tasks per shard.
      total_label_replicas: prediction workers per shard; -1 to discover.

    Returns:
      A PrelimStats: counts[c, i] is the number of images predicted as class
      c with top-1 probability in [t_i, t_{i+1}) (bin 100: >= 1.0);
      provenance the checkpoint that predicted (None if unknown).

    Raises:
      FilterError: a file is missing, broken, or disagrees with its info
        file, or the workers' predictions come from different checkpoints.
    """
    task_id, workers, _ = _resolve_workers(
        info_dir, shard_id, num_shards, task, total_replicas, total_label_replicas
    )
    infos = {w: read_info(info_dir, shard_id, num_shards, w) for w in workers}
    provenance = _shard_provenance(infos, shard_id)
    progress = utils.Progress(
        sum(i.image_num for i in infos.values()),
        "predictions",
        prefix=f"stats shard {shard_id} task {task_id}: ",
    )
    counts = np.zeros([num_label_classes, NUM_BINS], np.int64)
    for worker, info in infos.items():
        path = utils.prediction_path(prediction_dir, shard_id, num_shards, worker)
        if not tf.io.gfile.exists(path):
            if info.image_num == 0:
                continue
            raise FilterError(f"missing prediction file {path}")
        seen = 0
        for probs in read_prediction_batches(path, num_label_classes):
            labels, top_prob = top1(probs)
            counts += count_bins(labels, bin_index(top_prob), num_label_classes)
            seen += len(probs)
            progress.update(len(probs))
        if seen != info.image_num:
            raise FilterError(
                f"{path} has {seen} predictions but {info.path} says image_num={info.image_num}"
            )
    progress.update(0, force=True)
    return PrelimStats(task_id, counts, provenance)


def compute_prelim_stats(prediction_dir, info_dir, shard_id, num_shards, num_label_classes, **kw):
    """count_shard without the provenance: (task_id, counts)."""
    result = count_shard(prediction_dir, info_dir, shard_id, num_shards, num_label_classes, **kw)
    return result.task_id, result.counts


@utils.gc_paused()
def write_prelim_stats(prelim_stats_dir, shard_id, task_id, counts, provenance=None):
    """Writes pass-1 counts as `{uid: [[t, count] x 101]}` (classes with images only).

    A known provenance is stored under "provenance" next to the classes.
    """
    path = prelim_stats_path(prelim_stats_dir, shard_id, task_id)
    obj = _counts_to_json(counts, keep_empty=False)
    if provenance is not None:
        obj[PROVENANCE_KEY] = provenance
    utils.write_json(path, obj, indent=None)
    logging.info("wrote %s (%d images)", path, int(counts.sum()))
    return path


# ---------------------------------------------------------------------------
# Thresholds and balancing.


@utils.gc_paused()
def load_prelim_stats(prelim_stats_dir, num_shards, total_replicas, num_label_classes):
    """Sums the pass-1 counts of shards 0..num_shards-1 and tasks 0..total_replicas-1.

    Returns:
      (total, provenance, where): the summed counts [num_label_classes,
      NUM_BINS], the checkpoint all stats come from (None if none says) and
      the first stats file naming it.

    Raises:
      FilterError: some stats files are missing (the message lists the shard
        ids), unreadable, or come from different checkpoints (the message
        names both, with one shard of each).
    """
    paths = {
        (shard, task): prelim_stats_path(prelim_stats_dir, shard, task)
        for shard in range(num_shards)
        for task in range(total_replicas)
    }
    missing = [key for key, path in paths.items() if not tf.io.gfile.exists(path)]
    if missing:
        shards = sorted({shard for shard, _ in missing})
        listed = ", ".join(str(s) for s in shards[:50]) + (" ..." if len(shards) > 50 else "")
        raise FilterError(
            f"missing prelim stats for {len(shards)} of {num_shards} shards in "
            f"{prelim_stats_dir} (run --only_get_stats=1 for them first): shard ids {listed}"
            + (f"; missing (shard, task) pairs {missing[:20]}" if total_replicas > 1 else "")
        )
    total = np.zeros([num_label_classes, NUM_BINS], np.int64)
    sources = []
    for (shard, _), path in paths.items():
        counts, provenance = read_prelim_stats(path, num_label_classes)
        total += counts
        sources.append((f"shard {shard} ({path})", provenance))
    provenance, where = common_provenance(
        sources,
        "the pass-1 stats",
        "Predict the stale shards again with one checkpoint, then re-run --only_get_stats=1 "
        "for them.",
    )
    return total, provenance, where


def load_total_counts(prelim_stats_dir, num_shards, total_replicas, num_label_classes):
    """The summed counts of load_prelim_stats."""
    return load_prelim_stats(prelim_stats_dir, num_shards, total_replicas, num_label_classes)[0]


def select_thresholds(
    total_counts, num_image, *, min_threshold=0.0, max_prob=2.0, use_top=True, use_all=False
):
    """Picks the confidence threshold of every class.

    Per class, walks the thresholds t < max_prob, t >= min_threshold from the
    top down, accumulating bin counts, and stops at the first t where the count
    reaches num_image (with use_top and not use_all), else at the lowest
    eligible t.

    Args:
      total_counts: int array [num_classes, NUM_BINS] summed over all shards.
      num_image: target number of images per class.
      min_threshold: lowest threshold considered.
      max_prob: thresholds (and images) above this are ignored.
      use_top: stop as soon as num_image images are reached.
      use_all: always go down to min_threshold.

    Returns:
      (threshold_idx, total_image): per class, the index into THRESHOLDS of the
      selected t and the number N of images with t <= prob counted under it.

    Raises:
      FilterError: no threshold satisfies min_threshold <= t < max_prob.
    """
    eligible = (THRESHOLDS < max_prob) & (THRESHOLDS >= min_threshold)
    if not eligible.any():
        raise FilterError(
            f"no threshold t in 0.00..1.00 has --min_threshold={min_threshold} <= t < --max_prob={max_prob}"
        )
    lowest = int(np.flatnonzero(eligible)[0])
    # cum[c, i]: images of class c in eligible bins at or above bin i.
    cum = np.cumsum((total_counts * eligible)[:, ::-1], axis=1)[:, ::-1]
    threshold_idx = np.full(len(total_counts), lowest, np.int64)
    if use_top and not use_all:
        reached = (cum >= num_image) & eligible
        highest = NUM_BINS - 1 - np.argmax(reached[:, ::-1], axis=1)
        threshold_idx = np.where(reached.any(axis=1), highest, threshold_idx)
    total_image = cum[np.arange(len(cum)), threshold_idx]
    return threshold_idx, total_image


def copy_rates(total_image, num_image, *, upsample=True, use_all=False):
    """Expected copies of each kept image per class: num_image / N (capped at 1 without upsample)."""
    total_image = np.asarray(total_image, np.float64)
    if use_all:
        return np.ones_like(total_image)
    rates = np.divide(
        float(num_image), total_image, out=np.zeros_like(total_image), where=total_image > 0
    )
    return rates if upsample else np.minimum(rates, 1.0)


def decide_copies(labels, top_prob, threshold_idx, rates, max_prob, uniforms):
    """Number of copies of each image in the output.

    An image passes if threshold <= prob <= max_prob for its class; it is then
    written floor(rate) times plus once more with probability frac(rate),
    decided by `uniforms` (one U[0, 1) draw per image). Pass 2 does the same
    in-graph (_decide_fn); this is the reference it is tested against.

    Returns:
      (copies, passed): int64 copies and the boolean pass mask.
    """
    top_prob = np.asarray(top_prob, np.float32)
    passed = (bin_index(top_prob) >= threshold_idx[labels]) & (top_prob <= np.float32(max_prob))
    rate = rates[labels]
    whole = np.floor(rate)
    copies = (whole + (uniforms < rate - whole)).astype(np.int64)
    return np.where(passed, copies, 0), passed


def _check_kept(total_counts, threshold_idx, total_image, min_threshold, max_prob):
    """Warns for each class that keeps no image; FilterError when no class keeps any."""
    predicted = total_counts.sum(axis=1)
    if not total_image.any():
        raise FilterError(
            f"no image would be kept: none of the {int(predicted.sum())} predictions has a top-1 "
            f"probability in [--min_threshold={min_threshold}, --max_prob={max_prob}]. Lower "
            "--min_threshold, or train the teacher longer."
        )
    empty = np.flatnonzero(total_image == 0)
    for c in empty[:_MAX_LISTED]:
        if not predicted[c]:
            logging.warning("class %d keeps no image: no image is predicted as class %d", c, c)
            continue
        logging.warning(
            "class %d keeps no image: %d images are predicted as class %d, none with probability "
            "in [%.2f, --max_prob=%s] (--min_threshold=%s)",
            c,
            predicted[c],
            c,
            THRESHOLDS[threshold_idx[c]],
            max_prob,
            min_threshold,
        )
    if len(empty):
        logging.warning(
            "%d of %d classes keep no image: %s", len(empty), len(total_image), _listed(empty)
        )


@utils.gc_paused()
def _write_selection(
    prelim_stats_dir,
    output_dir,
    total_counts,
    threshold_idx,
    total_image,
    num_image,
    provenance=None,
):
    """Writes total_counts(_sum).json and threshold.json / num_image_across_cat.json.

    Every pass-2 job writes the same bytes, atomically, so no job has to wait
    for a designated writer. threshold.json also names the checkpoint that
    predicted ("provenance"), when known.
    """
    cum_all = np.cumsum(total_counts[:, ::-1], axis=1)[:, ::-1]
    # 101 bins per class: compact JSON (indenting would take seconds per job).
    utils.write_json(
        os.path.join(prelim_stats_dir, "total_counts.json"),
        _counts_to_json(total_counts, True),
        indent=None,
    )
    utils.write_json(
        os.path.join(prelim_stats_dir, "total_counts_sum.json"),
        _counts_to_json(cum_all, True),
        indent=None,
    )
    thresholds = {
        _uid(c): [float(THRESHOLDS[i]), int(n)]
        for c, (i, n) in enumerate(zip(threshold_idx, total_image, strict=True))
    }
    if provenance is not None:
        thresholds[PROVENANCE_KEY] = provenance
    utils.write_json(os.path.join(output_dir, "threshold.json"), thresholds)
    utils.write_json(
        os.path.join(output_dir, "num_image_across_cat.json"),
        {"num_image_across_cat": int(np.minimum(total_image, num_image).sum())},
    )


# ---------------------------------------------------------------------------
# Pass 2.


def _batch_size(input_file, num_records):
    """Images per batch of pass 2: about _BATCH_BYTES of input records, at most _IMAGE_BATCH."""
    record_bytes = tf.io.gfile.stat(input_file).length / max(1, num_records)
    return int(np.clip(_BATCH_BYTES // max(1.0, record_bytes), 16, _IMAGE_BATCH))


def _decide_fn(selection, with_images):
    """The pass-2 work of one batch, in-graph: what decide_copies and top1 do, plus encoding.

    Args:
      selection: the Selection of this pass.
      with_images: also return the kept images (for samples).

    Returns:
      A function (input records [n], prediction records [n], uniforms [n])
      -> dict of tensors: `records`, `copies`, `labels`, `top_prob`, `kept`
      (index in the batch) of the kept images; `image_bytes`, their total
      size; `seen_bins`, `before`, `after`, counts as in pass 1 and the stats;
      `true_before` / `true_after` [2, num_classes], per pseudo label the
      images (copies, after) whose true class is known (row 0) and those
      whose true class is the pseudo label (row 1); `true_invalid`, the
      number of true labels outside 0..num_classes; `valid`, whether all
      probabilities are finite and >= 0; `size`, n.
    """
    num_classes = selection.num_label_classes
    encoder = _encoder(num_classes)
    image_spec = {
        "image/encoded": tf.io.FixedLenFeature([], tf.string),
        # 1-based true class of data whose labels are known; 0 (or absent) = unknown.
        "image/class/label": tf.io.FixedLenFeature([], tf.int64, default_value=0),
    }
    pred_spec = {"probabilities": tf.io.FixedLenFeature([num_classes], tf.float32)}
    threshold_idx = tf.constant(selection.threshold_idx, tf.int64)
    rates = tf.constant(selection.rates, tf.float64)
    max_prob = tf.constant(selection.max_prob, tf.float32)
    edges = tf.constant(_THRESHOLDS_F32[None, :])

    def per_class(values, labels):
        return tf.math.unsorted_segment_sum(values, labels, num_classes)

    def decide(input_records, prediction_records, uniforms):
        size = tf.shape(input_records)[0]
        for other in (prediction_records, uniforms):
            tf.debugging.assert_equal(size, tf.shape(other)[0], message=_COUNT_MISMATCH)
        parsed = tf.io.parse_example(input_records, image_spec)
        images = parsed["image/encoded"]
        true_label = parsed["image/class/label"]
        probs = tf.io.parse_example(prediction_records, pred_spec)["probabilities"]
        valid = tf.reduce_all(tf.math.is_finite(probs) & (probs >= 0))
        top_prob = tf.reduce_max(probs, axis=1)
        # The first index of the maximum, as np.argmax gives (and pass 1
        # counted with): tf.argmax leaves ties unspecified.
        classes = tf.range(num_classes, dtype=tf.int64)
        labels = tf.reduce_min(tf.where(probs == top_prob[:, None], classes, num_classes), axis=1)
        labels = tf.minimum(labels, num_classes - 1)  # rows of NaN; rejected by `valid`
        bins = tf.searchsorted(edges, top_prob[None, :], side="right", out_type=tf.int64)[0] - 1
        passed = (bins >= tf.gather(threshold_idx, labels)) & (top_prob <= max_prob)
        rate = tf.gather(rates, labels)
        whole = tf.floor(rate)
        copies = tf.cast(whole, tf.int64) + tf.cast(uniforms < rate - whole, tf.int64)
        copies = tf.where(passed, copies, 0)
        kept = tf.where(copies > 0)[:, 0]
        kept_images = tf.gather(images, kept)
        kept_labels = tf.gather(labels, kept)
        known = (true_label >= 1) & (true_label <= num_classes)
        correct = known & (true_label - 1 == labels)
        out = {
            "records": encoder.encode_batch(kept_images, tf.gather(probs, kept), kept_labels),
            "copies": tf.gather(copies, kept),
            "labels": kept_labels,
            "top_prob": tf.gather(top_prob, kept),
            "kept": kept,
            "image_bytes": tf.reduce_sum(tf.cast(tf.strings.length(kept_images), tf.int64)),
            "seen_bins": tf.reshape(
                tf.math.unsorted_segment_sum(
                    tf.ones_like(bins), labels * NUM_BINS + bins, num_classes * NUM_BINS
                ),
                [num_classes, NUM_BINS],
            ),
            "before": per_class(tf.cast(passed, tf.int64), labels),
            "after": per_class(copies, labels),
            "true_before": tf.stack(
                [
                    per_class(tf.cast(known, tf.int64), labels),
                    per_class(tf.cast(correct, tf.int64), labels),
                ]
            ),
            "true_after": tf.stack(
                [
                    per_class(tf.where(known, copies, 0), labels),
                    per_class(tf.where(correct, copies, 0), labels),
                ]
            ),
            "true_invalid": tf.reduce_sum(tf.cast((true_label != 0) & ~known, tf.int64)),
            "valid": valid,
            "size": size,
        }
        if with_images:
            out["images"] = kept_images
        return out

    return decide


def _decided_batches(
    input_file,
    prediction_file,
    num_workers,
    worker,
    num_classes,
    image_num,
    uniforms,
    decide,
    batch_size,
):
    """Yields the pass-2 decisions of one prediction worker's images, batch by batch.

    One tf.data pipeline reads the input records worker, worker + W, ... and
    the worker's predictions, and runs `decide` (see _decide_fn) on each
    batch, so everything but the final writes runs in TensorFlow's threads.

    Args:
      input_file: the shard's raw unlabeled records.
      prediction_file: the worker's predictions.
      num_workers: W, the number of prediction workers of the shard.
      worker: the worker, in [0, W).
      num_classes: length of every probability vector.
      image_num: the worker's image count from its info file.
      uniforms: float64 array [image_num], one U[0, 1) draw per image.
      decide: the function of _decide_fn.
      batch_size: images per batch.

    Yields:
      The dict of `decide`, as numpy arrays, for every non-empty batch.

    Raises:
      FilterError: a file is missing, truncated or malformed (a record
        without its key, probabilities of the wrong length), or the number
        of input records, predictions and the info file's image_num differ;
        the message names the file and, where it can, the record.
    """
    has_predictions = tf.io.gfile.exists(prediction_file)
    if not has_predictions and image_num:
        raise FilterError(f"missing prediction file {prediction_file}")
    inputs = tf.data.TFRecordDataset(input_file, buffer_size=_READ_BUFFER)
    if num_workers > 1:
        inputs = inputs.shard(num_workers, worker)
    if has_predictions:
        predictions = tf.data.TFRecordDataset(prediction_file, buffer_size=_READ_BUFFER)
    else:
        predictions = tf.data.Dataset.from_tensor_slices(tf.constant([], tf.string))
    # The draws as whole batches: slicing them per image would cost more than
    # the rest of the pipeline.
    num_batches = -(-len(uniforms) // batch_size)
    padded = np.zeros([num_batches * batch_size], np.float64)
    padded[: len(uniforms)] = uniforms
    draws = tf.data.Dataset.from_tensor_slices(
        (
            padded.reshape(num_batches, batch_size),
            np.minimum(batch_size, len(uniforms) - np.arange(num_batches) * batch_size),
        )
    ).map(lambda u, n: u[:n])
    # A final empty batch on every side: zip stops at the shortest, so
    # without it the extra records of a longer one would go unnoticed.
    dataset = tf.data.Dataset.zip(
        inputs.batch(batch_size).concatenate(_empty_batch(tf.string)),
        predictions.batch(batch_size).concatenate(_empty_batch(tf.string)),
        draws.concatenate(_empty_batch(tf.float64)),
    )
    dataset = dataset.map(decide, num_parallel_calls=tf.data.AUTOTUNE).prefetch(2)
    seen = 0
    try:
        for batch in dataset:
            batch = {key: value.numpy() for key, value in batch.items()}
            if not batch["valid"]:
                raise FilterError(
                    f"{prediction_file}: negative or non-finite probabilities near record {seen}"
                )
            if batch["size"]:
                seen += batch["size"]
                yield batch
    except tf.errors.OpError as e:
        raise _diagnose(
            input_file, prediction_file, num_workers, worker, num_classes, image_num, e
        ) from e


def _empty_batch(dtype):
    return tf.data.Dataset.from_tensors(tf.constant([], dtype))


def _sample_name(label, shard_id, task_id, index, prob):
    return os.path.join(_uid(label), f"image_{shard_id}_{task_id}_{index}_{prob:.2f}.jpeg")


def _sample_jpeg(image_bytes, where):
    """The JPEG bytes of a sample (non-JPEG images are re-encoded); FilterError if not an image."""
    try:
        image = tf.io.decode_image(image_bytes, channels=3, expand_animations=False)
    except tf.errors.OpError as e:
        raise FilterError(
            f"{where}: 'image/encoded' is not a decodable image ({_op_text(e)})"
        ) from e
    if bytes(image_bytes[:3]) == _JPEG_MAGIC:
        return bytes(image_bytes)
    return utils.encode_jpeg(image.numpy())


def _commit_samples(staging_dir, samples_dir, shard_id, task_id):
    """Moves the samples of a finished shard from `staging_dir` into `samples_dir`.

    Samples of an earlier run of the same shard and task that this run did not
    write again are removed, so samples/ shows what the data holds.
    """
    staged = {}
    if tf.io.gfile.isdir(staging_dir):
        for parent, _, names in tf.io.gfile.walk(staging_dir):
            for name in names:
                path = os.path.join(parent, name)
                staged[os.path.relpath(path, staging_dir)] = path
    pattern = os.path.join(samples_dir, "*", f"image_{shard_id}_{task_id}_*.jpeg")
    for old in tf.io.gfile.glob(pattern):
        if os.path.relpath(old, samples_dir) not in staged:
            tf.io.gfile.remove(old)
    for relative, path in sorted(staged.items()):
        target = os.path.join(samples_dir, relative)
        tf.io.gfile.makedirs(os.path.dirname(target))
        tf.io.gfile.rename(path, target, overwrite=True)


def _accuracy_json(known, correct):
    """{"accuracy", "num_correct", "num_images"} for counts of one or more classes."""
    known, correct = int(known), int(correct)
    return {
        "accuracy": round(correct / known, 6) if known else None,
        "num_correct": correct,
        "num_images": known,
    }


def _true_label_counts_json(before, after, invalid):
    """Per-shard true-label counts: per pseudo label [images with a known true class, correct]."""

    def rows(counts):
        return {_uid(c): [int(counts[0, c]), int(counts[1, c])] for c in np.flatnonzero(counts[0])}

    return {
        "before_filtering": rows(before),
        "after_balancing": rows(after),
        "invalid": int(invalid),
    }


def _read_true_label_counts(obj, num_classes):
    before = np.zeros([2, num_classes], np.int64)
    after = np.zeros([2, num_classes], np.int64)
    for key, counts in (("before_filtering", before), ("after_balancing", after)):
        for uid, (known, correct) in obj.get(key, {}).items():
            counts[:, int(uid)] += [known, correct]
    return before, after, int(obj.get("invalid", 0))


def pseudo_label_accuracy(before, after, num_without, num_invalid):
    """The "pseudo_label_accuracy" entry of the final stats.

    Args:
      before: int [2, num_classes]: per pseudo label, the predictions whose
        true class is known (row 0) and those equal to it (row 1).
      after: the same for the written records, copies counted.
      num_without: predictions without a true label.
      num_invalid: predictions whose true label is outside 1..num_classes.

    Returns:
      {"before_filtering": ..., "after_balancing": ...} each with the
      overall "accuracy", "num_correct", "num_images" and "per_class"
      {uid: the same} (per pseudo label: of the images labeled c, the
      fraction whose true class is c), plus "num_images_without_true_label"
      and "num_images_with_invalid_true_label"; None when no image has a
      true label.
    """
    if not before[0].any():
        return None
    result = {}
    for key, counts in (("before_filtering", before), ("after_balancing", after)):
        entry = _accuracy_json(counts[0].sum(), counts[1].sum())
        entry["per_class"] = {
            _uid(c): _accuracy_json(counts[0, c], counts[1, c]) for c in np.flatnonzero(counts[0])
        }
        result[key] = entry
    result["num_images_without_true_label"] = int(num_without)
    result["num_images_with_invalid_true_label"] = int(num_invalid)
    return result


def write_final_stats_if_complete(
    output_dir, num_shards, total_replicas, num_label_classes, selection_id=None
):
    """Writes `stats/final_stats.json` once every shard's stats file exists.

    Whichever job finishes last finds all files and writes the totals; earlier
    jobs only log what is still missing (no waiting). With `selection_id`,
    stats files of another run (other settings or predictions, whose shards
    are being filtered again) count as missing.

    The final stats hold the published keys (`cat_count`, `cat_sorted_pairs`,
    `total_cnt`) and `num_shards`, `total_replicas`, `files` ({basename of
    each data file: {"num_records", "num_bytes"}}), `provenance` (the
    checkpoint that predicted, or None) and, when the unlabeled records carry
    true labels, `pseudo_label_accuracy` (see pseudo_label_accuracy).

    Returns:
      The final stats dict, or None if some shards are not done yet.

    Raises:
      FilterError: a stats file is unreadable, a data file differs from what
        its stats file recorded, or no shard wrote any record.
    """
    paths = {
        (shard, task): stats_path(output_dir, shard, task)
        for shard in range(num_shards)
        for task in range(total_replicas)
    }
    missing, stale, stats = [], [], {}
    for key, path in paths.items():
        if not tf.io.gfile.exists(path):
            missing.append(path)
            continue
        obj = _read_json_file(path, "stats file")
        if selection_id is not None and obj.get("selection_id") != selection_id:
            stale.append(path)
            continue
        stats[key] = (path, obj)
    if missing or stale:
        logging.info(
            "final stats: %d of %d stats files still missing, %d from another run",
            len(missing),
            len(paths),
            len(stale),
        )
        return None
    counts = np.zeros([num_label_classes], np.int64)
    before_counts = np.zeros([num_label_classes], np.int64)
    true_before = np.zeros([2, num_label_classes], np.int64)
    true_after = np.zeros([2, num_label_classes], np.int64)
    num_without, num_invalid = 0, 0
    files = {}
    for (shard, _), (path, obj) in stats.items():
        try:
            for uid, n in obj["after_balancing"].items():
                counts[int(uid)] += n
            for uid, n in obj["before_balancing"].items():
                before_counts[int(uid)] += n
            name, size = obj["output_file"], int(obj["num_output_bytes"])
            num_records = int(obj["num_output_records"])
        except (KeyError, ValueError, TypeError, IndexError) as e:
            raise FilterError(
                f"stats file {path} lacks or has a malformed {e}; re-run pass 2 for shard {shard}"
            ) from e
        data_file = os.path.join(output_dir, "data", name)
        found = tf.io.gfile.stat(data_file).length if tf.io.gfile.exists(data_file) else None
        if found != size:
            raise FilterError(
                f"cannot write final stats: {data_file} "
                + ("is missing" if found is None else f"has {found} bytes")
                + f" but {path} says {size} bytes; re-run pass 2 for shard {shard}"
            )
        files[name] = {"num_records": num_records, "num_bytes": size}
        if "true_labels" in obj:
            before, after, invalid = _read_true_label_counts(obj["true_labels"], num_label_classes)
            true_before += before
            true_after += after
            num_invalid += invalid
        num_without += int(obj.get("num_input_images", 0))
    if not counts.any():
        raise FilterError(
            f"no shard of {output_dir} kept any image ({len(files)} data files, all empty); "
            "lower --min_threshold or raise --num_image"
        )
    lost = np.flatnonzero((counts == 0) & (before_counts > 0))
    for c in lost[:_MAX_LISTED]:
        logging.warning(
            "class %d keeps no image: all of its %d images above the threshold were dropped by "
            "downsampling",
            c,
            before_counts[c],
        )
    provenance, _ = common_provenance(
        [(f"shard {s} ({p})", o.get(PROVENANCE_KEY)) for (s, _), (p, o) in stats.items()],
        "the pass-2 stats",
        "Re-run pass 2 for the stale shards.",
    )
    pairs = sorted(
        ((_uid(c), int(n)) for c, n in enumerate(counts)), key=lambda x: (-x[1], int(x[0]))
    )
    final = {
        "cat_count": dict(pairs),
        "cat_sorted_pairs": [list(p) for p in pairs],
        "total_cnt": int(counts.sum()),
        "num_shards": num_shards,
        "total_replicas": total_replicas,
        "files": files,
        PROVENANCE_KEY: provenance,
    }
    accuracy = pseudo_label_accuracy(
        true_before, true_after, num_without - true_before[0].sum() - num_invalid, num_invalid
    )
    if accuracy is not None:
        final["pseudo_label_accuracy"] = accuracy
    utils.write_json(os.path.join(output_dir, "stats", "final_stats.json"), final)
    logging.info("wrote final stats: %d records in total", final["total_cnt"])
    if accuracy is not None:
        logging.info(
            "pseudo-label accuracy (true labels of %d images): %.4f before filtering, %.4f after",
            accuracy["before_filtering"]["num_images"],
            accuracy["before_filtering"]["accuracy"],
            accuracy["after_balancing"]["accuracy"] or 0.0,
        )
    return final


class Selection(NamedTuple):
    """What pass 2 keeps, the same for every shard: see select_for_balancing.

    Attributes:
      provenance: the checkpoint all pass-1 stats come from, None if unknown.
      provenance_source: the first stats file naming it, for messages.
    """

    threshold_idx: np.ndarray
    rates: np.ndarray
    max_prob: float
    num_label_classes: int
    stats_shards: int
    total_replicas: int
    provenance: dict | None = None
    provenance_source: str | None = None


def selection_id(selection, seed):
    """A short hash of everything that determines pass 2's output, given the inputs."""
    key = json.dumps(
        [
            np.asarray(selection.threshold_idx).tolist(),
            [float(r).hex() for r in selection.rates],
            float(selection.max_prob).hex(),
            selection.num_label_classes,
            selection.stats_shards,
            selection.total_replicas,
            selection.provenance and selection.provenance["fingerprint"],
            selection.provenance and selection.provenance.get("use_ema"),
            int(seed),
        ]
    )
    return hashlib.sha256(key.encode()).hexdigest()[:16]


def select_for_balancing(
    prelim_stats_dir,
    output_dir,
    num_shards,
    num_label_classes,
    num_image,
    *,
    total_replicas=1,
    only_use_num_shards=-1,
    min_threshold=0.0,
    max_prob=2.0,
    upsample=True,
    use_top=True,
    use_all=False,
):
    """Thresholds and copy rates of every class from the pass-1 stats of all shards.

    Also writes total_counts(_sum).json, threshold.json and
    num_image_across_cat.json. A job filtering several shards calls this once.

    Args:
      prelim_stats_dir: directory of pass-1 stats.
      output_dir: pass-2 output directory.
      num_shards: total number of shards.
      num_label_classes: length of every probability vector.
      num_image: target number of images per class over all shards.
      total_replicas: number of filter tasks per shard.
      only_use_num_shards, min_threshold, max_prob, upsample, use_top,
        use_all: as in filter_shard.

    Returns:
      A Selection.

    Raises:
      FilterError: missing or inconsistent pass-1 stats (e.g. of different
        checkpoints), or no image would be kept; nothing is written then.
    """
    stats_shards = num_shards if only_use_num_shards == -1 else only_use_num_shards
    total_counts, provenance, provenance_source = load_prelim_stats(
        prelim_stats_dir, stats_shards, total_replicas, num_label_classes
    )
    threshold_idx, total_image = select_thresholds(
        total_counts,
        num_image,
        min_threshold=min_threshold,
        max_prob=max_prob,
        use_top=use_top,
        use_all=use_all,
    )
    _check_kept(total_counts, threshold_idx, total_image, min_threshold, max_prob)
    rates = copy_rates(total_image, num_image, upsample=upsample, use_all=use_all)
    _write_selection(
        prelim_stats_dir,
        output_dir,
        total_counts,
        threshold_idx,
        total_image,
        num_image,
        provenance,
    )
    for c in range(num_label_classes):
        logging.debug(
            "class %d: threshold %.2f, %d images, %.3f copies each",
            c,
            THRESHOLDS[threshold_idx[c]],
            total_image[c],
            rates[c],
        )
    logging.info(
        "%d classes upsampled, %d downsampled (target %d images per class); predictions of %s",
        int(np.sum((total_image < num_image) & (total_image > 0))),
        int(np.sum(total_image > num_image)),
        num_image,
        describe_provenance(provenance),
    )
    return Selection(
        threshold_idx,
        rates,
        max_prob,
        num_label_classes,
        stats_shards,
        total_replicas,
        provenance,
        provenance_source,
    )


@functools.cache
def _encoder(num_classes):
    # Cached: building the encoder traces a tf.function, once per process.
    return utils.PseudoLabeledEncoder(num_classes)


class _Chunk:
    """Kept images not yet written: encoded records, copies and what samples need."""

    def __init__(self):
        self.records, self.copies, self.labels, self.probs = [], [], [], []
        self.indices, self.record_indices, self.images = [], [], []
        self.image_bytes = 0

    def add(self, records, copies, labels, probs, indices, record_indices, images, image_bytes):
        self.records.append(records)
        self.copies.append(copies)
        self.labels.append(labels)
        self.probs.append(probs)
        self.indices.append(indices)
        self.record_indices.append(record_indices)
        self.images.append(images)
        self.image_bytes += image_bytes


def _first_per_class(labels, num_wanted):
    """Positions i where labels[i] occurs for the k-th time with k < num_wanted[labels[i]]."""
    if not len(labels):
        return np.zeros([0], np.int64)
    order = np.argsort(labels, kind="stable")
    sorted_labels = labels[order]
    rank = np.empty(len(labels), np.int64)
    rank[order] = np.arange(len(labels)) - np.searchsorted(sorted_labels, sorted_labels)
    return np.flatnonzero(rank < num_wanted[labels])


def _check_one_checkpoint(shard_id, infos, provenance, selection, own_stats_file, own_provenance):
    """FilterError if a shard's predictions and the pass-1 stats come from different checkpoints."""
    if provenance is None:
        return
    first_info = next(iter(infos.values())).path
    for other, where, what in (
        (selection.provenance, selection.provenance_source, "the pass-1 stats"),
        (
            own_provenance,
            f"shard {shard_id} ({own_stats_file})",
            f"shard {shard_id}'s pass-1 stats",
        ),
    ):
        if other is not None and not _same_checkpoint(provenance, other):
            raise FilterError(
                f"the predictions of shard {shard_id} ({first_info}) come from "
                f"{describe_provenance(provenance)}, but {what} come from "
                f"{describe_provenance(other)}, e.g. {where}. Predict every shard with one "
                "checkpoint, then re-run --only_get_stats=1 for the shards predicted again."
            )


def filter_shard(
    input_dir,
    prediction_dir,
    info_dir,
    prelim_stats_dir,
    output_dir,
    shard_id,
    num_shards,
    num_label_classes,
    num_image,
    *,
    task=-1,
    total_replicas=1,
    total_label_replicas=-1,
    only_use_num_shards=-1,
    min_threshold=0.0,
    max_prob=2.0,
    upsample=True,
    use_top=True,
    use_all=False,
    file_prefix="train",
    data_type="tfrecord",
    seed=0,
    num_samples_per_class=_NUM_SAMPLES_PER_CLASS,
    shuffle_buffer_bytes=_SHUFFLE_BUFFER_BYTES,
    selection=None,
):
    """Pass 2: writes the filtered, balanced, shuffled records of one shard (and task).

    Per prediction worker, one tf.data pipeline reads the images and
    predictions, picks labels and copies and encodes the kept records
    (_decide_fn); Python only collects whole batches, shuffles each chunk's
    records with numpy and writes them, one C call per record.

    The data file is written under a temporary name and samples into a
    staging folder; both get their final names only when the whole shard
    succeeded, so a failure leaves the outputs of an earlier run untouched.

    Args:
      input_dir: directory of the raw unlabeled `{file_prefix}-%05d-of-%05d` records.
      prediction_dir: directory of `train-info-*` prediction files.
      info_dir: directory of `info-*.txt` image-count files.
      prelim_stats_dir: directory of pass-1 stats; receives total_counts(_sum).json.
      output_dir: receives data/, stats/, samples/, threshold.json and
        num_image_across_cat.json.
      shard_id: shard to filter.
      num_shards: total number of shards.
      num_label_classes: length of every probability vector.
      num_image: target number of images per class over all shards.
      task: filter task, or -1 for a single task (0 in file names).
      total_replicas: number of filter tasks per shard.
      total_label_replicas: prediction workers per shard; -1 to discover.
      only_use_num_shards: if not -1, thresholds use the stats of shards
        0..only_use_num_shards-1 only.
      min_threshold: lowest confidence threshold.
      max_prob: images whose top-1 probability exceeds this are dropped.
      upsample: repeat images of classes with fewer than num_image images.
      use_top: stop lowering a class's threshold once num_image is reached.
      use_all: keep every image with probability >= min_threshold once.
      file_prefix: name prefix of the input files.
      data_type: input format; only 'tfrecord'.
      seed: random seed, combined with shard and task.
      num_samples_per_class: sample JPEGs saved per class (shard 0, task 0 only).
      shuffle_buffer_bytes: kept images are shuffled in chunks of this many bytes.
      selection: the Selection of select_for_balancing, when filtering
        several shards with the same settings; the arguments it covers
        (total_replicas, only_use_num_shards, min_threshold, max_prob,
        upsample, use_top, use_all, num_image) are then not used. None: computed here.

    Returns:
      The stats dict written to `stats/stats_%05d_%d.json`: counts per class
      before and after balancing, `output_file` (basename),
      `num_output_records`, `num_output_bytes`, `provenance`, `selection_id`
      and, for records with true labels, `true_labels`.

    Raises:
      FilterError: missing, broken or inconsistent files (the message names
        the file), predictions of another checkpoint than the pass-1 stats,
        or a sample image that cannot be decoded.
    """
    _check_data_type(data_type)
    if selection is None:
        selection = select_for_balancing(
            prelim_stats_dir,
            output_dir,
            num_shards,
            num_label_classes,
            num_image,
            total_replicas=total_replicas,
            only_use_num_shards=only_use_num_shards,
            min_threshold=min_threshold,
            max_prob=max_prob,
            upsample=upsample,
            use_top=use_top,
            use_all=use_all,
        )
    if selection.num_label_classes != num_label_classes:
        raise FilterError(
            f"selection is for {selection.num_label_classes} classes, not {num_label_classes}"
        )
    total_replicas = selection.total_replicas
    task_id, workers, num_workers = _resolve_workers(
        info_dir, shard_id, num_shards, task, total_replicas, total_label_replicas
    )
    input_file = input_path(input_dir, file_prefix, shard_id, num_shards)
    if not tf.io.gfile.exists(input_file):
        raise FilterError(f"missing input file {input_file}")
    infos = {w: read_info(info_dir, shard_id, num_shards, w) for w in workers}
    image_nums = {w: info.image_num for w, info in infos.items()}
    provenance = _shard_provenance(infos, shard_id)
    own_stats_file = prelim_stats_path(prelim_stats_dir, shard_id, task_id)
    own_counts, own_provenance = None, None
    if tf.io.gfile.exists(own_stats_file):
        own_counts, own_provenance = read_prelim_stats(own_stats_file, num_label_classes)
    _check_one_checkpoint(shard_id, infos, provenance, selection, own_stats_file, own_provenance)
    _check_input_file(infos, input_file)
    provenance = provenance or selection.provenance
    save_samples = shard_id == 0 and task_id == 0 and num_samples_per_class > 0
    samples_dir = os.path.join(output_dir, "samples")
    staging_dir = utils.tmp_path(samples_dir)
    keep_rng = np.random.default_rng([seed, shard_id, task_id, 0])
    shuffle_rng = np.random.default_rng([seed, shard_id, task_id, 1])
    seen_bins = np.zeros([num_label_classes, NUM_BINS], np.int64)
    before = np.zeros([num_label_classes], np.int64)
    after = np.zeros([num_label_classes], np.int64)
    true_before = np.zeros([2, num_label_classes], np.int64)
    true_after = np.zeros([2, num_label_classes], np.int64)
    true_invalid = np.zeros([], np.int64)
    samples_saved = np.zeros([num_label_classes], np.int64)
    progress = utils.Progress(
        sum(image_nums.values()), "images", prefix=f"filter shard {shard_id} task {task_id}: "
    )
    # The input file holds the images of all W workers, not only this task's.
    batch_size = _batch_size(input_file, sum(image_nums.values()) * num_workers // len(workers))

    def shuffled(chunk):
        """The serialized records of `chunk`, each repeated, in random order."""
        if not chunk.records:
            return []
        records = np.concatenate(chunk.records)
        order = np.repeat(np.arange(len(records)), np.concatenate(chunk.copies))
        shuffle_rng.shuffle(order)
        if save_samples:
            # The first few of each class in output order, as they are written.
            labels = np.concatenate(chunk.labels)
            images = np.concatenate(chunk.images)
            probs = np.concatenate(chunk.probs)
            indices = np.concatenate(chunk.indices)
            record_indices = np.concatenate(chunk.record_indices)
            picks = order[_first_per_class(labels[order], num_samples_per_class - samples_saved)]
            for j in picks:
                jpeg = _sample_jpeg(images[j], f"{input_file}: record {record_indices[j]}")
                path = os.path.join(
                    staging_dir, _sample_name(labels[j], shard_id, task_id, indices[j], probs[j])
                )
                tf.io.gfile.makedirs(os.path.dirname(path))
                with tf.io.gfile.GFile(path, "wb") as f:
                    f.write(jpeg)
            samples_saved[...] += np.bincount(labels[picks], minlength=num_label_classes)
        return records[order]

    def record_batches():
        decide = _decide_fn(selection, with_images=save_samples)
        chunk = _Chunk()
        index = 0  # of the next image within this task's inputs
        for worker in workers:
            position = 0  # of the next image within the worker's inputs
            for batch in _decided_batches(
                input_file,
                utils.prediction_path(prediction_dir, shard_id, num_shards, worker),
                num_workers,
                worker,
                num_label_classes,
                image_nums[worker],
                keep_rng.random(image_nums[worker]),
                decide,
                batch_size,
            ):
                seen_bins[...] += batch["seen_bins"]
                before[...] += batch["before"]
                after[...] += batch["after"]
                true_before[...] += batch["true_before"]
                true_after[...] += batch["true_after"]
                true_invalid[...] += batch["true_invalid"]
                if len(batch["records"]):
                    chunk.add(
                        batch["records"],
                        batch["copies"],
                        batch["labels"],
                        batch["top_prob"],
                        index + batch["kept"],
                        worker + (position + batch["kept"]) * num_workers,
                        batch.get("images"),
                        int(batch["image_bytes"]),
                    )
                index += batch["size"]
                position += batch["size"]
                progress.update(int(batch["size"]))
                if chunk.image_bytes >= shuffle_buffer_bytes:
                    yield shuffled(chunk)
                    chunk = _Chunk()
        yield shuffled(chunk)
        # Thresholds were chosen from the pass-1 bins; if the predictions
        # changed since, the balancing would silently be off. Raised here,
        # before the data file gets its final name.
        if own_counts is not None and not np.array_equal(own_counts, seen_bins):
            raise FilterError(
                f"predictions of shard {shard_id} task {task_id} differ from {own_stats_file}; "
                "re-run --only_get_stats=1 for every shard"
            )

    output_file = utils.filtered_path(output_dir, task_id, shard_id, num_shards)
    try:
        num_records = utils.write_tfrecord_batches(output_file, record_batches())
        if save_samples:
            _commit_samples(staging_dir, samples_dir, shard_id, task_id)
    finally:
        if tf.io.gfile.exists(staging_dir):
            tf.io.gfile.rmtree(staging_dir)
    progress.update(0, force=True)
    stats = {
        "before_balancing": {_uid(c): int(n) for c, n in enumerate(before) if n},
        "after_balancing": {_uid(c): int(n) for c, n in enumerate(after) if n},
        "num_input_images": int(sum(image_nums.values())),
        "num_kept_images": int(before.sum()),
        "num_output_records": int(num_records),
        "output_file": os.path.basename(output_file),
        "num_output_bytes": int(tf.io.gfile.stat(output_file).length),
        PROVENANCE_KEY: provenance,
        "selection_id": selection_id(selection, seed),
    }
    if true_before[0].any() or true_invalid:
        stats["true_labels"] = _true_label_counts_json(true_before, true_after, true_invalid)
    if true_invalid:
        logging.warning(
            "%s: %d records have an image/class/label outside 0..%d; their true labels are ignored",
            input_file,
            int(true_invalid),
            num_label_classes,
        )
    utils.write_json(stats_path(output_dir, shard_id, task_id), stats)
    logging.info(
        "wrote %s: %d records from %d images", output_file, num_records, stats["num_input_images"]
    )
    write_final_stats_if_complete(
        output_dir,
        selection.stats_shards,
        total_replicas,
        num_label_classes,
        selection_id=stats["selection_id"],
    )
    return stats


# ---------------------------------------------------------------------------
# Command line.

FLAGS = flags.FLAGS

flags.DEFINE_string(
    "input_dir", "", "Directory of the raw unlabeled records `{file_prefix}-%05d-of-%05d`."
)
flags.DEFINE_string(
    "prediction_dir",
    "",
    "Directory of the teacher's `train-info-%05d-of-%05d-%05d` prediction files.",
)
flags.DEFINE_string(
    "info_dir", "", "Directory of the prediction image counts `info-%05d-of-%05d-%05d.txt`."
)
flags.DEFINE_string(
    "prelim_stats_dir",
    "",
    "Directory of the per-shard probability histograms (pass 1 writes, pass 2 reads) and of "
    "total_counts.json / total_counts_sum.json.",
)
flags.DEFINE_string(
    "output_dir",
    "",
    "Output of pass 2: data/train-%d-%05d-of-%05d records, stats/, samples/, threshold.json, "
    "num_image_across_cat.json.",
)
flags.DEFINE_integer("num_shards", 128, "Number of input shards.")
flags.DEFINE_integer(
    "only_use_num_shards",
    -1,
    "If not -1, thresholds (and final stats) use only shards 0..only_use_num_shards-1.",
)
flags.DEFINE_string(
    "shard_id",
    "0",
    "Shard(s) processed by this job, in [0, num_shards): an id or a comma-separated list, "
    "e.g. 0,4,8 (TensorFlow starts once for all of them).",
)
flags.DEFINE_integer(
    "num_image", 1300, "Target number of images per class over all shards after balancing."
)
flags.DEFINE_integer(
    "total_replicas",
    1,
    "Number of filter tasks per shard; the shard's prediction workers are split evenly among them.",
)
flags.DEFINE_integer(
    "total_label_replicas",
    -1,
    "Number of prediction workers per shard (main.py --total_replicas at prediction); -1 discovers "
    "it from the info files, which must be for workers 0..W-1.",
)
flags.DEFINE_integer(
    "task",
    -1,
    "Filter task of this job in [0, total_replicas); -1 = one task (numbered 0 in file names) "
    "that handles all prediction workers of the shard.",
)
flags.DEFINE_float(
    "min_threshold", 0.0, "Lowest top-1 probability threshold; images below it are never kept."
)
flags.DEFINE_float(
    "max_prob",
    2,
    "Images whose top-1 probability exceeds this are dropped, and thresholds must be below it "
    "(the default 2 keeps everything; probabilities can exceed 1 by rounding).",
)
flags.DEFINE_integer(
    "num_label_classes", 1000, "Number of classes (length of every probability vector)."
)
flags.DEFINE_integer(
    "upsample",
    1,
    "1: repeat the images of classes with fewer than num_image images to reach about num_image; "
    "0: keep them once.",
)
flags.DEFINE_integer(
    "only_get_stats",
    0,
    "1: pass 1, write this shard's probability histogram; 0: pass 2, filter and balance this "
    "shard (needs pass 1 of every shard).",
)
flags.DEFINE_string(
    "file_prefix", "train", "Name prefix of the input files, e.g. 'extra' for SVHN."
)
flags.DEFINE_string("data_type", "tfrecord", "Input format; only 'tfrecord' is supported.")
flags.DEFINE_integer(
    "use_top",
    1,
    "1: per class, stop lowering the threshold once num_image images are reached; "
    "0: go down to min_threshold and balance by sampling.",
)
flags.DEFINE_bool(
    "use_all",
    False,
    "Keep every image with probability >= min_threshold exactly once (no balancing).",
)
flags.DEFINE_integer(
    "seed", 0, "Random seed of the sampling and shuffling, combined with shard and task."
)


def _check_flags():
    """Checks the flags; returns the shard ids of --shard_id."""
    _check_data_type(FLAGS.data_type)
    required = ["prediction_dir", "info_dir", "prelim_stats_dir"]
    if not FLAGS.only_get_stats:
        required += ["input_dir", "output_dir"]
    empty = [f"--{name}" for name in required if not getattr(FLAGS, name)]
    if empty:
        raise FilterError(f"{', '.join(empty)} must be set")
    try:
        shard_ids = utils.parse_shard_ids(FLAGS.shard_id, FLAGS.num_shards)
    except ValueError as e:
        raise FilterError(str(e)) from e
    if FLAGS.only_use_num_shards != -1 and not 0 < FLAGS.only_use_num_shards <= FLAGS.num_shards:
        raise FilterError(
            f"--only_use_num_shards={FLAGS.only_use_num_shards} is not in [1, --num_shards]"
        )
    if FLAGS.num_image < 1:
        raise FilterError(f"--num_image must be >= 1, got {FLAGS.num_image}")
    return shard_ids


def _run_pass1(shard_id):
    result = count_shard(
        FLAGS.prediction_dir,
        FLAGS.info_dir,
        shard_id,
        FLAGS.num_shards,
        FLAGS.num_label_classes,
        task=FLAGS.task,
        total_replicas=FLAGS.total_replicas,
        total_label_replicas=FLAGS.total_label_replicas,
    )
    write_prelim_stats(
        FLAGS.prelim_stats_dir, shard_id, result.task_id, result.counts, result.provenance
    )


def _run_pass2(shard_id, selection):
    filter_shard(
        FLAGS.input_dir,
        FLAGS.prediction_dir,
        FLAGS.info_dir,
        FLAGS.prelim_stats_dir,
        FLAGS.output_dir,
        shard_id,
        FLAGS.num_shards,
        FLAGS.num_label_classes,
        FLAGS.num_image,
        task=FLAGS.task,
        total_label_replicas=FLAGS.total_label_replicas,
        file_prefix=FLAGS.file_prefix,
        data_type=FLAGS.data_type,
        seed=FLAGS.seed,
        selection=selection,
    )


def run_shards(run, shard_ids):
    """Runs `run(shard_id)` for every shard id, whatever happens to the others.

    Returns:
      {shard_id: error message} of the shards that failed.
    """
    failed = {}
    for shard_id in shard_ids:
        try:
            run(shard_id)
        except FilterError as e:
            logging.error("shard %d: %s", shard_id, e)
            failed[shard_id] = str(e)
        except Exception as e:  # Any failure of one shard must spare the others.
            logging.exception("shard %d failed", shard_id)
            failed[shard_id] = f"{type(e).__name__}: {_op_text(e)}"
    return failed


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    try:
        shard_ids = _check_flags()
        if FLAGS.only_get_stats:
            run = _run_pass1
        else:
            # Once for all shards: pass 2 of 1000 classes reads ~1 MB of stats per shard.
            selection = select_for_balancing(
                FLAGS.prelim_stats_dir,
                FLAGS.output_dir,
                FLAGS.num_shards,
                FLAGS.num_label_classes,
                FLAGS.num_image,
                total_replicas=FLAGS.total_replicas,
                only_use_num_shards=FLAGS.only_use_num_shards,
                min_threshold=FLAGS.min_threshold,
                max_prob=FLAGS.max_prob,
                upsample=bool(FLAGS.upsample),
                use_top=bool(FLAGS.use_top),
                use_all=FLAGS.use_all,
            )
            run = functools.partial(_run_pass2, selection=selection)
    except FilterError as e:
        logging.error("%s", e)
        sys.exit(f"filter_unlabel_data.py: error: {e}")
    # A broken shard does not stop the others: the driver scripts then only
    # need to re-run the shards named here.
    failed = run_shards(run, shard_ids)
    if len(shard_ids) == 1 and failed:
        sys.exit(f"filter_unlabel_data.py: error: {failed[shard_ids[0]]}")
    if failed:
        details = "".join(f"\n  shard {shard}: {e}" for shard, e in failed.items())
        sys.exit(
            f"filter_unlabel_data.py: error: {len(failed)} of {len(shard_ids)} shards failed, "
            f"shard ids {','.join(map(str, failed))}:{details}"
        )


if __name__ == "__main__":
    app.run(main)
