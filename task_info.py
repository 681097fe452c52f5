"""Per-task facts: classes, normalization, image size and split sizes.

This is the one table every other module reads. A new task is one more entry
in `TASKS`.
"""

import dataclasses
import json
import os

_IMAGENET_MEAN = (0.485 * 255, 0.456 * 255, 0.406 * 255)
_IMAGENET_STD = (0.229 * 255, 0.224 * 255, 0.225 * 255)
_SVHN_MEAN = (0.4376821 * 255, 0.4437697 * 255, 0.47280442 * 255)
_SVHN_STD = (0.19803012 * 255, 0.20101562 * 255, 0.19703614 * 255)
# MNIST digits padded from 28x28 to 32x32 with zeros: the 28x28 statistics
# (mean 0.1307, std 0.3081) diluted by the 240 zero pixels per image.
_MNIST_MEAN = (0.1001 * 255,) * 3
_MNIST_STD = (0.2752 * 255,) * 3

DATASET_INFO_FILE = "dataset_info.json"


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


def get_task_info(task_name):
    """Returns the TaskInfo of `task_name`.

    Raises:
      ValueError: for an unknown task, listing the known ones.
    """
    if task_name not in TASKS:
        raise ValueError(f"Unknown task_name {task_name!r}; expected one of {sorted(TASKS)}.")
    return TASKS[task_name]


def read_dataset_info(data_dir):
    """Returns the {subset: num_images} a data writer recorded in `data_dir`, or {}."""
    path = os.path.join(data_dir, DATASET_INFO_FILE)
    if not data_dir or not os.path.exists(path):
        return {}
    with open(path) as f:
        return json.load(f)


def num_images(task_name, subset, data_dir=None):
    """Number of images of `subset`: as recorded next to the data, else the task table."""
    recorded = read_dataset_info(data_dir) if data_dir else {}
    if subset in recorded:
        return int(recorded[subset])
    sizes = get_task_info(task_name).split_sizes
    if subset not in sizes:
        raise ValueError(
            f"No image count for subset {subset!r} of task {task_name!r}: pass it by flag "
            f"or write {DATASET_INFO_FILE} next to the data."
        )
    return sizes[subset]
