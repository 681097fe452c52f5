"""tf.data input pipelines for labeled, unlabeled and evaluation data (docs/method.md, "Record formats").

Training batches come as one dict per replica:
  images:          [B + U, H, W, 3] float32 0..255, labeled images first,
                   then the (noised) unlabeled images the student sees.
  labels:          [B] int32, 0-based.
  unl_labels:      [U] int32, the stored `label` of unlabeled records.
  unl_probs:       [U, C] float32, the stored `probabilities`.
  teacher_images:  [U, H', W', 3] float32 0..255, clean (eval-preprocessed)
                   unlabeled images, only when a teacher runs on the fly.
Evaluation batches are padded to a fixed size with a 0/1 `mask`, so every
image is counted exactly once and no batch is dropped.
"""

import contextlib
import functools
import math
import os

import numpy as np
import tensorflow as tf
from absl import logging

import file_names
import preprocessing

_READ_BUFFER_BYTES = 8 * 1024 * 1024
AUTOTUNE = tf.data.AUTOTUNE


class DataError(ValueError):
    """An input record that cannot be used, with the file (and record) it is in."""


def list_files(data_dir, prefix):
    """Sorted `{data_dir}/{prefix}-*` files, ignoring temporary files of unfinished writes."""
    pattern = file_names.shard_glob(data_dir, prefix)
    return sorted(f for f in tf.io.gfile.glob(pattern) if ".tmp" not in os.path.basename(f))


def labeled_files(data_dir, subset, num_train_shards=None):
    """The files of one labeled subset.

    Args:
      data_dir: directory holding `{subset}-%05d-of-%05d` files.
      subset: file prefix, e.g. train, dev, test, validation.
      num_train_shards: if set, use only the first this many files.

    Raises:
      FileNotFoundError: no file matches, naming the pattern.
    """
    if not data_dir:
        raise FileNotFoundError("--label_data_dir is not set.")
    files = list_files(data_dir, subset)
    if not files:
        raise FileNotFoundError(
            f"No labeled files for subset {subset!r}: nothing matches "
            f"{os.path.join(data_dir, subset + '-*')} (check --label_data_dir)."
        )
    if num_train_shards:
        files = files[:num_train_shards]
    return files


def unlabeled_files(unlabel_data_dirs):
    """The `train*` and `extra*` files of one or more unlabeled directories.

    Args:
      unlabel_data_dirs: a list of directories, or one string of directories
        separated by ';' as `--unlabel_data_dir` takes them.

    Raises:
      FileNotFoundError: a directory with no such files, naming it.
    """
    if isinstance(unlabel_data_dirs, str):
        unlabel_data_dirs = [d for d in unlabel_data_dirs.split(";") if d]
    if not unlabel_data_dirs:
        raise FileNotFoundError("--unlabel_data_dir is empty.")
    files = []
    for data_dir in unlabel_data_dirs:
        found = list_files(data_dir, "train") + list_files(data_dir, "extra")
        if not found:
            raise FileNotFoundError(
                f"Unlabeled directory {data_dir!r} has no train-* or extra-* files "
                "(check --unlabel_data_dir)."
            )
        files.extend(found)
    return files


def _checked_range(value, low, high, what):
    """`value`, after an in-graph check that low <= value <= high (InvalidArgumentError)."""
    in_range = tf.logical_and(value >= low, value <= high)
    check = tf.debugging.Assert(
        in_range, [f"{what} must lie in {low}..{high}, got", value], summarize=1
    )
    with tf.control_dependencies([check]):
        return tf.identity(value)


def parse_labeled(serialized, num_classes=None):
    """Parses a labeled record into encoded image bytes and a 0-based label.

    Args:
      serialized: a serialized tf.train.Example.
      num_classes: if set, `image/class/label` (1-based) must lie in
        1..num_classes; otherwise reading fails (see `naming_bad_files`)
        instead of training or scoring a label that no logit has.
    """
    parsed = tf.io.parse_single_example(
        serialized,
        {
            "image/encoded": tf.io.FixedLenFeature([], tf.string),
            "image/class/label": tf.io.FixedLenFeature([], tf.int64),
        },
    )
    label = parsed["image/class/label"]
    if num_classes:
        label = _checked_range(label, 1, num_classes, "image/class/label")
    return parsed["image/encoded"], tf.cast(label, tf.int32) - 1


def parse_unlabeled(serialized, num_classes):
    """Parses an unlabeled or pseudo-labeled record: image bytes, `label`, `probabilities`.

    The stored pseudo `label` (0-based) must lie in 0..num_classes-1.
    """
    parsed = tf.io.parse_single_example(
        serialized,
        {
            "image/encoded": tf.io.FixedLenFeature([], tf.string),
            "label": tf.io.FixedLenFeature([], tf.int64, default_value=0),
            "probabilities": tf.io.FixedLenFeature([num_classes], tf.float32),
        },
    )
    label = _checked_range(parsed["label"], 0, num_classes - 1, "label")
    return parsed["image/encoded"], tf.cast(label, tf.int32), parsed["probabilities"]


# Errors of reading, parsing or decoding a record (truncated file, missing
# key, out-of-range label, bytes that are no image).
RECORD_ERRORS = (tf.errors.InvalidArgumentError, tf.errors.DataLossError)


def _record_check(kind, num_classes):
    """A function parsing and decoding one record as the pipelines do (for `locate_bad_record`)."""

    def check(serialized):
        if kind == "labeled":
            image_bytes, _ = parse_labeled(serialized, num_classes)
        elif kind == "unlabeled":
            image_bytes, _, _ = parse_unlabeled(serialized, num_classes)
        else:
            image_bytes = tf.io.parse_single_example(
                serialized, {"image/encoded": tf.io.FixedLenFeature([], tf.string)}
            )["image/encoded"]
        return tf.shape(preprocessing.decode_image(image_bytes))[0]

    return check


# The keys each kind of record needs: {key: (feature kind, number of values)};
# an unlabeled record's `label` may be absent (it defaults to 0).
_NEEDED_KEYS = {
    "labeled": {"image/encoded": ("bytes_list", 1), "image/class/label": ("int64_list", 1)},
    "unlabeled": {
        "image/encoded": ("bytes_list", 1),
        "label": ("int64_list", 1),
        "probabilities": ("float_list", "num_classes"),
    },
    "image": {"image/encoded": ("bytes_list", 1)},
}
_KIND_NAMES = {"bytes_list": "bytes", "int64_list": "int64", "float_list": "float"}


def describe_record_problem(serialized, kind, num_classes=None):
    """Why a serialized record cannot be used as `kind`, in words, or None.

    Checks what tf.data's parsing checks (a tf.train.Example, each needed key
    present with values of the right type and number, labels in range), so
    that the message names the key and the expected type itself instead of
    quoting TensorFlow's op text.

    Args:
      serialized: the record's bytes.
      kind: 'labeled', 'unlabeled' or 'image' (see `locate_bad_record`).
      num_classes: number of classes, for lengths and label ranges.
    """
    example = tf.train.Example()
    try:
        example.ParseFromString(serialized)
    except Exception:  # protobuf's DecodeError, whose module varies by backend.
        return "not a tf.train.Example (the file holds records of another kind)"
    feature = example.features.feature
    for key, (expected, count) in _NEEDED_KEYS[kind].items():
        optional = kind == "unlabeled" and key == "label"
        if key not in feature:
            if optional:
                continue
            present = ", ".join(sorted(feature)) or "none"
            return f"key {key!r} is missing (keys present: {present})"
        found = feature[key].WhichOneof("kind")
        if found != expected:
            return (
                f"key {key!r} holds {_KIND_NAMES.get(found, found)} values, "
                f"expected {_KIND_NAMES[expected]}"
            )
        values = getattr(feature[key], expected).value
        if count == "num_classes":
            count = num_classes
        if len(values) != count:
            return f"key {key!r} holds {len(values)} values, expected {count}"
        if not num_classes:
            continue
        if key == "image/class/label" and not 1 <= values[0] <= num_classes:
            return f"key {key!r} is {values[0]}: expected 1..{num_classes} (1-based)"
        if key == "label" and not 0 <= values[0] < num_classes:
            return f"key {key!r} is {values[0]}: expected 0..{num_classes - 1} (0-based)"
    return None


def locate_bad_record(files, kind, num_classes=None):
    """Finds the first record of `files` that the pipelines cannot use.

    Reads the files one by one (only called after a pipeline failed, to say
    where), parsing and decoding every record.

    Args:
      files: TFRecord files.
      kind: 'labeled', 'unlabeled' (stored pseudo labels) or 'image' (only
        `image/encoded` is needed).
      num_classes: number of classes, for the label range checks.

    Returns:
      A `DataError` naming the file, the record's index and the reason (the
      key and what was expected), or None if every record reads.
    """
    check = _record_check(kind, num_classes)
    for path in files:
        index = 0
        try:
            for _ in tf.data.TFRecordDataset(path).map(check):
                index += 1
        except RECORD_ERRORS as e:
            return DataError(
                f"{path}: record {index} cannot be used: {_reason(path, index, kind, num_classes, e)}"
            )
    return None


def _reason(path, index, kind, num_classes, error):
    """Why record `index` of `path` failed (`error`), in words that name the key."""
    try:
        raw = next(iter(tf.data.TFRecordDataset(path).skip(index).take(1)), None)
    except RECORD_ERRORS:
        if index == 0:
            return "not a TFRecord file (no readable record at its start)"
        return "the file is truncated or corrupted here (not a whole TFRecord)"
    problem = describe_record_problem(raw.numpy(), kind, num_classes) if raw is not None else None
    if problem is None:
        # Every key parses: decoding the image is what failed.
        logging.debug("%s: record %d: %s", path, index, error.message)
        return "key 'image/encoded' is not a decodable JPEG, PNG, GIF or BMP image"
    return problem


def count_labels(files, num_classes, source):
    """Images per class (0-based) in labeled `files`, every label checked against `num_classes`.

    Reads only the labels (no image is decoded), so that a task's class count
    can be checked against its data before training starts.

    Args:
      files: labeled TFRecord files.
      num_classes: the task's number of classes.
      source: what set `num_classes` (a dataset_info.json), for messages.

    Returns:
      A list of `num_classes` counts.

    Raises:
      DataError: a label outside 1..num_classes (the data has more classes
        than `source` says) or an unreadable record, naming the file, the
        record and `source`.
    """
    key = "image/class/label"
    ds = tf.data.TFRecordDataset(files).map(
        lambda r: tf.io.parse_single_example(r, {key: tf.io.FixedLenFeature([], tf.int64)})[key],
        num_parallel_calls=AUTOTUNE,
    )
    counts = [0] * num_classes
    out_of_range = False
    try:
        for batch in ds.batch(65536):
            values = batch.numpy()
            if values.size and (values.min() < 1 or values.max() > num_classes):
                out_of_range = True
                break
            for label, count in zip(*np.unique(values, return_counts=True), strict=True):
                counts[int(label) - 1] += int(count)
    except RECORD_ERRORS:
        out_of_range = True
    if out_of_range:
        error = locate_bad_record(files, "labeled", num_classes) or DataError(
            f"{files}: a label outside 1..{num_classes}"
        )
        raise DataError(f"{source}: num_classes is {num_classes}, but {error}")
    return counts


@contextlib.contextmanager
def naming_bad_files(labeled_files=(), unlabeled_files=(), image_files=(), num_classes=None):
    """Turns a record error raised inside the block into a DataError naming the file.

    tf.data reports a bad record (truncated file, missing key, label out of
    range, not an image) without saying where it is; this looks it up in the
    block's input files.
    """
    try:
        yield
    except RECORD_ERRORS as e:
        # TensorFlow's op text says what but not where: the DataError below
        # says both, so the op text goes no further than the debug log.
        logging.info("Reading the input failed; locating the bad record...")
        logging.debug("The input pipeline's error: %s", e.message)
        for files, kind in (
            (labeled_files, "labeled"),
            (unlabeled_files, "unlabeled"),
            (image_files, "image"),
        ):
            error = locate_bad_record(files, kind, num_classes) if files else None
            if error is not None:
                raise error from e
        raise


def _record_dataset(files, input_context, shuffle, cache, seed=None):
    """Reads TFRecords of `files`, sharded across input pipelines (hosts).

    Files are interleaved in a deterministic order, so that a seeded run reads
    the same records in the same order every time.
    """
    num_pipelines = input_context.num_input_pipelines if input_context else 1
    pipeline_id = input_context.input_pipeline_id if input_context else 0
    files_ds = tf.data.Dataset.from_tensor_slices(files)
    shard_records = num_pipelines > 1 and len(files) < num_pipelines
    if num_pipelines > 1 and not shard_records:
        files_ds = files_ds.shard(num_pipelines, pipeline_id)
    if shuffle:
        files_ds = files_ds.shuffle(len(files), seed=seed, reshuffle_each_iteration=True)
    ds = files_ds.interleave(
        lambda f: tf.data.TFRecordDataset(f, buffer_size=_READ_BUFFER_BYTES),
        cycle_length=min(16, len(files)),
        num_parallel_calls=AUTOTUNE,
        deterministic=True,
    )
    if shard_records:
        ds = ds.shard(num_pipelines, pipeline_id)
    if cache:
        ds = ds.cache()
    return ds


def unlabeled_batch_size(labeled_batch_size, unlabel_ratio, label_data_sample_prob=1.0):
    """Unlabeled images per batch: ceil(batch x label_data_sample_prob x unlabel_ratio).

    As in the published code: with `--label_data_sample_prob` < 1 only that
    share of the labeled images counts, and the unlabeled part scales with it.
    """
    if not unlabel_ratio:
        return 0
    return int(math.ceil(labeled_batch_size * label_data_sample_prob * unlabel_ratio))


# Every per-element random draw of the input pipeline comes from one seed
# stream: element i of stream s is seeded by fold_in([seed, s], i). Each kind
# of draw has a stream of its own, so adding a draw never changes the seeds
# (and so the images) of another. A new draw (say, a per-batch mixup weight)
# adds the next id here and reads its seeds with element_seeds(seed,
# stream_id(name, pipeline_id)). Input pipeline p (one per host under
# tf.distribute) uses ids p * len(SEED_STREAMS) + id, so hosts never share a
# stream; pipeline 0, every single-host run, keeps its seeds when ids are added.
SEED_STREAMS = {"labeled": 0, "unlabeled": 1}


def stream_id(name, pipeline_id=0):
    """The seed stream of draw `name` (a key of SEED_STREAMS) in input pipeline `pipeline_id`."""
    return pipeline_id * len(SEED_STREAMS) + SEED_STREAMS[name]


def element_seeds(seed, stream):
    """A dataset of distinct stateless seeds [2] for consecutive elements of one stream.

    Element i of stream s gets fold_in([seed, s], i): every random draw of a
    map function is then a pure function of the run's seed and the element's
    position, whatever the parallelism of the map.
    """
    base = tf.constant([seed, stream], tf.int64)
    return tf.data.Dataset.range(2**62).map(
        lambda i: tf.random.experimental.stateless_fold_in(base, i)
    )


AUGMENT_NAMES = ("v1",)
_NO_AUGMENT = (None, "", "none", "None")


def augment_name_or_none(name, flag="--augment_name"):
    """None for no RandAugment (None, '', 'none'), else a known name; ValueError naming `flag`."""
    if name in _NO_AUGMENT:
        return None
    if name not in AUGMENT_NAMES:
        raise ValueError(f"{flag}={name!r}: expected 'none' or one of {list(AUGMENT_NAMES)}.")
    return name


def augment_names(augment_name, unl_aug):
    """(labeled, unlabeled) RandAugment names, each None or a known name.

    `--unl_aug=default` uses `--augment_name`; 'none' means no RandAugment.

    Raises:
      ValueError: an unknown name, naming its flag.
    """
    labeled = augment_name_or_none(augment_name)
    if unl_aug == "default":
        return labeled, labeled
    return labeled, augment_name_or_none(unl_aug, "--unl_aug")


def _seeded_records(files, input_context, cache, shuffle_buffer, seed, stream):
    """Records of `files`, shuffled and repeated forever, each zipped with its element seed."""
    ds = _record_dataset(files, input_context, shuffle=True, cache=cache, seed=seed)
    ds = ds.shuffle(shuffle_buffer, seed=seed).repeat()
    return tf.data.Dataset.zip((ds, element_seeds(seed, stream)))


def _unlabeled_fn(preprocess_student, num_classes, teacher_image_size, small_image_model):
    """Map function of the unlabeled records: the student's view, stored targets, teacher's view.

    The image is decoded once, so the student's noisy view and the teacher's
    clean view (eval preprocessing at the teacher's size, when a teacher runs
    on the fly) come from the same pixels.
    """

    def unlabeled_fn(serialized, element_seed):
        image_bytes, label, probs = parse_unlabeled(serialized, num_classes)
        image = preprocessing.decode_image(image_bytes)
        out = {
            "image": preprocess_student(image, seed=element_seed),
            "label": label,
            "probs": probs,
        }
        if teacher_image_size:
            out["teacher_image"] = preprocessing.preprocess_image(
                image,
                is_training=False,
                image_size=teacher_image_size,
                small_image=small_image_model,
            )
        return out

    return unlabeled_fn


def _merge_batches(labeled, unlabeled):
    """One student batch: labeled images first, then the unlabeled ones."""
    images, labels = labeled
    out = {
        "images": tf.concat([images, unlabeled["image"]], axis=0),
        "labels": labels,
        "unl_labels": unlabeled["label"],
        "unl_probs": unlabeled["probs"],
    }
    if "teacher_image" in unlabeled:
        out["teacher_images"] = unlabeled["teacher_image"]
    return out


def make_train_dataset(
    input_context,
    *,
    label_files,
    per_replica_batch_size,
    image_size,
    small_image_model,
    num_classes,
    augment_name=None,
    randaug_mag=27,
    randaug_layer=2,
    cutout_op=True,
    random_flip=True,
    remove_aug=False,
    cache=True,
    unlabel_files=None,
    unlabel_ratio=0,
    unl_aug="default",
    teacher_image_size=None,
    shuffle_buffer=16384,
    seed=0,
    label_data_sample_prob=1.0,
):
    """The training pipeline of one input pipeline (host), batched per replica.

    Args:
      input_context: a `tf.distribute.InputContext`, or None for one pipeline.
      label_files: labeled TFRecord files.
      per_replica_batch_size: labeled images per replica and step.
      image_size: student input resolution.
      small_image_model: use the 32x32 augmentation path.
      num_classes: length of stored `probabilities`.
      augment_name: None or 'v1' (RandAugment) for the student.
      randaug_mag, randaug_layer, cutout_op: RandAugment settings.
      random_flip: flip training images left-right.
      remove_aug: eval-style preprocessing for training images (no noise).
      cache: cache the raw records in memory.
      unlabel_files: unlabeled TFRecord files (with unlabel_ratio > 0).
      unlabel_ratio: unlabeled images per labeled image.
      unl_aug: 'default' (= augment_name) or the augmentation of unlabeled images.
      teacher_image_size: if set, also yield the clean unlabeled image at this
        size for a teacher running on the fly.
      shuffle_buffer: records in the shuffle buffer.
      seed: int seed of the file and record shuffles and of every random
        preprocessing draw (crops, flips, RandAugment, Cutout).
      label_data_sample_prob: share of the labeled images whose loss counts;
        scales the unlabeled batch (see `unlabeled_batch_size`).

    Returns:
      A `tf.data.Dataset` of per-replica batch dicts (see module docstring).
    """
    pipeline_id = input_context.input_pipeline_id if input_context else 0
    augment_name, unlabeled_augment_name = augment_names(augment_name, unl_aug)
    preprocess = functools.partial(
        preprocessing.preprocess_image,
        is_training=not remove_aug,
        image_size=image_size,
        small_image=small_image_model,
        randaug_mag=randaug_mag,
        randaug_layer=randaug_layer,
        cutout_op=cutout_op,
        random_flip=random_flip,
    )

    def labeled_fn(serialized, element_seed):
        image_bytes, label = parse_labeled(serialized, num_classes)
        return preprocess(image_bytes, augment_name=augment_name, seed=element_seed), label

    lab = _seeded_records(
        label_files, input_context, cache, shuffle_buffer, seed, stream_id("labeled", pipeline_id)
    )
    lab = lab.map(labeled_fn, num_parallel_calls=AUTOTUNE)
    lab = lab.batch(per_replica_batch_size, drop_remainder=True)

    if not unlabel_ratio:
        ds = lab.map(lambda images, labels: {"images": images, "labels": labels})
        return ds.prefetch(AUTOTUNE)

    if not unlabel_files:
        raise ValueError("unlabel_ratio > 0 needs unlabeled files (--unlabel_data_dir).")
    unl_batch = unlabeled_batch_size(per_replica_batch_size, unlabel_ratio, label_data_sample_prob)
    unl = _seeded_records(
        unlabel_files,
        input_context,
        cache,
        shuffle_buffer,
        seed,
        stream_id("unlabeled", pipeline_id),
    )
    student_view = functools.partial(preprocess, augment_name=unlabeled_augment_name)
    unlabeled_fn = _unlabeled_fn(student_view, num_classes, teacher_image_size, small_image_model)
    unl = unl.map(unlabeled_fn, num_parallel_calls=AUTOTUNE)
    unl = unl.batch(unl_batch, drop_remainder=True)

    ds = tf.data.Dataset.zip((lab, unl)).map(_merge_batches, num_parallel_calls=AUTOTUNE)
    logging.info(
        "Train input: %d labeled + %d unlabeled images per replica and step, from %d + %d files.",
        *(per_replica_batch_size, unl_batch, len(label_files), len(unlabel_files)),
    )
    return ds.prefetch(AUTOTUNE)


def pad_batch(batch, batch_size):
    """Pads every tensor of `batch` along axis 0 to `batch_size`; adds a 0/1 `mask`."""
    first = next(iter(batch.values()))
    n = tf.shape(first)[0]
    out = {}
    for key, value in batch.items():
        if value.dtype == tf.string:
            padded = tf.concat([value, tf.fill([batch_size - n], "")], axis=0)
        else:
            paddings = [[0, batch_size - n]] + [[0, 0]] * (len(value.shape) - 1)
            padded = tf.pad(value, paddings)
        padded.set_shape([batch_size] + value.shape[1:].as_list())
        out[key] = padded
    mask = tf.pad(tf.ones([n], tf.float32), [[0, batch_size - n]])
    mask.set_shape([batch_size])
    out["mask"] = mask
    return out


def make_eval_dataset(
    files,
    *,
    batch_size,
    image_size,
    small_image_model,
    labeled=True,
    num_shards=1,
    shard_index=0,
    keep_encoded=False,
    num_classes=None,
):
    """Evaluation/prediction pipeline: records in file order, eval preprocessing.

    Every batch has exactly `batch_size` rows; rows past the end of the data
    have mask 0, so nothing is dropped or counted twice.

    Args:
      files: TFRecord files, read in this order.
      batch_size: global batch size.
      image_size: model input resolution.
      small_image_model: use the 32x32 eval path.
      labeled: parse `image/class/label` (labeled) or only the image.
      num_shards, shard_index: keep records `shard_index::num_shards` (a
        worker's part of a prediction shard).
      keep_encoded: also yield the encoded image bytes as `encoded`.
      num_classes: if set, labels must lie in 1..num_classes (see `parse_labeled`).

    Returns:
      A `tf.data.Dataset` of dicts with `images`, `mask` and, if labeled, `labels`.
    """
    ds = tf.data.TFRecordDataset(files, buffer_size=_READ_BUFFER_BYTES)
    if num_shards > 1:
        ds = ds.shard(num_shards, shard_index)

    def parse(serialized):
        if labeled:
            image_bytes, label = parse_labeled(serialized, num_classes)
        else:
            image_bytes = tf.io.parse_single_example(
                serialized, {"image/encoded": tf.io.FixedLenFeature([], tf.string)}
            )["image/encoded"]
        image = preprocessing.preprocess_image(
            image_bytes, is_training=False, image_size=image_size, small_image=small_image_model
        )
        out = {"images": image}
        if labeled:
            out["labels"] = label
        if keep_encoded:
            out["encoded"] = image_bytes
        return out

    ds = ds.map(parse, num_parallel_calls=AUTOTUNE, deterministic=True)
    ds = ds.batch(batch_size, drop_remainder=False)
    ds = ds.map(lambda b: pad_batch(b, batch_size), num_parallel_calls=AUTOTUNE)
    return ds.prefetch(AUTOTUNE)
