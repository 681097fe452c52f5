"""Training length in epochs of the data a run learns from (main.py --train_epochs).

A teacher's length is counted in epochs of its labeled images and a
student's in epochs of its unlabeled (pseudo-labeled) images, so one recipe
gives a 500-image and a 50,000-image dataset the same number of passes over
what each model learns most from, instead of one fixed number of steps that
starves the large one or overfits the small one.
"""

import json
import math
import os

from absl import logging

import data_input
import file_names
import task_info
import tfrecords


def steps_for_epochs(epochs, num_images, images_per_step):
    """Training steps that pass `epochs` times over `num_images` images.

    Args:
      epochs: passes over the images (> 0; fractions allowed).
      num_images: images in the data counted (> 0).
      images_per_step: images of that data in one global batch (> 0).

    Returns:
      ceil(epochs * num_images / images_per_step), at least 1.

    Raises:
      ValueError: a non-positive argument, naming it.
    """
    for name, value in (
        ("epochs", epochs),
        ("num_images", num_images),
        ("images_per_step", images_per_step),
    ):
        if not value > 0:
            raise ValueError(f"{name} must be positive, got {value}.")
    # round() first, so 3 epochs of 1,000 images at 64 per step is not one step
    # more than 3 * 1000 / 64 through a float error.
    return max(1, math.ceil(round(epochs * num_images / images_per_step, 6)))


def _filter_output_count(data_dir):
    """Images a filter output directory holds (its final stats), or None if it is not one.

    filter_unlabel_data.py writes <out>/data/ (the records), <out>/threshold.json
    and, once every shard is done, <out>/stats/final_stats.json ("total_cnt").
    """
    out_dir = os.path.dirname(os.path.normpath(data_dir))
    if not os.path.exists(file_names.threshold_path(out_dir)):
        return None
    path = file_names.final_stats_path(out_dir)
    try:
        with open(path) as f:
            return int(json.load(f)["total_cnt"])
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise ValueError(
            f"--unlabel_data_dir={data_dir} is filter output, but {path} does not give its "
            f"image count ({e}): finish the filter's pass 2, or pass --train_steps "
            "instead of --train_epochs."
        ) from e


def _recorded_count(data_dir):
    """Unlabeled images recorded in the dataset_info.json of a proc_* data folder, or None."""
    path = task_info.find_dataset_info(data_dir)
    if path is None:
        return None
    counts = task_info.read_dataset_info(os.path.dirname(path))
    files = data_input.list_files(data_dir, "extra")
    if "extra" in counts and files:
        return int(counts["extra"])
    return None


def num_unlabeled_images(unlabel_data_dir):
    """Images in one or more unlabeled directories (';'-separated, as --unlabel_data_dir).

    Each directory's count comes from the filter's final stats when it is a
    filter output, from its dataset's dataset_info.json when a data writer
    recorded it, and otherwise from reading its records once.

    Raises:
      ValueError: a filter output whose pass 2 has not finished.
      FileNotFoundError: a directory without unlabeled records.
    """
    total = 0
    for data_dir in [d for d in unlabel_data_dir.split(";") if d]:
        count = _filter_output_count(data_dir)
        if count is None:
            count = _recorded_count(data_dir)
        if count is None:
            files = data_input.unlabeled_files([data_dir])
            logging.info("Counting the records of %d files in %s.", len(files), data_dir)
            count = sum(tfrecords.count_records(f) for f in files)
        total += count
    return total


def train_steps_for_epochs(
    epochs,
    *,
    num_train_images,
    train_batch_size,
    unlabel_ratio=0,
    unlabel_data_dir="",
    label_data_sample_prob=1.0,
):
    """Steps of a run of `epochs`: of the labeled images, or of the unlabeled ones for a student.

    Args:
      epochs: passes over the data the run learns from.
      num_train_images: labeled training images.
      train_batch_size: global labeled batch size.
      unlabel_ratio: unlabeled images per labeled one in a batch; > 0 makes
        the run a student, whose epochs count its unlabeled images.
      unlabel_data_dir: the student's unlabeled directories.
      label_data_sample_prob: the share of the labeled batch that counts
        (published); the unlabeled batch scales with it.

    Returns:
      (train_steps, description): the steps and what they are, for the log.
    """
    if unlabel_ratio > 0:
        num_images = num_unlabeled_images(unlabel_data_dir)
        per_step = data_input.unlabeled_batch_size(
            train_batch_size, unlabel_ratio, label_data_sample_prob
        )
        what = "unlabeled"
    else:
        num_images, per_step, what = num_train_images, train_batch_size, "labeled"
    steps = steps_for_epochs(epochs, num_images, per_step)
    return steps, f"{epochs:g} epochs of {num_images} {what} images at {per_step:g} per step"
