"""Writes SVHN as sharded TFRecords of JPEG images (SPEC §6, §7).

Output under `--output_dir`:
  train-%05d-of-%05d, dev-%05d-of-%05d, test-%05d-of-%05d   labeled records
  unlabeled/extra-%05d-of-%05d                               unlabeled records
  dataset_info.json                                          {subset: num_images}

dev is 4,000 images of a seed-0 shuffle of the 73,257 training images, the
other 69,257 form train; test is the test set; the 531,131 "extra" images are
the unlabeled data. As in the published preprocessing, the unlabeled records
keep their true label + 1 in `image/class/label` (0 would mean "unknown"):
training never reads it, but the filter reports how accurate the teacher's
pseudo labels are. With the `.mat` source (or TFDS, whose `id` feature keeps
the `.mat` order) train, dev and extra hold the same images in the same shards
and order as the published preprocessing. `--full_train_data` keeps all
73,257 images in train and, as published, makes dev a copy of test; the files
keep their usual names (the published script renamed them `*_full-*`, which no
reader looked for).

The generic writer (`write_dataset`, `process`) is shared with the other
dataset writers of this project (proc_mnist.py).

Usage:
  python proc_svhn.py --output_dir=data/svhn/proc                  # via TFDS
  python proc_svhn.py --source=mat --raw_data_dir=data/svhn/raw \\
      --output_dir=data/svhn/proc
"""

import json
import os
import re
import sys
import typing

import numpy as np
import tensorflow as tf
from absl import app, flags, logging

import task_info
import utils

# The published preprocessing encoded JPEGs at quality 100.
DEFAULT_JPEG_QUALITY = 100
# Next to dataset_info.json: the options the data was written with, so that a
# re-run with other options rewrites instead of skipping.
SETTINGS_FILE = "proc_settings.json"
SUBSETS = ("train", "dev", "test", "extra")
UNLABELED_SUBSET = "extra"

SVHN_MAT_SPLITS = ("train", "test", "extra")
SVHN_NUM_DEV = 4000
SVHN_URL = "http://ufldl.stanford.edu/housenumbers/"
# Recorded in the settings file: data written when the unlabeled records held
# 0 in image/class/label is then rewritten by a re-run.
UNLABELED_LABELS = "true class + 1"


class Split(typing.NamedTuple):
    """Images of one output subset.

    Attributes:
      images: uint8 array [N, H, W, 3]; may be a view of a larger array.
      labels: int array [N] of 0-based classes; unlabeled records store them
        as class + 1 in `image/class/label` (-1: unknown, stored as 0).
      order: indices into `images` in the order they are written; the subset
        is `images[order]`, so a shuffle costs no copy of the images.
    """

    images: np.ndarray
    labels: np.ndarray
    order: np.ndarray


# ---------------------------------------------------------------------------
# Generic writer.


def shard_paths(output_dir, subset, num_shards):
    """All file paths of `subset` (SPEC §7 layout) for `num_shards` shards."""
    if subset == UNLABELED_SUBSET:
        return [utils.unlabeled_shard_path(output_dir, i, num_shards) for i in range(num_shards)]
    return [utils.labeled_shard_path(output_dir, subset, i, num_shards) for i in range(num_shards)]


def _read_json_or_none(path):
    try:
        return utils.read_json(path)
    except (OSError, ValueError, tf.errors.OpError):
        return None


# Output-side file operations go through tf.io.gfile so that --output_dir may
# be a bucket path, as with the published scripts.


def output_complete(output_dir, num_shards, settings):
    """Whether `output_dir` already holds the full output written with `settings`.

    Args:
      output_dir: the writer's output directory.
      num_shards: {subset: number of shards}.
      settings: JSON-able dict of the options that determine the content.

    Returns:
      True when dataset_info.json, the settings file (equal to `settings`) and
      every shard exist.
    """
    info = _read_json_or_none(os.path.join(output_dir, task_info.DATASET_INFO_FILE))
    if not isinstance(info, dict) or set(info) != set(num_shards):
        return False
    recorded = _read_json_or_none(os.path.join(output_dir, SETTINGS_FILE))
    # Round-trip through JSON so that tuples and lists compare equal.
    if recorded != json.loads(json.dumps(settings)):
        if recorded is not None:
            logging.info("%s was written with settings %s; now %s.", output_dir, recorded, settings)
        return False
    return all(
        tf.io.gfile.exists(path)
        for subset, count in num_shards.items()
        for path in shard_paths(output_dir, subset, count)
    )


def _remove_stale_files(output_dir, subset, num_shards):
    """Deletes shards of `subset` with another shard count and temp files of killed runs.

    Readers glob `{subset}-*`, so a leftover `train-00003-of-00128` next to a
    new `train-*-of-00008` set would be read as training data.
    """
    keep = set(shard_paths(output_dir, subset, num_shards))
    pattern = os.path.basename(shard_paths(output_dir, subset, 1)[0])
    pattern = re.sub(r"\d{5}-of-\d{5}$", "[0-9]*-of-[0-9]*", pattern)
    folder = os.path.dirname(shard_paths(output_dir, subset, 1)[0])
    for path in tf.io.gfile.glob(os.path.join(folder, pattern)):
        if path not in keep:
            logging.info("Removing stale file %s", path)
            tf.io.gfile.remove(path)


def _shard_bounds(num_images, num_shards):
    # Same boundaries as the published writer: linspace over the image count.
    return np.linspace(0, num_images, num_shards + 1).astype(np.int64)


def _serialized_records(images, labels, subset, num_classes, jpeg_quality):
    for image, label in zip(images, labels, strict=True):
        jpeg = utils.encode_jpeg(image, quality=jpeg_quality)
        if subset == UNLABELED_SUBSET:
            example = utils.unlabeled_example(jpeg, num_classes, int(label))
        else:
            example = utils.labeled_example(jpeg, label)
        yield example.SerializeToString()


def write_split(output_dir, subset, split, num_shards, num_classes, jpeg_quality, progress=None):
    """Writes one subset as `num_shards` TFRecord files, each atomically.

    Args:
      output_dir: output directory.
      subset: train | dev | test | extra (extra goes to `unlabeled/`).
      split: the `Split` to write.
      num_shards: number of files.
      num_classes: length of the placeholder `probabilities` of unlabeled records.
      jpeg_quality: JPEG quality 0..100.
      progress: optional `utils.Progress`, advanced by the images written.

    Returns:
      The number of records written.
    """
    if num_shards < 1:
        raise ValueError(f"num_shards for {subset} must be >= 1, got {num_shards}.")
    order = np.asarray(split.order, np.int64)
    if num_shards > len(order):
        logging.warning(
            "%s: %d shards for %d images; some shards are empty.", subset, num_shards, len(order)
        )
    _remove_stale_files(output_dir, subset, num_shards)
    bounds = _shard_bounds(len(order), num_shards)
    total = 0
    for shard, path in enumerate(shard_paths(output_dir, subset, num_shards)):
        index = order[bounds[shard] : bounds[shard + 1]]
        # Gather one shard at a time: the whole subset in write order would be
        # a second copy of up to 1.6 GB (SVHN extra).
        images = np.ascontiguousarray(split.images[index])
        labels = np.asarray(split.labels)[index]
        total += utils.write_tfrecord(
            path, _serialized_records(images, labels, subset, num_classes, jpeg_quality)
        )
        if progress is not None:
            progress.update(len(index))
    return total


def write_dataset(
    output_dir, splits, num_shards, num_classes, settings, jpeg_quality=DEFAULT_JPEG_QUALITY
):
    """Writes all subsets, then the settings file and dataset_info.json.

    dataset_info.json is written last and removed first, so its presence marks
    a complete output even if an earlier run was killed half-way.

    Args:
      output_dir: output directory.
      splits: {subset: Split}.
      num_shards: {subset: number of shards}; must cover every subset.
      num_classes: number of classes (placeholder length of unlabeled records).
      settings: JSON-able options recorded next to the data.
      jpeg_quality: JPEG quality 0..100.

    Returns:
      {subset: number of images written}, as stored in dataset_info.json.
    """
    missing = set(splits) - set(num_shards)
    if missing:
        raise ValueError(f"No shard count for subsets {sorted(missing)}.")
    tf.io.gfile.makedirs(output_dir)
    for name in (task_info.DATASET_INFO_FILE, SETTINGS_FILE):
        path = os.path.join(output_dir, name)
        if tf.io.gfile.exists(path):
            tf.io.gfile.remove(path)
    total = sum(len(split.order) for split in splits.values())
    progress = utils.Progress(total, name="images", prefix="written ")
    counts = {}
    for subset, split in splits.items():
        logging.info(
            "Writing %s: %d images in %d shards.", subset, len(split.order), num_shards[subset]
        )
        counts[subset] = write_split(
            output_dir, subset, split, num_shards[subset], num_classes, jpeg_quality, progress
        )
    progress.update(0, force=True)
    utils.write_json(os.path.join(output_dir, SETTINGS_FILE), settings)
    utils.write_json(os.path.join(output_dir, task_info.DATASET_INFO_FILE), counts)
    logging.info("Wrote %s to %s", counts, output_dir)
    return counts


def process(
    output_dir,
    make_splits,
    num_shards,
    num_classes,
    settings,
    overwrite=False,
    jpeg_quality=DEFAULT_JPEG_QUALITY,
):
    """Skips when the complete output exists, else loads the data and writes it.

    Args:
      output_dir: output directory.
      make_splits: callable returning {subset: Split}; only called when writing.
      num_shards: {subset: number of shards}.
      num_classes: number of classes.
      settings: JSON-able options that determine the content; a re-run with
        other settings rewrites.
      overwrite: rewrite even if the complete output exists.
      jpeg_quality: JPEG quality 0..100.

    Returns:
      {subset: number of images}, read back from dataset_info.json if skipped.
    """
    settings = dict(
        settings,
        num_shards=dict(num_shards),
        jpeg_quality=jpeg_quality,
        unlabeled_labels=UNLABELED_LABELS,
    )
    if not overwrite and output_complete(output_dir, num_shards, settings):
        logging.info(
            "Complete output already in %s (%s present); skipping. Pass --overwrite to rewrite.",
            output_dir,
            task_info.DATASET_INFO_FILE,
        )
        return utils.read_json(os.path.join(output_dir, task_info.DATASET_INFO_FILE))
    splits = make_splits()
    return write_dataset(output_dir, splits, num_shards, num_classes, settings, jpeg_quality)


def num_shards_for(task_name, overrides):
    """Shard counts of `task_name` from task_info, with non-None `overrides` applied."""
    counts = dict(task_info.get_task_info(task_name).num_files)
    for subset, value in overrides.items():
        if value is not None:
            counts[subset] = int(value)
    return counts


# ---------------------------------------------------------------------------
# SVHN sources. Both return {split: (images [N, 32, 32, 3] uint8, labels [N]
# int64 with digit 0 as 0)} for the splits train, test and extra.


def load_mat_split(path):
    """Reads one SVHN `{split}_32x32.mat`.

    Args:
      path: the .mat file: `X` is [32, 32, 3, N] uint8, `y` is [N, 1] with
        labels 1..10, where 10 means digit 0.

    Returns:
      (images [N, 32, 32, 3] uint8 (a transposed view of `X`), labels [N] 0..9).

    Raises:
      FileNotFoundError: if `path` does not exist.
      ValueError: if the file is not a readable SVHN .mat file.
    """
    import scipy.io  # Only this source needs SciPy.

    if not os.path.exists(path):
        raise FileNotFoundError(
            f"Missing SVHN file {path}. Download train_32x32.mat, test_32x32.mat and "
            f"extra_32x32.mat from {SVHN_URL} into --raw_data_dir, or use --source=tfds."
        )
    try:
        data = scipy.io.loadmat(path)
    except Exception as e:  # SciPy raises several types for damaged files.
        raise ValueError(f"Cannot read {path} as a .mat file (truncated or corrupt?): {e}") from e
    if "X" not in data or "y" not in data:
        raise ValueError(f"{path} has no 'X' and 'y' arrays; found {sorted(data)}.")
    x, y = data["X"], np.asarray(data["y"]).reshape(-1)
    if x.ndim != 4 or x.shape[:3] != (32, 32, 3) or x.shape[3] != y.size:
        raise ValueError(
            f"{path}: expected X [32, 32, 3, N] and y [N, 1]; got X {x.shape}, y {data['y'].shape}."
        )
    if y.size and (y.min() < 1 or y.max() > 10):
        raise ValueError(f"{path}: labels must be 1..10, found {y.min()}..{y.max()}.")
    return np.transpose(x.astype(np.uint8, copy=False), [3, 0, 1, 2]), (y % 10).astype(np.int64)


def load_svhn_mat(raw_data_dir):
    """Loads train, test and extra from the original .mat files in `raw_data_dir`."""
    if not raw_data_dir:
        raise ValueError(
            "--source=mat needs --raw_data_dir (the folder with the *_32x32.mat files)."
        )
    # Fail on a missing file before spending a minute on loading the others.
    for split in SVHN_MAT_SPLITS:
        path = os.path.join(raw_data_dir, f"{split}_32x32.mat")
        if not os.path.exists(path):
            load_mat_split(path)
    data = {}
    for split in SVHN_MAT_SPLITS:
        path = os.path.join(raw_data_dir, f"{split}_32x32.mat")
        logging.info("Loading %s", path)
        data[split] = load_mat_split(path)
    return data


def load_tfds_split(name, split, data_dir=None, batch_size=4096):
    """Loads a whole TFDS split into numpy arrays {feature: array}.

    Batches are concatenated here because `tfds.load(batch_size=-1)` crashes
    on TF 2.21 for datasets of unknown size.
    """
    import tensorflow_datasets as tfds  # Only the TFDS sources need it.

    ds = tfds.load(name, split=split, data_dir=data_dir, shuffle_files=False)
    batches = list(tfds.as_numpy(ds.batch(batch_size)))
    if not batches:
        raise ValueError(f"TFDS {name}/{split} is empty.")
    return {key: np.concatenate([batch[key] for batch in batches]) for key in batches[0]}


def _mat_order(ids, split):
    """The order that sorts TFDS records back into .mat order, or None if `ids` don't tell it.

    TFDS stores records shuffled, but svhn_cropped's `id` feature is
    "{split}_{index in the .mat file:06d}".
    """
    prefix = f"{split}_"
    index = []
    for raw in ids:
        text = raw.decode() if isinstance(raw, bytes) else str(raw)
        if not text.startswith(prefix) or not text[len(prefix) :].isdigit():
            return None
        index.append(int(text[len(prefix) :]))
    index = np.asarray(index, np.int64)
    if len(np.unique(index)) != len(index):
        return None
    return np.argsort(index, kind="stable")


def load_svhn_tfds(tfds_data_dir=None):
    """Loads train, test and extra from TFDS `svhn_cropped` (downloads it if needed)."""
    data = {}
    for split in SVHN_MAT_SPLITS:
        logging.info("Loading TFDS svhn_cropped/%s", split)
        arrays = load_tfds_split("svhn_cropped", split, tfds_data_dir)
        images, labels = arrays["image"], arrays["label"].astype(np.int64)
        order = _mat_order(arrays["id"], split) if "id" in arrays else None
        if order is None:
            logging.warning(
                "svhn_cropped/%s ids do not give the .mat order; keeping TFDS order.", split
            )
        else:
            images, labels = images[order], labels[order]
        data[split] = (images, labels)
    return data


def make_svhn_splits(data, num_dev=SVHN_NUM_DEV, full_train_data=False, seed=0):
    """Splits loaded SVHN into train/dev/test/extra.

    Follows the published preprocessing: one RandomState(seed) shuffles train,
    then extra; dev is the first `num_dev` shuffled training images. Test,
    which was written unshuffled there, is shuffled last with the same stream.

    Args:
      data: {train|test|extra: (images, labels)}.
      num_dev: images held out of train as dev.
      full_train_data: keep all training images in train; dev is then a copy
        of test (as published), so dev evaluation still works.
      seed: shuffle seed.

    Returns:
      {subset: Split}.
    """
    rng = np.random.RandomState(seed)
    train_images, train_labels = data["train"]
    perm = rng.permutation(len(train_labels))
    extra_images, extra_labels = data["extra"]
    extra_order = rng.permutation(len(extra_labels))
    test_images, test_labels = data["test"]
    test_order = rng.permutation(len(test_labels))
    splits = {}
    if full_train_data:
        splits["train"] = Split(train_images, train_labels, perm)
        splits["dev"] = Split(test_images, test_labels, test_order)
    else:
        if not 0 <= num_dev <= len(perm):
            raise ValueError(f"num_dev={num_dev} but there are {len(perm)} training images.")
        splits["train"] = Split(train_images, train_labels, perm[num_dev:])
        splits["dev"] = Split(train_images, train_labels, perm[:num_dev])
    splits["test"] = Split(test_images, test_labels, test_order)
    splits["extra"] = Split(extra_images, extra_labels, extra_order)
    return splits


def process_svhn(
    output_dir,
    source="tfds",
    raw_data_dir=None,
    tfds_data_dir=None,
    num_dev=SVHN_NUM_DEV,
    full_train_data=False,
    seed=0,
    num_shards=None,
    overwrite=False,
    jpeg_quality=DEFAULT_JPEG_QUALITY,
    task_name="svhn",
):
    """Loads SVHN from `source` and writes it to `output_dir` (see module doc).

    Args:
      output_dir: output directory.
      source: "tfds" (TFDS svhn_cropped) or "mat" (original .mat files).
      raw_data_dir: folder of the .mat files (source "mat").
      tfds_data_dir: TFDS data_dir (source "tfds"); None for TFDS' default.
      num_dev: dev images held out of train.
      full_train_data: all training images in train; dev = test.
      seed: shuffle seed.
      num_shards: {subset: shards}; missing subsets use task_info's counts.
      overwrite: rewrite even if the complete output exists.
      jpeg_quality: JPEG quality 0..100.
      task_name: task whose shard counts and classes apply (svhn).

    Returns:
      {subset: number of images}.
    """
    if source not in ("tfds", "mat"):
        raise ValueError(f"source must be 'tfds' or 'mat', got {source!r}.")
    info = task_info.get_task_info(task_name)
    shards = num_shards_for(task_name, num_shards or {})

    def make_splits():
        data = load_svhn_mat(raw_data_dir) if source == "mat" else load_svhn_tfds(tfds_data_dir)
        return make_svhn_splits(data, num_dev=num_dev, full_train_data=full_train_data, seed=seed)

    settings = {
        "task_name": task_name,
        "source": source,
        "num_dev": num_dev,
        "full_train_data": full_train_data,
        "seed": seed,
    }
    return process(
        output_dir, make_splits, shards, info.num_classes, settings, overwrite, jpeg_quality
    )


# ---------------------------------------------------------------------------
# Command line.


def define_flags():
    """Defines the command-line flags (only when run as a script, so importing is side-effect free)."""
    flags.DEFINE_string(
        "task_name", "svhn", "Task whose shard counts and class count apply; only svhn."
    )
    flags.DEFINE_enum(
        "source",
        "tfds",
        ["tfds", "mat"],
        "Where the images come from: 'tfds' = TensorFlow Datasets svhn_cropped (downloaded "
        "into --tfds_data_dir if absent); 'mat' = the original train_32x32.mat, "
        f"test_32x32.mat and extra_32x32.mat from {SVHN_URL} in --raw_data_dir.",
    )
    flags.DEFINE_string(
        "raw_data_dir", None, "Folder holding the *_32x32.mat files (--source=mat)."
    )
    flags.DEFINE_string("tfds_data_dir", None, "TFDS data_dir (--source=tfds); default: TFDS' own.")
    flags.DEFINE_string(
        "output_dir", None, "Where the TFRecords and dataset_info.json are written."
    )
    flags.DEFINE_bool(
        "full_train_data",
        False,
        "Put all 73,257 training images in train; dev is then a copy of test.",
    )
    flags.DEFINE_integer("num_dev", SVHN_NUM_DEV, "Training images held out as dev.")
    flags.DEFINE_integer("seed", 0, "Seed of the train/dev split and of all shuffles.")
    for subset in SUBSETS:
        flags.DEFINE_integer(
            f"num_{subset}_shards", None, f"Number of {subset} files; default from task_info."
        )
    flags.DEFINE_integer("jpeg_quality", DEFAULT_JPEG_QUALITY, "JPEG quality (0-100).")
    flags.DEFINE_bool("overwrite", False, "Rewrite even if the complete output already exists.")
    flags.mark_flag_as_required("output_dir")


def main(argv):
    del argv
    fl = flags.FLAGS
    if fl.task_name != "svhn":
        raise app.UsageError(f"proc_svhn.py only writes svhn, got --task_name={fl.task_name}.")
    try:
        _process_from_flags(fl)
    except (ValueError, OSError) as e:
        # The loaders name the file; a traceback would only bury the message.
        logging.error("%s", e)
        sys.exit(f"proc_svhn.py: error: {e}")


def _process_from_flags(fl):
    process_svhn(
        fl.output_dir,
        source=fl.source,
        raw_data_dir=fl.raw_data_dir,
        tfds_data_dir=fl.tfds_data_dir,
        num_dev=fl.num_dev,
        full_train_data=fl.full_train_data,
        seed=fl.seed,
        num_shards={subset: getattr(fl, f"num_{subset}_shards") for subset in SUBSETS},
        overwrite=fl.overwrite,
        jpeg_quality=fl.jpeg_quality,
        task_name=fl.task_name,
    )


if __name__ == "__main__":
    define_flags()
    app.run(main)
