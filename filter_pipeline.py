"""The filter's TensorFlow work: labels and bins, reading, pass 2's batches, shuffling, samples.

`label_and_bin` is the one definition of an image's pseudo label and
probability bin; pass 1 counts with it (`count_prediction_bins`) and pass 2
decides with it (`BatchDecisions`), so the two passes agree by construction
(docs/pseudo_labels.md, "Filtering and balancing").

Pass 2 runs in TensorFlow except for the final write calls: per prediction
worker, one tf.data pipeline reads the images and predictions, picks labels
and copies, and encodes the kept records in-graph (`tfrecords.PseudoLabeledEncoder`);
`KeptRecords` collects whole batches, shuffles each chunk's records with
NumPy and hands them to the writer.
"""

import collections
import functools
import os
import re
from typing import NamedTuple

import numpy as np
import tensorflow as tf
from absl import logging

import atomic_files
import filter_stats
import tfrecords
from filter_stats import NUM_BINS, FilterError

PREDICTION_BATCH = 4096
# Pass 2 reads images in batches of about BATCH_BYTES, at most IMAGE_BATCH
# images: large enough that the per-batch work outside the graph (about a
# millisecond a call) is negligible.
IMAGE_BATCH = 4096
BATCH_BYTES = 16 * 1024 * 1024
READ_BUFFER = 8 * 1024 * 1024
# Kept images are shuffled in chunks of about this many encoded bytes: a shard
# of a large unlabeled set does not fit in memory, and the trainer shuffles
# again anyway.
SHUFFLE_BUFFER_BYTES = 512 * 1024 * 1024
NUM_SAMPLES_PER_CLASS = 10
_JPEG_MAGIC = b"\xff\xd8\xff"
# Message of the in-graph check; diagnose then tells which count is off.
_COUNT_MISMATCH = "input records, predictions and image_num disagree"


def op_text(error):
    """The useful part of a TensorFlow error message, without the graph-function names."""
    text = getattr(error, "message", None) or str(error)
    text = re.sub(r"\{\{function_node [^}]*\}\}\s*", "", text)
    text = re.sub(r"\s*\[Op:[^\]]*\]( name: ?)?\s*$", "", text)
    return text.strip()


# ---------------------------------------------------------------------------
# Labels and bins, in-graph: the one definition both passes use.


def label_and_bin(probabilities):
    """The pseudo label of each row of a float32 [n, num_classes] tensor, and its bin.

    Returns:
      A dict of tensors: `labels` int64 [n], the first index of each row's
      maximum (as np.argmax; tf.argmax leaves ties unspecified); `top_prob`
      float32 [n], that maximum; `bins` int64 [n], the index i of the bin
      [t_i, t_{i+1}) holding it (bin 100: >= 1.0); `valid`, whether every
      probability is finite and >= 0 (the others are meaningless then).
    """
    num_classes = probabilities.shape[-1]
    top_prob = tf.reduce_max(probabilities, axis=1)
    classes = tf.range(num_classes, dtype=tf.int64)
    labels = tf.reduce_min(
        tf.where(probabilities == top_prob[:, None], classes, num_classes), axis=1
    )
    labels = tf.minimum(labels, num_classes - 1)  # rows of NaN; rejected by `valid`
    edges = tf.constant(filter_stats.THRESHOLDS_F32[None, :])
    bins = tf.searchsorted(edges, top_prob[None, :], side="right", out_type=tf.int64)[0] - 1
    return {
        "labels": labels,
        "top_prob": top_prob,
        "bins": bins,
        "valid": tf.reduce_all(tf.math.is_finite(probabilities) & (probabilities >= 0)),
    }


def per_class_sum(values, labels, num_classes):
    """Sums `values` [n] by class `labels` [n] into [num_classes]."""
    return tf.math.unsorted_segment_sum(values, labels, num_classes)


def bin_counts(labels, bins, num_classes):
    """Images per (class, bin): int64 [num_classes, NUM_BINS], the layout of the pass-1 stats."""
    flat = per_class_sum(tf.ones_like(bins), labels * NUM_BINS + bins, num_classes * NUM_BINS)
    return tf.reshape(flat, [num_classes, NUM_BINS])


def parse_predictions(prediction_records, num_classes):
    """The `probabilities` [n, num_classes] of serialized prediction records [n]."""
    # Fixed-length parsing is 2-3x faster than ragged parsing; when it fails,
    # scan_records finds the record to blame.
    spec = {"probabilities": tf.io.FixedLenFeature([num_classes], tf.float32)}
    return tf.io.parse_example(prediction_records, spec)["probabilities"]


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
        for record in tf.data.TFRecordDataset(path, buffer_size=READ_BUFFER):
            if check is not None:
                problem = check(record.numpy())
                if problem:
                    return count, f"record {count} {problem}"
            count += 1
    except tf.errors.OpError as e:
        return count, (
            f"truncated or corrupt TFRecord data after {count} good records ({op_text(e)})"
        )
    return count, None


class WorkerPart(NamedTuple):
    """One prediction worker's part of a shard: input records worker, worker + W, ...

    Attributes:
      input_file: the shard's raw unlabeled records.
      prediction_file: the worker's predictions, one per record of its part.
      worker: the worker, in [0, num_workers).
      num_workers: W, the prediction workers of the shard.
      image_num: the worker's image count from its info file.
    """

    input_file: str
    prediction_file: str
    worker: int
    num_workers: int
    image_num: int


def diagnose(part, num_classes, error):
    """The FilterError explaining why pass 2 failed to read a WorkerPart's inputs and predictions.

    Checks, in this order, the input file (TFRecord framing, `image/encoded`,
    `image/class/label`), the prediction file (framing, `probabilities` of
    num_classes values), then the counts of both against each other and the
    info file. Never raises: an undiagnosed failure is described as is.
    """
    input_file, prediction_file, worker, num_workers = part[:4]
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
        num_input = len(range(worker, num_input, num_workers))
        if num_pred != num_input:
            return FilterError(
                f"{prediction_file} has {num_pred} predictions but {input_file} has "
                f"{num_input} records for prediction worker {worker} of {num_workers} "
                f"(records {worker}, {worker} + {num_workers}, ...)"
            )
        if num_pred != part.image_num:
            return FilterError(
                f"{prediction_file} and {input_file} (worker {worker} of {num_workers}) have "
                f"{num_pred} records but the info file says image_num={part.image_num}"
            )
    except Exception as e:  # The diagnosis must never hide the original failure.
        logging.exception("diagnosing %s failed", prediction_file)
        return FilterError(
            f"cannot read {input_file} or {prediction_file}: {op_text(error)} "
            f"(and the diagnosis failed: {e!r})"
        )
    return FilterError(f"cannot read {input_file} or {prediction_file}: {op_text(error)}")


# ---------------------------------------------------------------------------
# Pass 1.


def _count_batch(num_classes, records):
    pseudo = label_and_bin(parse_predictions(records, num_classes))
    return {
        "counts": bin_counts(pseudo["labels"], pseudo["bins"], num_classes),
        "valid": pseudo["valid"],
        "size": tf.shape(records)[0],
    }


@functools.cache
def _count_function(num_classes):
    # Traced once per process and called per batch, outside tf.data (see decided_batches).
    return tf.function(
        functools.partial(_count_batch, num_classes),
        autograph=False,
        input_signature=[tf.TensorSpec([None], tf.string)],
    )


def count_prediction_bins(path, num_classes, batch_size=PREDICTION_BATCH):
    """Pass 1 of one prediction file: its images per (pseudo label, bin).

    Returns:
      (counts, num_predictions): int64 [num_classes, NUM_BINS] and the
      number of records read.

    Raises:
      FilterError: a record's vector length differs from num_classes, a value
        is negative or not finite, or the file cannot be parsed (truncated,
        corrupt, a record without `probabilities`); the message names the file.
    """
    count = _count_function(num_classes)
    dataset = tf.data.TFRecordDataset(path, buffer_size=READ_BUFFER).batch(batch_size).prefetch(2)
    counts = np.zeros([num_classes, NUM_BINS], np.int64)
    start = 0
    try:
        for records in dataset:
            batch = count(records)
            if not batch["valid"]:
                raise FilterError(
                    f"{path}: negative or non-finite probabilities near record {start}"
                )
            counts += batch["counts"].numpy()
            start += int(batch["size"])
    except tf.errors.OpError as e:
        _, problem = scan_records(path, _prediction_record_problem(num_classes))
        if problem:
            raise FilterError(f"{path}: {problem}") from e
        raise FilterError(f"cannot read predictions from {path}: {op_text(e)}") from e
    return counts, start


# ---------------------------------------------------------------------------
# Pass 2: decisions per batch.


@functools.cache
def _encoder(num_classes):
    # Cached: building the encoder traces a tf.function, once per process.
    return tfrecords.PseudoLabeledEncoder(num_classes)


_INPUT_SPEC = {
    "image/encoded": tf.io.FixedLenFeature([], tf.string),
    # 1-based true class of data whose labels are known; 0 (or absent) = unknown.
    "image/class/label": tf.io.FixedLenFeature([], tf.int64, default_value=0),
}


def _true_label_counts(true_label, labels, copies, num_classes):
    """The true-label counts of a batch, as in filter_stats.ShardCounts."""
    known = (true_label >= 1) & (true_label <= num_classes)
    correct = known & (true_label - 1 == labels)

    def rows(known_weights, correct_weights):
        return tf.stack(
            [
                per_class_sum(known_weights, labels, num_classes),
                per_class_sum(correct_weights, labels, num_classes),
            ]
        )

    return {
        "true_before": rows(tf.cast(known, tf.int64), tf.cast(correct, tf.int64)),
        "true_after": rows(tf.where(known, copies, 0), tf.where(correct, copies, 0)),
        "true_invalid": tf.reduce_sum(tf.cast((true_label != 0) & ~known, tf.int64)),
        # The confusion matrix's entries, as keys (true class) * K + pseudo label,
        # sparse: a dense [K, K] per batch would cost more than the batch at K = 1000.
        "true_pairs": tf.boolean_mask((true_label - 1) * num_classes + labels, known),
        "true_pair_copies": tf.boolean_mask(copies, known),
    }


def _decide_batch(encoder, with_images, inputs, threshold_idx, rates, max_prob):
    """BatchDecisions' work, as plain TensorFlow ops (see BatchDecisions.__call__)."""
    input_records, prediction_records, uniforms = inputs
    num_classes = encoder.num_classes
    size = tf.shape(input_records)[0]
    for other in (prediction_records, uniforms):
        tf.debugging.assert_equal(size, tf.shape(other)[0], message=_COUNT_MISMATCH)
    parsed = tf.io.parse_example(input_records, _INPUT_SPEC)
    probs = parse_predictions(prediction_records, num_classes)
    pseudo = label_and_bin(probs)
    labels = pseudo["labels"]
    passed = (pseudo["bins"] >= tf.gather(threshold_idx, labels)) & (pseudo["top_prob"] <= max_prob)
    rate = tf.gather(rates, labels)
    whole = tf.floor(rate)
    copies = tf.cast(whole, tf.int64) + tf.cast(uniforms < rate - whole, tf.int64)
    copies = tf.where(passed, copies, 0)
    kept = tf.where(copies > 0)[:, 0]
    kept_images = tf.gather(parsed["image/encoded"], kept)
    kept_labels = tf.gather(labels, kept)
    out = {
        "records": encoder.encode_batch(kept_images, tf.gather(probs, kept), kept_labels),
        "copies": tf.gather(copies, kept),
        "labels": kept_labels,
        "top_prob": tf.gather(pseudo["top_prob"], kept),
        "kept": kept,
        "image_bytes": tf.reduce_sum(tf.cast(tf.strings.length(kept_images), tf.int64)),
        "seen_bins": bin_counts(labels, pseudo["bins"], num_classes),
        "before": per_class_sum(tf.cast(passed, tf.int64), labels, num_classes),
        "after": per_class_sum(copies, labels, num_classes),
        **_true_label_counts(parsed["image/class/label"], labels, copies, num_classes),
        "valid": pseudo["valid"],
        "size": size,
    }
    if with_images:
        out["images"] = kept_images
    return out


@functools.cache
def _decide_function(num_classes, with_images):
    # One trace per process and kind: the thresholds and rates are arguments,
    # not constants, so every shard and selection reuses it. Tracing it took
    # about as long as deciding 25,000 small images; autograph is off, as
    # nothing in it is Python control flow on tensors.
    encoder = _encoder(num_classes)
    return tf.function(
        functools.partial(_decide_batch, encoder, with_images),
        autograph=False,
        input_signature=[
            (
                tf.TensorSpec([None], tf.string),
                tf.TensorSpec([None], tf.string),
                tf.TensorSpec([None], tf.float64),
            ),
            tf.TensorSpec([num_classes], tf.int64),
            tf.TensorSpec([num_classes], tf.float64),
            tf.TensorSpec([], tf.float32),
        ],
    )


class BatchDecisions:
    """The pass-2 work of one batch, in-graph: labels, bins, copies, encoded records, counts.

    An image passes if its bin is at or above its class's threshold and its
    probability at most max_prob; it is then written floor(rate) times, plus
    once more if its U[0, 1) draw is below frac(rate).

    Args:
      selection: the filter_stats.Selection of this pass.
      with_images: also return the kept images (for samples).
    """

    def __init__(self, selection, with_images):
        self.num_classes = selection.num_label_classes
        self._function = _decide_function(self.num_classes, bool(with_images))
        self._threshold_idx = tf.constant(selection.threshold_idx, tf.int64)
        self._rates = tf.constant(selection.rates, tf.float64)
        self._max_prob = tf.constant(selection.max_prob, tf.float32)

    @tf.autograph.experimental.do_not_convert
    def __call__(self, input_records, prediction_records, uniforms):
        """Decides a batch of n images.

        Args:
          input_records: string [n], the raw unlabeled records.
          prediction_records: string [n], their predictions.
          uniforms: float64 [n], one U[0, 1) draw per image.

        Returns:
          A dict of tensors: `records`, `copies`, `labels`, `top_prob`, `kept`
          (index in the batch) of the kept images; `image_bytes`, their total
          size; the counts of filter_stats.ShardCounts; `valid` (see
          label_and_bin); `size`, n; with_images: `images`, the kept images.
        """
        return self._function(
            (input_records, prediction_records, uniforms),
            self._threshold_idx,
            self._rates,
            self._max_prob,
        )


def batch_size_for(input_file, num_records):
    """Images per batch of pass 2: about BATCH_BYTES of input records, at most IMAGE_BATCH."""
    record_bytes = tf.io.gfile.stat(input_file).length / max(1, num_records)
    return int(np.clip(BATCH_BYTES // max(1.0, record_bytes), 16, IMAGE_BATCH))


def _empty_batch(dtype):
    return tf.data.Dataset.from_tensors(tf.constant([], dtype))


def decided_batches(part, decide, uniforms, batch_size):
    """Yields the pass-2 decisions of one prediction worker's images, batch by batch.

    One tf.data pipeline reads the input records worker, worker + W, ... and
    the worker's predictions in TensorFlow's threads; `decide` runs on each
    batch as it arrives.

    Args:
      part: the WorkerPart.
      decide: a BatchDecisions.
      uniforms: float64 array [image_num], one U[0, 1) draw per image.
      batch_size: images per batch.

    Yields:
      The dict of `decide`, as numpy arrays, for every non-empty batch.

    Raises:
      FilterError: a file is missing, truncated or malformed (a record
        without its key, probabilities of the wrong length), or the number
        of input records, predictions and the info file's image_num differ;
        the message names the file and, where it can, the record.
    """
    has_predictions = tf.io.gfile.exists(part.prediction_file)
    if not has_predictions and part.image_num:
        raise FilterError(f"missing prediction file {part.prediction_file}")
    inputs = tf.data.TFRecordDataset(part.input_file, buffer_size=READ_BUFFER)
    if part.num_workers > 1:
        inputs = inputs.shard(part.num_workers, part.worker)
    if has_predictions:
        predictions = tf.data.TFRecordDataset(part.prediction_file, buffer_size=READ_BUFFER)
    else:
        predictions = tf.data.Dataset.from_tensor_slices(tf.constant([], tf.string))
    # A final empty batch on both sides: zip stops at the shortest, so without
    # it the extra records of the longer one would go unnoticed. `decide` runs
    # outside tf.data, as a function traced once per process: a map would
    # instantiate and optimize its graph again for every worker's pipeline,
    # which cost as much as deciding 10,000 small images.
    dataset = tf.data.Dataset.zip(
        inputs.batch(batch_size).concatenate(_empty_batch(tf.string)).prefetch(1),
        predictions.batch(batch_size).concatenate(_empty_batch(tf.string)).prefetch(1),
    ).prefetch(2)
    seen = 0
    try:
        for input_records, prediction_records in dataset:
            # Fewer draws than records (image_num too small) fails decide's count check.
            draws = uniforms[seen : seen + int(input_records.shape[0])]
            batch = decide(input_records, prediction_records, draws)
            batch = {key: value.numpy() for key, value in batch.items()}
            if not batch["valid"]:
                raise FilterError(
                    f"{part.prediction_file}: negative or non-finite probabilities near "
                    f"record {seen}"
                )
            if batch["size"]:
                seen += batch["size"]
                yield batch
    except tf.errors.OpError as e:
        raise diagnose(part, decide.num_classes, e) from e
    if seen != len(uniforms):
        raise diagnose(part, decide.num_classes, FilterError(_COUNT_MISMATCH))


# ---------------------------------------------------------------------------
# Pass 2: samples, shuffling.


def first_per_class(labels, num_wanted):
    """Positions i where labels[i] occurs for the k-th time with k < num_wanted[labels[i]]."""
    if not len(labels):
        return np.zeros([0], np.int64)
    order = np.argsort(labels, kind="stable")
    sorted_labels = labels[order]
    rank = np.empty(len(labels), np.int64)
    rank[order] = np.arange(len(labels)) - np.searchsorted(sorted_labels, sorted_labels)
    return np.flatnonzero(rank < num_wanted[labels])


def _sample_jpeg(image_bytes, where):
    """The JPEG bytes of a sample (non-JPEG images are re-encoded); FilterError if not an image."""
    try:
        image = tf.io.decode_image(image_bytes, channels=3, expand_animations=False)
    except tf.errors.OpError as e:
        raise FilterError(
            f"{where}: 'image/encoded' is not a decodable image ({op_text(e)})"
        ) from e
    if bytes(image_bytes[:3]) == _JPEG_MAGIC:
        return bytes(image_bytes)
    return tfrecords.encode_jpeg(image.numpy())


class Samples:
    """The first few kept images of each class of a shard, in output order, as JPEGs.

    They are written into a staging folder and moved to `samples/<class>/`
    by `commit` only when the whole shard succeeded.

    Args:
      samples_dir: the output's samples/ folder.
      input_file: the shard's input, for messages.
      shard_id, task_id: the shard and filter task, in the file names.
      num_per_class: images saved per class.
      num_classes: number of classes.
    """

    def __init__(self, samples_dir, input_file, shard_id, task_id, num_per_class, num_classes):
        self.samples_dir = samples_dir
        self.staging_dir = atomic_files.tmp_path(samples_dir)
        self._input_file = input_file
        self._name = f"image_{shard_id}_{task_id}"
        self._num_per_class = num_per_class
        self._saved = np.zeros([num_classes], np.int64)

    def save(self, chunk, order):
        """Saves the first images of each class not yet full, as `order` writes the chunk."""
        labels = chunk["labels"]
        images, probs = chunk["images"], chunk["top_prob"]
        indices, record_indices = chunk["indices"], chunk["record_indices"]
        picks = order[first_per_class(labels[order], self._num_per_class - self._saved)]
        for j in picks:
            jpeg = _sample_jpeg(images[j], f"{self._input_file}: record {record_indices[j]}")
            name = f"{self._name}_{indices[j]}_{probs[j]:.2f}.jpeg"
            path = os.path.join(self.staging_dir, filter_stats.class_key(labels[j]), name)
            tf.io.gfile.makedirs(os.path.dirname(path))
            with tf.io.gfile.GFile(path, "wb") as f:
                f.write(jpeg)
        self._saved += np.bincount(labels[picks], minlength=len(self._saved))

    def commit(self):
        """Moves the staged samples into samples_dir.

        Samples of an earlier run of the same shard and task that this run did
        not write again are removed, so samples/ shows what the data holds.
        """
        staged = {}
        if tf.io.gfile.isdir(self.staging_dir):
            for parent, _, names in tf.io.gfile.walk(self.staging_dir):
                for name in names:
                    path = os.path.join(parent, name)
                    staged[os.path.relpath(path, self.staging_dir)] = path
        for old in tf.io.gfile.glob(os.path.join(self.samples_dir, "*", f"{self._name}_*.jpeg")):
            if os.path.relpath(old, self.samples_dir) not in staged:
                tf.io.gfile.remove(old)
        for relative, path in sorted(staged.items()):
            target = os.path.join(self.samples_dir, relative)
            tf.io.gfile.makedirs(os.path.dirname(target))
            tf.io.gfile.rename(path, target, overwrite=True)

    def discard(self):
        """Removes the staging folder (after a commit, or when the shard failed)."""
        if tf.io.gfile.exists(self.staging_dir):
            tf.io.gfile.rmtree(self.staging_dir)


class _Chunk:
    """Kept images not yet written: per batch, the columns of the decisions."""

    _COLUMNS = ("records", "copies", "labels", "top_prob", "images")

    def __init__(self):
        self._columns = collections.defaultdict(list)
        self.image_bytes = 0

    def add(self, batch, indices, record_indices):
        for key in self._COLUMNS:
            if key in batch:
                self._columns[key].append(batch[key])
        self._columns["indices"].append(indices)
        self._columns["record_indices"].append(record_indices)
        self.image_bytes += int(batch["image_bytes"])

    def __bool__(self):
        return bool(self._columns)

    def __getitem__(self, key):
        return np.concatenate(self._columns[key])


class KeptRecords:
    """Pass 2 of one shard and task: decided batches in, shuffled serialized records out.

    Args:
      selection: the filter_stats.Selection of this pass.
      seed_key: (seed, shard, task); each image's draw is
        filter_stats.record_uniforms of (seed, shard, its position in the
        shard), the shuffles come from the generator seeded with (*seed_key, 1).
      shuffle_buffer_bytes: kept images are shuffled in chunks of this many bytes.
      progress: a progress_log.Progress, updated per batch.
      samples: the Samples to save, or None.

    Attributes:
      counts: the filter_stats.ShardCounts of the batches read so far.
      samples: the Samples given.
    """

    def __init__(self, selection, *, seed_key, shuffle_buffer_bytes, progress, samples=None):
        self._decide = BatchDecisions(selection, with_images=samples is not None)
        self.counts = filter_stats.ShardCounts(selection.num_label_classes)
        self.samples = samples
        self._seed, self._shard_id = seed_key[:2]
        self._shuffle_rng = np.random.default_rng([*seed_key, 1])
        self._shuffle_buffer_bytes = shuffle_buffer_bytes
        self._progress = progress

    def batches(self, parts, batch_size):
        """Yields arrays of serialized records, each kept image repeated, in random order.

        Args:
          parts: the WorkerParts of the task, in worker order.
          batch_size: images per batch read.
        """
        chunk = _Chunk()
        index = 0  # of the next image within this task's inputs
        for part in parts:
            positions = part.worker + np.arange(part.image_num) * part.num_workers
            uniforms = filter_stats.record_uniforms(self._seed, self._shard_id, positions)
            position = 0  # of the next image within the worker's inputs
            for batch in decided_batches(part, self._decide, uniforms, batch_size):
                self.counts.add(batch)
                if len(batch["records"]):
                    kept = batch["kept"]
                    record_indices = part.worker + (position + kept) * part.num_workers
                    chunk.add(batch, index + kept, record_indices)
                index += batch["size"]
                position += batch["size"]
                self._progress.update(int(batch["size"]))
                if chunk.image_bytes >= self._shuffle_buffer_bytes:
                    yield self._shuffled(chunk)
                    chunk = _Chunk()
        yield self._shuffled(chunk)

    def _shuffled(self, chunk):
        if not chunk:
            return []
        records = chunk["records"]
        order = np.repeat(np.arange(len(records)), chunk["copies"])
        self._shuffle_rng.shuffle(order)
        if self.samples is not None:
            self.samples.save(chunk, order)
        return records[order]
