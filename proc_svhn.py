"""Writes SVHN as sharded TFRecords of JPEG images (docs/method.md, "Record formats").

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

The records are written by dataset_writer.py, as for the other proc scripts.

Usage:
  python proc_svhn.py --output_dir=data/svhn/proc                  # via TFDS
  python proc_svhn.py --source=mat --raw_data_dir=data/svhn/raw \\
      --output_dir=data/svhn/proc
"""

import os
import typing

import numpy as np
from absl import app, flags, logging

import dataset_writer
import task_info
from dataset_writer import Split

TASK_NAME = "svhn"
SUBSETS = tuple(task_info.get_task_info(TASK_NAME).num_files)

SVHN_MAT_SPLITS = ("train", "test", "extra")
SVHN_NUM_DEV = 4000
SVHN_URL = "http://ufldl.stanford.edu/housenumbers/"


class SvhnSettings(typing.NamedTuple):
    """The options that determine the written data, recorded in proc_settings.json.

    The fields are named as the flags that set them.

    Attributes:
      source: "tfds" (TFDS svhn_cropped) or "mat" (original .mat files).
      num_dev: dev images held out of train.
      full_train_data: all training images in train; dev = test.
      seed: shuffle seed.
      task_name: task whose shard counts and classes apply (svhn).
    """

    source: str = "tfds"
    num_dev: int = SVHN_NUM_DEV
    full_train_data: bool = False
    seed: int = 0
    task_name: str = TASK_NAME


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
        arrays = dataset_writer.load_tfds_split("svhn_cropped", split, tfds_data_dir)
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


def process_svhn(output_dir, settings, writer, raw_data_dir=None, tfds_data_dir=None):
    """Loads SVHN from `settings.source` and writes it to `output_dir` (see module doc).

    Args:
      output_dir: output directory.
      settings: `SvhnSettings`, recorded next to the data.
      writer: `dataset_writer.WriterOptions`.
      raw_data_dir: folder of the .mat files (source "mat").
      tfds_data_dir: TFDS data_dir (source "tfds"); None for TFDS' default.

    Returns:
      {subset: number of images}.
    """
    if settings.source not in ("tfds", "mat"):
        raise ValueError(f"source must be 'tfds' or 'mat', got {settings.source!r}.")

    def make_splits():
        if settings.source == "mat":
            data = load_svhn_mat(raw_data_dir)
        else:
            data = load_svhn_tfds(tfds_data_dir)
        return make_svhn_splits(data, settings.num_dev, settings.full_train_data, settings.seed)

    return dataset_writer.process(
        output_dir, make_splits, settings.task_name, settings._asdict(), writer
    )


# ---------------------------------------------------------------------------
# Command line.


def define_flags():
    """Defines the command-line flags (only when run as a script, so importing is side-effect free)."""
    dataset_writer.define_writer_flags(dict.fromkeys(SUBSETS))
    flags.adopt_module_key_flags(dataset_writer)
    flags.DEFINE_string(
        "task_name", TASK_NAME, "Task whose shard counts and class count apply; only svhn."
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
    flags.DEFINE_bool(
        "full_train_data",
        False,
        "Put all 73,257 training images in train; dev is then a copy of test.",
    )
    flags.DEFINE_integer("num_dev", SVHN_NUM_DEV, "Training images held out as dev.")
    flags.DEFINE_integer("seed", 0, "Seed of the train/dev split and of all shuffles.")


def main(argv):
    """Writes SVHN as the flags say; a bad input exits with status 1 and a message naming it."""
    del argv
    fl = flags.FLAGS
    if fl.task_name != TASK_NAME:
        raise app.UsageError(f"proc_svhn.py only writes svhn, got --task_name={fl.task_name}.")
    settings = dataset_writer.settings_from_flags(SvhnSettings, fl)
    writer = dataset_writer.writer_options_from_flags(fl, SUBSETS)
    with dataset_writer.exit_on_errors("proc_svhn.py"):
        process_svhn(fl.output_dir, settings, writer, fl.raw_data_dir, fl.tfds_data_dir)


if __name__ == "__main__":
    define_flags()
    app.run(main)
