"""The one writer of the TFRecord dataset layout, shared by the proc_*.py scripts.

A dataset is a folder (docs/method.md, "Record formats"):
  {subset}-%05d-of-%05d          labeled records (train, dev, test, validation)
  unlabeled/extra-%05d-of-%05d   unlabeled records
  proc_settings.json             the options the records were written with
  dataset_info.json              {subset: number of records}, or (proc_folder.py)
                                 {"splits": {subset: number}, the task's description}

How a write is made safe to interrupt and cheap to repeat:
  - `begin_output` removes dataset_info.json and records the settings;
    `finish_output` writes dataset_info.json last, so its presence marks a
    complete output. A re-run with the same settings finds it
    (`complete_output_counts`) and skips; other settings rewrite.
  - Each shard file appears complete or not at all: `write_shards` writes
    every shard under a temporary name and renames it (and can keep the
    shards a killed run of the same settings finished); `write_streamed`
    renames a subset's shards only once all of them are complete.
  - Shards of another shard count are removed (`remove_stale_shards`):
    readers take every `{subset}-*` file.

`process` runs all of this for data held in memory (`Split` per subset);
`define_writer_flags` defines the command-line flags every proc script shares.
"""

import contextlib
import itertools
import json
import os
import re
import sys
import typing

import numpy as np
import tensorflow as tf
from absl import flags, logging

import atomic_files
import file_names
import progress_log
import task_info
import tfrecords

# The published preprocessing encoded JPEGs at quality 100.
DEFAULT_JPEG_QUALITY = 100
SETTINGS_FILE = task_info.SETTINGS_FILE
# The subset written as unlabeled records, under unlabeled/.
UNLABELED_SUBSET = "extra"
# Recorded in the settings file: data written when the unlabeled records held
# 0 in image/class/label is then rewritten by a re-run.
UNLABELED_LABELS = "true class + 1"
# What the proc scripts report as "proc_X.py: error: ..." instead of a traceback.
REPORTED_ERRORS = (ValueError, OSError, RuntimeError)


class Split(typing.NamedTuple):
    """Images of one output subset, held in memory.

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


class WriterOptions(typing.NamedTuple):
    """How a dataset held in memory is written (see `process`).

    Attributes:
      num_shards: {subset: number of files} overriding the task's counts in
        task_info; None (or a None value) keeps the task's count.
      overwrite: rewrite even if the complete output exists.
      jpeg_quality: JPEG quality 0..100 of the encoded images.
    """

    num_shards: dict | None = None
    overwrite: bool = False
    jpeg_quality: int = DEFAULT_JPEG_QUALITY


# ---------------------------------------------------------------------------
# Layout. Output-side file operations go through tf.io.gfile so that
# --output_dir may be a bucket path, as with the published scripts.


def shard_paths(output_dir, subset, num_shards):
    """All file paths of `subset` for `num_shards` shards (docs/method.md, "Record formats")."""
    if subset == UNLABELED_SUBSET:
        return [
            file_names.unlabeled_shard_path(output_dir, i, num_shards) for i in range(num_shards)
        ]
    return [
        file_names.labeled_shard_path(output_dir, subset, i, num_shards) for i in range(num_shards)
    ]


def shard_bounds(num_records, num_shards):
    """Record index bounds [num_shards + 1]: shard i holds records [bounds[i], bounds[i + 1]).

    The published writer's boundaries: linspace over the record count.
    """
    return np.linspace(0, num_records, num_shards + 1).astype(np.int64)


def num_shards_for(task_name, overrides):
    """Shard counts of `task_name` from task_info, with non-None `overrides` applied."""
    counts = dict(task_info.get_task_info(task_name).num_files)
    for subset, value in (overrides or {}).items():
        if value is not None:
            counts[subset] = int(value)
    return counts


def remove_stale_shards(output_dir, subset, num_shards):
    """Deletes shards of `subset` with another shard count and temp files of killed runs.

    Readers glob `{subset}-*`, so a leftover `train-00003-of-00128` next to a
    new `train-*-of-00008` set would be read as training data.
    """
    keep = set(shard_paths(output_dir, subset, num_shards))
    first = shard_paths(output_dir, subset, 1)[0]
    pattern = re.sub(r"\d{5}-of-\d{5}$", "[0-9]*-of-[0-9]*", os.path.basename(first))
    for path in tf.io.gfile.glob(
        os.path.join(file_names.glob_escape(os.path.dirname(first)), pattern)
    ):
        if path not in keep:
            logging.info("Removing stale file %s", path)
            tf.io.gfile.remove(path)


def _check_num_shards(subset, num_shards):
    if num_shards < 1:
        raise ValueError(f"num_shards for {subset} must be >= 1, got {num_shards}.")


# ---------------------------------------------------------------------------
# Completion: settings first, dataset_info.json last.


def _read_json_or_none(path):
    try:
        return atomic_files.read_json(path)
    except (OSError, ValueError, tf.errors.OpError):
        return None


def _as_json(value):
    # Round-trip through JSON so that tuples and lists compare equal.
    return json.loads(json.dumps(value))


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
    if not isinstance(info, dict) or set(task_info.split_counts(info)) != set(num_shards):
        return False
    recorded = _read_json_or_none(os.path.join(output_dir, SETTINGS_FILE))
    if recorded != _as_json(settings):
        if recorded is not None:
            logging.info("%s was written with settings %s; now %s.", output_dir, recorded, settings)
        return False
    return all(
        tf.io.gfile.exists(path)
        for subset, count in num_shards.items()
        for path in shard_paths(output_dir, subset, count)
    )


def complete_output_counts(output_dir, num_shards, settings, overwrite=False):
    """{subset: number of records} of a complete earlier output, or None if it must be written.

    Args:
      output_dir: the writer's output directory.
      num_shards: {subset: number of shards}.
      settings: JSON-able dict of the options that determine the content.
      overwrite: always write (return None).
    """
    if overwrite or not output_complete(output_dir, num_shards, settings):
        return None
    logging.info(
        "Complete output already in %s (%s present); skipping. Pass --overwrite to rewrite.",
        output_dir,
        task_info.DATASET_INFO_FILE,
    )
    info = atomic_files.read_json(os.path.join(output_dir, task_info.DATASET_INFO_FILE))
    return task_info.split_counts(info)


def begin_output(output_dir, settings):
    """Marks `output_dir` incomplete and records `settings` before any shard is written.

    Returns:
      Whether the settings were already recorded there, i.e. whether shards
      left by a killed run belong to this output and may be kept
      (`write_shards(..., keep_finished=True)`).
    """
    tf.io.gfile.makedirs(output_dir)
    info_path = os.path.join(output_dir, task_info.DATASET_INFO_FILE)
    if tf.io.gfile.exists(info_path):
        tf.io.gfile.remove(info_path)
    settings_path = os.path.join(output_dir, SETTINGS_FILE)
    same_settings = _read_json_or_none(settings_path) == _as_json(settings)
    atomic_files.write_json(settings_path, settings)
    return same_settings


def finish_output(output_dir, dataset_info):
    """Writes dataset_info.json, the mark of a complete output."""
    atomic_files.write_json(os.path.join(output_dir, task_info.DATASET_INFO_FILE), dataset_info)
    logging.info("Wrote %s to %s", dataset_info, output_dir)


# ---------------------------------------------------------------------------
# Shards.


def write_shards(output_dir, subset, num_shards, shard_records, progress=None, keep_finished=False):
    """Writes `subset` as `num_shards` TFRecord files, each one atomically.

    Args:
      output_dir: output directory.
      subset: file prefix; `extra` goes to `unlabeled/`.
      num_shards: number of files.
      shard_records: callable(shard index) -> iterable of serialized records;
        only called for the shards that are written.
      progress: optional `progress_log.Progress`, advanced by the records of each shard.
      keep_finished: keep shard files that already exist (written by a killed
        run with the same settings, see `begin_output`) instead of rewriting.

    Returns:
      The number of records in the subset's files.
    """
    _check_num_shards(subset, num_shards)
    remove_stale_shards(output_dir, subset, num_shards)
    total = 0
    for shard, path in enumerate(shard_paths(output_dir, subset, num_shards)):
        if keep_finished and tf.io.gfile.exists(path):
            count = tfrecords.count_records(path)
            logging.info("%s is complete; keeping it.", path)
        else:
            count = tfrecords.write_tfrecord(path, shard_records(shard))
        total += count
        if progress is not None:
            progress.update(count)
    return total


def write_streamed(records, output_dir, subset, num_shards, num_records):
    """Writes `num_records` serialized records from an iterator as `subset`'s shards, in order.

    Shard i gets records [bounds[i], bounds[i + 1]) of `shard_bounds`. Every
    shard is written under a temporary name first; only when all are
    complete do they replace the subset's files (and shards of another shard
    count are removed), so an error while reading the source changes no
    output file.

    Returns:
      The number of records written.

    Raises:
      RuntimeError: the source ended early. Errors of the source pass through.
    """
    _check_num_shards(subset, num_shards)
    bounds = shard_bounds(num_records, num_shards)
    progress = progress_log.Progress(num_records, "images", prefix="written ")
    total = 0
    pending = []  # (temporary path, final path) of complete shards
    try:
        for path, start, end in zip(
            shard_paths(output_dir, subset, num_shards), bounds[:-1], bounds[1:], strict=True
        ):
            tmp = atomic_files.tmp_path(path)
            tf.io.gfile.makedirs(os.path.dirname(path))
            pending.append((tmp, path))
            count = 0
            with tf.io.TFRecordWriter(tmp) as writer:
                for record in itertools.islice(records, int(end - start)):
                    writer.write(record)
                    count += 1
            if count != end - start:
                raise RuntimeError(
                    f"{path}: expected {end - start} records, the source ended at {total + count}."
                )
            total += count
            progress.update(count)
        for tmp, path in pending:
            tf.io.gfile.rename(tmp, path, overwrite=True)
        pending = []
        remove_stale_shards(output_dir, subset, num_shards)
    finally:
        for tmp, _ in pending:
            if tf.io.gfile.exists(tmp):
                tf.io.gfile.remove(tmp)
    progress.update(0, force=True)
    return total


# ---------------------------------------------------------------------------
# Datasets held in memory.


def _serialized_records(images, labels, subset, num_classes, jpeg_quality):
    for image, label in zip(images, labels, strict=True):
        jpeg = tfrecords.encode_jpeg(image, quality=jpeg_quality)
        if subset == UNLABELED_SUBSET:
            example = tfrecords.unlabeled_example(jpeg, num_classes, int(label))
        else:
            example = tfrecords.labeled_example(jpeg, label)
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
      progress: optional `progress_log.Progress`, advanced by the images written.

    Returns:
      The number of records written.
    """
    _check_num_shards(subset, num_shards)
    order = np.asarray(split.order, np.int64)
    if num_shards > len(order):
        logging.warning(
            "%s: %d shards for %d images; some shards are empty.", subset, num_shards, len(order)
        )
    bounds = shard_bounds(len(order), num_shards)

    def shard_records(shard):
        index = order[bounds[shard] : bounds[shard + 1]]
        # Gather one shard at a time: the whole subset in write order would be
        # a second copy of up to 1.6 GB (SVHN extra).
        images = np.ascontiguousarray(split.images[index])
        labels = np.asarray(split.labels)[index]
        return _serialized_records(images, labels, subset, num_classes, jpeg_quality)

    return write_shards(output_dir, subset, num_shards, shard_records, progress)


def write_dataset(
    output_dir, splits, num_shards, num_classes, settings, jpeg_quality=DEFAULT_JPEG_QUALITY
):
    """Writes all subsets between `begin_output` and `finish_output`.

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
    begin_output(output_dir, settings)
    total = sum(len(split.order) for split in splits.values())
    progress = progress_log.Progress(total, name="images", prefix="written ")
    counts = {}
    for subset, split in splits.items():
        logging.info(
            "Writing %s: %d images in %d shards.", subset, len(split.order), num_shards[subset]
        )
        counts[subset] = write_split(
            output_dir, subset, split, num_shards[subset], num_classes, jpeg_quality, progress
        )
    progress.update(0, force=True)
    finish_output(output_dir, counts)
    return counts


def process(output_dir, make_splits, task_name, settings, writer=WriterOptions()):
    """Skips when the complete output exists, else loads the data and writes it.

    Args:
      output_dir: output directory.
      make_splits: callable returning {subset: Split}; only called when writing.
      task_name: task whose shard counts (task_info) and classes apply.
      settings: JSON-able options that determine the content; a re-run with
        other settings rewrites.
      writer: `WriterOptions`.

    Returns:
      {subset: number of images}, read back from dataset_info.json if skipped.
    """
    num_shards = num_shards_for(task_name, writer.num_shards)
    settings = dict(
        settings,
        num_shards=num_shards,
        jpeg_quality=writer.jpeg_quality,
        unlabeled_labels=UNLABELED_LABELS,
    )
    counts = complete_output_counts(output_dir, num_shards, settings, writer.overwrite)
    if counts is not None:
        return counts
    num_classes = task_info.get_task_info(task_name).num_classes
    return write_dataset(
        output_dir, make_splits(), num_shards, num_classes, settings, writer.jpeg_quality
    )


# ---------------------------------------------------------------------------
# Sources.


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


# ---------------------------------------------------------------------------
# Command line.


def define_writer_flags(num_shards_defaults, default_output_dir=None, jpeg_quality_flag=True):
    """Defines the flags every proc script shares; call `flags.adopt_module_key_flags` after.

    Flags: --output_dir (required when `default_output_dir` is None),
    --num_{name}_shards for each name, --jpeg_quality (if
    `jpeg_quality_flag`) and --overwrite.

    Args:
      num_shards_defaults: {name: default number of files}; a None default
        means "the task's count in task_info".
      default_output_dir: default of --output_dir.
      jpeg_quality_flag: define --jpeg_quality (scripts that encode images).
    """
    flags.DEFINE_string(
        "output_dir", default_output_dir, "Where the TFRecords and dataset_info.json are written."
    )
    if default_output_dir is None:
        flags.mark_flag_as_required("output_dir")
    for name, default in num_shards_defaults.items():
        where = "; default from task_info" if default is None else ""
        flags.DEFINE_integer(f"num_{name}_shards", default, f"Number of {name} files{where}.")
    if jpeg_quality_flag:
        flags.DEFINE_integer("jpeg_quality", DEFAULT_JPEG_QUALITY, "JPEG quality (0-100).")
    flags.DEFINE_bool("overwrite", False, "Rewrite even if the complete output already exists.")


def num_shards_from_flags(flag_values, names):
    """{name: value of --num_{name}_shards} for `names`."""
    return {name: getattr(flag_values, f"num_{name}_shards") for name in names}


def writer_options_from_flags(flag_values, subsets):
    """`WriterOptions` from the flags of `define_writer_flags` for `subsets`."""
    return WriterOptions(
        num_shards_from_flags(flag_values, subsets), flag_values.overwrite, flag_values.jpeg_quality
    )


def settings_from_flags(settings_type, flag_values):
    """A NamedTuple of `settings_type` whose fields take the values of the flags of their names."""
    return settings_type(**{name: getattr(flag_values, name) for name in settings_type._fields})


@contextlib.contextmanager
def exit_on_errors(script_name, errors=REPORTED_ERRORS):
    """Turns `errors` into `{script_name}: error: {message}` and exit status 1.

    The loaders and writers name the file in their messages; a traceback
    would only bury it.
    """
    try:
        yield
    except errors as e:
        logging.error("%s", e)
        sys.exit(f"{script_name}: error: {e}")
