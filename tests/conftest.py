"""Shared fixtures: tiny generated datasets in the layout of docs/method.md, "Record formats"."""

import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

# Memory one pytest worker may take at its peak: a test's own TensorFlow plus
# the TensorFlow of the entry point it starts.
GIB_PER_WORKER = 3
MAX_WORKERS = 8


# The files that take longest, longest first (serial seconds on 2 cores:
# 340 down to 100). They start first, so that no worker is left running one
# of them alone at the end while the others idle.
LONGEST_FILES = [
    "test_fail_loudly.py",
    "test_pipeline.py",
    "test_notebook.py",
    "test_mixed_precision.py",
    "test_multiworker.py",
    "test_mnist_demo.py",
    "test_train.py",
    "test_semisup_report.py",
    "test_xla.py",
    "test_beam_pseudo_label.py",
    "test_preemption.py",
    "test_efficientnet.py",
]


def pytest_collection_modifyitems(items):
    """Runs LONGEST_FILES first, in that order; the rest keep theirs."""
    rank = {name: i for i, name in enumerate(LONGEST_FILES)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))


def pytest_xdist_auto_num_workers(config):
    """Workers for `-n auto`: one per usable core, as many as memory holds, at most 8.

    The suite is CPU-bound (its subprocesses' start-up, tracing and tiny
    training steps): on 2 cores a third worker ran it no sooner (1,126 s
    against 1,097 s), and more workers start more TensorFlow processes than
    the memory serves.
    """
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    cores = cores or 1
    available = GIB_PER_WORKER * 2**30 * cores
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    available = int(line.split()[1]) * 1024
    except OSError:
        pass
    by_memory = int(available // (GIB_PER_WORKER * 2**30))
    return max(1, min(cores, by_memory, MAX_WORKERS))


NUM_CLASSES = 10
IMAGE_SIZE = 32

# A tiny EfficientNet for tests: a few thousand parameters, 32x32 inputs.
TINY_OVERRIDES = {"width_coefficient": 0.1, "depth_coefficient": 0.1}
# main.py --mode=train of the tiny network on CPU, for tests that run the entry point.
TINY_TRAIN_FLAGS = [
    "--mode=train",
    "--use_tpu=False",
    "--use_bfloat16=False",
    "--task_name=mnist",
    *(f"--{key}={value}" for key, value in TINY_OVERRIDES.items()),
    "--seed=0",
]


def class_image(label, rng, size=IMAGE_SIZE):
    """A 32x32 RGB image whose class is visible: a bright bar at a class-dependent place."""
    image = rng.integers(0, 60, size=(size, size, 3)).astype(np.uint8)
    band = size // NUM_CLASSES + 1
    start = (label * size) // NUM_CLASSES
    if label % 2:
        image[start : start + band, :, :] = 230
    else:
        image[:, start : start + band, :] = 230
    image[..., label % 3] //= 2
    return image


def _write_class_images(shard_path, make_example, num_images, num_files, rng):
    """Writes `num_images` class images (labels cycling through the classes, shuffled)."""
    import tfrecords

    labels = np.arange(num_images) % NUM_CLASSES
    rng.shuffle(labels)
    examples = [
        make_example(tfrecords.encode_jpeg(class_image(int(lab), rng)), int(lab)) for lab in labels
    ]
    for shard in range(num_files):
        tfrecords.write_tfrecord(
            shard_path(shard, num_files),
            (e.SerializeToString() for e in examples[shard::num_files]),
        )
    return labels


def write_labeled_subset(data_dir, subset, num_images, num_files, rng):
    import file_names
    import tfrecords

    return _write_class_images(
        lambda shard, n: file_names.labeled_shard_path(data_dir, subset, shard, n),
        tfrecords.labeled_example,
        num_images,
        num_files,
        rng,
    )


def write_unlabeled(data_dir, num_images, num_files, rng, prefix="extra"):
    import file_names
    import tfrecords

    return _write_class_images(
        lambda shard, n: file_names.unlabeled_shard_path(data_dir, shard, n, prefix),
        lambda image, _label: tfrecords.unlabeled_example(image, NUM_CLASSES),
        num_images,
        num_files,
        rng,
    )


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory):
    """A 10-class, 32x32 dataset: train 200, dev 23, test 30, unlabeled 64 (2 files)."""
    import atomic_files

    data_dir = str(tmp_path_factory.mktemp("tiny_data"))
    rng = np.random.default_rng(0)
    counts = {"train": 200, "dev": 23, "test": 30}
    for subset, n in counts.items():
        write_labeled_subset(data_dir, subset, n, 2, rng)
    write_unlabeled(data_dir, 64, 2, rng)
    counts["extra"] = 64
    atomic_files.write_json(os.path.join(data_dir, "dataset_info.json"), counts)
    return data_dir


def tiny_config(model_dir, data_dir, **kwargs):
    """A TrainConfig for a tiny 32x32 EfficientNet on `tiny_data`."""
    import train_lib

    values = dict(
        model_dir=str(model_dir),
        label_data_dir=data_dir,
        task_name="mnist",
        num_label_classes=NUM_CLASSES,
        input_image_size=32,
        small_image_model=True,
        override_params=dict(TINY_OVERRIDES),
        train_steps=30,
        train_batch_size=16,
        eval_batch_size=8,
        num_train_images=200,
        base_learning_rate=0.3,
        iterations_per_loop=10,
        save_checkpoints_steps=10,
        log_step_count_steps=10,
        eval_subsets=("dev", "test"),
        random_flip=False,
        use_cache=True,
        seed=0,
    )
    values.update(kwargs)
    return train_lib.TrainConfig(**values)


def default_strategy():
    import tensorflow as tf

    return tf.distribute.get_strategy()


@pytest.fixture(scope="session")
def teacher(tiny_data, tmp_path_factory):
    """A tiny teacher trained for 40 steps: (config, state, eval results, per-loop losses)."""
    import train_lib

    strategy = default_strategy()
    model_dir = tmp_path_factory.mktemp("teacher")
    config = tiny_config(model_dir, tiny_data, train_steps=40, steps_per_eval=40)
    state = train_lib.TrainState(config, strategy)
    train_lib.write_run_files(config, state)
    state.restore_or_initialize()
    train_lib.train(config, strategy, state=state)
    losses = [m["train/data_loss"] for _, m in state.history]
    results = train_lib.evaluate(config, strategy)
    return config, state, results, losses


def run_script(script, *args, timeout=600):
    """Runs `python ROOT/script *args` in a subprocess; returns the CompletedProcess (text)."""
    command = [sys.executable, os.path.join(ROOT, script), *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False)


def shard_flags(**num_shards):
    """The proc scripts' `--num_{subset}_shards=N` flags for subset=N keywords."""
    return [f"--num_{subset}_shards={count}" for subset, count in num_shards.items()]


def snapshot(root):
    """{path relative to `root`: bytes} of every file under `root`."""
    root = pathlib.Path(root)
    return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def forbid_call(monkeypatch, module, name):
    """Replaces `module.name` with a function that fails the test if it is called."""

    def fail(*args, **kwargs):
        raise AssertionError(f"{module.__name__}.{name} must not be called here.")

    monkeypatch.setattr(module, name, fail)
