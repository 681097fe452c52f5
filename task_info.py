"""Per-task facts: classes, normalization, image size and split sizes.

This is the one table every other module reads. A built-in task is one entry
in `TASKS`; any other task name is described by the `dataset_info.json` that
proc_folder.py writes next to its data (`get_task_info(name, data_dir)`).
"""

import dataclasses
import json
import os
import re

_IMAGENET_MEAN = (0.485 * 255, 0.456 * 255, 0.406 * 255)
_IMAGENET_STD = (0.229 * 255, 0.224 * 255, 0.225 * 255)
_SVHN_MEAN = (0.4376821 * 255, 0.4437697 * 255, 0.47280442 * 255)
_SVHN_STD = (0.19803012 * 255, 0.20101562 * 255, 0.19703614 * 255)
# MNIST digits padded from 28x28 to 32x32 with zeros: the 28x28 statistics
# (mean 0.1307, std 0.3081) diluted by the 240 zero pixels per image.
_MNIST_MEAN = (0.1001 * 255,) * 3
_MNIST_STD = (0.2752 * 255,) * 3

DATASET_INFO_FILE = "dataset_info.json"
# Next to dataset_info.json: the options the data was written with, so that a
# re-run with other options rewrites instead of skipping (dataset_writer).
SETTINGS_FILE = "proc_settings.json"
# The small-image (32x32) network is chosen for data whose median image side
# is at most this many pixels (as for SVHN and MNIST).
SMALL_IMAGE_MAX_SIDE = 64
SMALL_IMAGE_SIZE = 32
# The labeled subsets evaluated when the data has them, in this order.
EVAL_SUBSETS = ("dev", "test")
# Subset names a dataset_info.json may use (file prefixes).
_SUBSET_NAME = re.compile(r"[A-Za-z0-9_-]+")
# Tasks read from a dataset_info.json in this process, by name.
_FROM_DATA = {}


@dataclasses.dataclass(frozen=True)
class TaskInfo:
    """What a task fixes about data and model.

    Attributes:
      name: task name as passed to `--task_name`.
      num_classes: number of label classes.
      mean_rgb: per-channel mean of 0..255 pixels, subtracted before the model.
      stddev_rgb: per-channel std of 0..255 pixels, divided before the model.
      image_size: input resolution, or None to take it from the model table.
      small_image_model: whether the 32x32 network variant is used.
      random_flip: whether training images are flipped left-right.
      train_subset: file prefix of the labeled training split.
      eval_subsets: file prefixes evaluated by `--mode=eval`.
      split_sizes: number of images per file prefix.
      num_files: number of TFRecord shards per file prefix when written here.
    """

    name: str
    num_classes: int
    mean_rgb: tuple
    stddev_rgb: tuple
    image_size: int | None
    small_image_model: bool
    random_flip: bool
    train_subset: str
    eval_subsets: tuple
    split_sizes: dict
    num_files: dict


TASKS = {
    "imagenet": TaskInfo(
        name="imagenet",
        num_classes=1000,
        mean_rgb=_IMAGENET_MEAN,
        stddev_rgb=_IMAGENET_STD,
        image_size=None,
        small_image_model=False,
        random_flip=True,
        train_subset="train",
        eval_subsets=("validation",),
        split_sizes={"train": 1281167, "validation": 50000},
        num_files={"train": 1024, "validation": 128},
    ),
    "svhn": TaskInfo(
        name="svhn",
        num_classes=10,
        mean_rgb=_SVHN_MEAN,
        stddev_rgb=_SVHN_STD,
        image_size=32,
        small_image_model=True,
        random_flip=False,
        train_subset="train",
        eval_subsets=("dev", "test"),
        split_sizes={"train": 69257, "dev": 4000, "test": 26032, "extra": 531131},
        num_files={"train": 128, "dev": 64, "test": 64, "extra": 128},
    ),
    "mnist": TaskInfo(
        name="mnist",
        num_classes=10,
        mean_rgb=_MNIST_MEAN,
        stddev_rgb=_MNIST_STD,
        image_size=32,
        small_image_model=True,
        random_flip=False,
        train_subset="train",
        eval_subsets=("dev", "test"),
        # train is --labeled_per_class x 10 (default 100); the rest of the
        # 55,000 non-dev training images are unlabeled.
        split_sizes={"train": 1000, "dev": 5000, "test": 10000, "extra": 54000},
        # 4 unlabeled files: enough to show sharded prediction and filtering
        # without paying a process start per tiny shard on a CPU.
        num_files={"train": 8, "dev": 8, "test": 8, "extra": 4},
    ),
}


def get_task_info(task_name, data_dir=None):
    """Returns the TaskInfo of `task_name`.

    A built-in task (`TASKS`) keeps its published values. Any other name is
    described by the dataset_info.json of `data_dir` (see
    `task_from_dataset_info`) and remembered, so that later lookups by name in
    the same process (model building, checkpoints) find it without the folder.

    Args:
      task_name: `--task_name`.
      data_dir: a folder holding dataset_info.json, or its `unlabeled/`
        sub-folder; only read for a task that is not built in.

    Raises:
      ValueError: for an unknown task without a described dataset, or a
        dataset_info.json that lacks the task's description.
    """
    if task_name in TASKS:
        return TASKS[task_name]
    if data_dir:
        path = find_dataset_info(data_dir)
        if path is None:
            raise ValueError(
                f"task_name {task_name!r} is not built in ({sorted(TASKS)}) and {data_dir} "
                f"holds no {DATASET_INFO_FILE}: write the data with proc_folder.py."
            )
        _FROM_DATA[task_name] = task_from_dataset_info(task_name, _read_json(path), path)
    if task_name not in _FROM_DATA:
        raise ValueError(
            f"Unknown task_name {task_name!r}; expected one of {sorted(TASKS)}, or a data "
            f"folder with the {DATASET_INFO_FILE} of proc_folder.py (--label_data_dir)."
        )
    return _FROM_DATA[task_name]


def is_small_image(median_size):
    """Whether images of median [height, width] `median_size` use the 32x32 network."""
    return max(median_size) <= SMALL_IMAGE_MAX_SIDE


def task_from_dataset_info(task_name, info, source=DATASET_INFO_FILE):
    """The TaskInfo described by a dataset_info.json of proc_folder.py.

    Args:
      task_name: the task's name.
      info: the parsed file: splits, num_classes, mean_rgb, stddev_rgb,
        median_size (and optionally random_flip, num_files).
      source: the file's path, for messages.

    Raises:
      ValueError: when a key is missing (e.g. the file of proc_mnist.py, which
        only counts images: use its built-in task name), a value is not of its
        kind (counts: whole numbers; subset names: letters, digits, '_', '-'),
        num_classes is 1, or class_names does not list num_classes names.
    """
    if not isinstance(info, dict):
        raise ValueError(f"{source} holds {type(info).__name__}: expected a JSON object.")
    needed = ("splits", "num_classes", "mean_rgb", "stddev_rgb", "median_size")
    missing = [key for key in needed if key not in info]
    if missing:
        raise ValueError(
            f"{source} lacks {missing}: it does not describe a task (written by an older "
            "proc script?). Rewrite the data with proc_folder.py, or use a built-in task_name."
        )
    num_classes = _whole(info["num_classes"], "num_classes", source, minimum=1)
    if num_classes == 1:
        raise ValueError(
            f"{source}: num_classes is 1: a classifier needs at least 2 classes (one class "
            "folder per class under the labeled folder)."
        )
    class_names = info.get("class_names")
    if class_names is not None and (
        not isinstance(class_names, list) or len(class_names) != num_classes
    ):
        raise ValueError(
            f"{source}: num_classes is {num_classes} but class_names lists "
            f"{len(class_names) if isinstance(class_names, list) else class_names!r}: "
            "the file was edited or damaged; rewrite the data with proc_folder.py."
        )
    median_size = _numbers(info["median_size"], "median_size", source, 2)
    small = is_small_image(median_size)
    splits = _counts(info["splits"], "splits", source, minimum=0)
    num_files = _counts(info.get("num_files", {}), "num_files", source, minimum=1)
    if not isinstance(info.get("random_flip", True), bool):
        raise ValueError(
            f"{source}: random_flip is {info['random_flip']!r}: expected true or false."
        )
    return TaskInfo(
        name=task_name,
        num_classes=num_classes,
        mean_rgb=_numbers(info["mean_rgb"], "mean_rgb", source, 3),
        stddev_rgb=_numbers(info["stddev_rgb"], "stddev_rgb", source, 3),
        # Large images: the model's own resolution (as for imagenet).
        image_size=SMALL_IMAGE_SIZE if small else None,
        small_image_model=small,
        random_flip=info.get("random_flip", True),
        train_subset="train",
        eval_subsets=tuple(s for s in EVAL_SUBSETS if splits.get(s)),
        split_sizes=splits,
        num_files=num_files,
    )


# The file is data, not code: every value is checked to be what the readers
# (Python, and the shell through shell_settings) expect before anyone uses it.
def _whole(value, key, source, minimum):
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{source}: {key} is {value!r}: expected a whole number >= {minimum}.")
    return value


def _counts(value, key, source, minimum):
    if not isinstance(value, dict):
        raise ValueError(f"{source}: {key} is {value!r}: expected {{subset: count}}.")
    for name in value:
        if not _SUBSET_NAME.fullmatch(name):
            raise ValueError(
                f"{source}: {key} has the subset name {name!r}: expected letters, digits, "
                "'_' or '-'."
            )
    return {name: _whole(v, f"{key}[{name!r}]", source, minimum) for name, v in value.items()}


def _numbers(value, key, source, length):
    if (
        not isinstance(value, list)
        or len(value) != length
        or not all(isinstance(v, int | float) and not isinstance(v, bool) for v in value)
    ):
        raise ValueError(f"{source}: {key} is {value!r}: expected a list of {length} numbers.")
    return tuple(float(v) for v in value)


def find_dataset_info(data_dir):
    """Path of the dataset_info.json describing `data_dir`, or None.

    The unlabeled records of a dataset are in its `unlabeled/` folder
    (docs/method.md, "Record formats"), so a run given only that folder
    (prediction) finds the description one level up.
    """
    for folder in (data_dir, os.path.dirname(os.path.normpath(data_dir))):
        path = os.path.join(folder, DATASET_INFO_FILE)
        if folder and os.path.exists(path):
            return path
    return None


def _read_json(path):
    with open(path) as f:
        try:
            return json.load(f)
        except json.JSONDecodeError as e:
            raise ValueError(f"{path} is not valid JSON: {e}") from e


def split_counts(info):
    """{subset: num_images} of a parsed dataset_info.json.

    proc_folder.py nests them under "splits" next to the task's description;
    the files of proc_mnist.py, proc_svhn.py and proc_imagenet.py are the
    counts alone.
    """
    if isinstance(info, dict) and isinstance(info.get("splits"), dict):
        return info["splits"]
    return info


def read_dataset_info(data_dir):
    """Returns the {subset: num_images} a data writer recorded in `data_dir`, or {}."""
    path = os.path.join(data_dir, DATASET_INFO_FILE)
    if not data_dir or not os.path.exists(path):
        return {}
    return split_counts(_read_json(path))


def num_images(task_name, subset, data_dir=None):
    """Number of images of `subset`: as recorded next to the data, else the task table."""
    recorded = read_dataset_info(data_dir) if data_dir else {}
    if subset in recorded:
        return int(recorded[subset])
    sizes = get_task_info(task_name, data_dir).split_sizes
    if subset not in sizes:
        raise ValueError(
            f"No image count for subset {subset!r} of task {task_name!r}: pass it by flag "
            f"or write {DATASET_INFO_FILE} next to the data."
        )
    return sizes[subset]


def shell_settings(data_dir):
    """`NAME=value` lines of the loop settings that follow from a dataset_info.json.

    local_scripts/custom/defaults.sh reads them (never as code: every value
    is a whole number or a comma list of known subset names, checked here and
    again by the shell), so the shell scripts take the small-image choice and
    the counts from this module.

    Returns:
      Lines setting DATA_NUM_CLASSES, DATA_SMALL_IMAGE (1 or 0),
      DATA_NUM_UNLABELED, DATA_UNLABELED_SHARDS, DATA_EVAL_SUBSETS
      (train and the evaluated subsets, comma-separated) and
      DATA_NUM_IMAGE (unlabeled images per class: the default number kept per
      class after balancing).
    """
    path = find_dataset_info(data_dir)
    if path is None:
        raise ValueError(f"{data_dir} holds no {DATASET_INFO_FILE}: write it with prepro.sh.")
    info = _read_json(path)
    task = task_from_dataset_info("custom", info, path)
    num_unlabeled = task.split_sizes.get("extra", 0)
    values = {
        "DATA_NUM_CLASSES": task.num_classes,
        "DATA_SMALL_IMAGE": int(task.small_image_model),
        "DATA_NUM_UNLABELED": num_unlabeled,
        "DATA_UNLABELED_SHARDS": task.num_files.get("extra", 1),
        "DATA_EVAL_SUBSETS": ",".join((task.train_subset, *task.eval_subsets)),
        "DATA_NUM_IMAGE": max(1, num_unlabeled // task.num_classes),
    }
    return "\n".join(f"{key}={value}" for key, value in values.items())


if __name__ == "__main__":
    import sys

    # `python task_info.py DATA_DIR`: the shell settings of a custom dataset.
    try:
        print(shell_settings(sys.argv[1]))
    except (IndexError, ValueError, OSError) as e:
        sys.exit(f"task_info.py: error: {e}")
