"""A task described by proc_folder.py's dataset_info.json: read, trained, evaluated, predicted."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
from conftest import ROOT, TINY_OVERRIDES, class_image
from PIL import Image

import atomic_files
import dataset_writer
import file_names
import proc_folder
import task_info

NUM_CLASSES = 3


def write_class_folders(root, per_class=8, unlabeled=12, seed=0):
    """3 classes of 32x32 PNG class images in folders, plus a nested unlabeled folder."""
    rng = np.random.default_rng(seed)
    for label in range(NUM_CLASSES):
        os.makedirs(f"{root}/labeled/class_{label}", exist_ok=True)
        for i in range(per_class):
            Image.fromarray(class_image(label, rng)).save(f"{root}/labeled/class_{label}/{i}.png")
    os.makedirs(f"{root}/unlabeled/part", exist_ok=True)
    for i in range(unlabeled):
        Image.fromarray(class_image(i % NUM_CLASSES, rng)).save(f"{root}/unlabeled/part/{i}.png")


@pytest.fixture(scope="module")
def custom_data(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("custom"))
    write_class_folders(root)
    settings = proc_folder.FolderSettings(
        labeled_dir=f"{root}/labeled",
        unlabeled_dir=f"{root}/unlabeled",
        dev_fraction=0.25,
        random_flip=False,
    )
    out = f"{root}/proc"
    info = proc_folder.process_folder(out, settings, dataset_writer.WriterOptions(), "mine")
    return out, info


def test_task_read_from_dataset_info(custom_data):
    out, info = custom_data
    task = task_info.get_task_info("mine", out)
    assert task.num_classes == NUM_CLASSES
    assert task.mean_rgb == tuple(info["mean_rgb"]) and task.stddev_rgb == tuple(info["stddev_rgb"])
    assert task.small_image_model and task.image_size == 32 and not task.random_flip
    assert task.eval_subsets == ("dev",)
    assert task.split_sizes == {"train": 18, "dev": 6, "extra": 12}
    # Remembered by name, and found from the unlabeled folder (prediction's --label_data_dir).
    assert task_info.get_task_info("mine") == task
    assert task_info.get_task_info("other", f"{out}/unlabeled").num_classes == NUM_CLASSES
    assert task_info.num_images("mine", "train", out) == 18


def test_large_images_take_the_model_resolution():
    info = {"splits": {"train": 4, "test": 2}, "num_classes": 5, "mean_rgb": [1, 2, 3]}
    info.update(stddev_rgb=[4, 5, 6], median_size=[65.0, 40.0])
    task = task_info.task_from_dataset_info("big", info)
    assert not task.small_image_model and task.image_size is None
    assert task.eval_subsets == ("test",) and task.random_flip
    small = task_info.task_from_dataset_info("s", dict(info, median_size=[64.0, 64.0]))
    assert small.small_image_model and small.image_size == 32


def test_builtin_tasks_and_old_files_unchanged(custom_data, tmp_path):
    out, _ = custom_data
    assert task_info.get_task_info("svhn", out) is task_info.TASKS["svhn"]
    assert task_info.get_task_info("mnist", out).mean_rgb == task_info.TASKS["mnist"].mean_rgb
    # A proc_mnist.py / proc_svhn.py file holds the counts alone: still read.
    atomic_files.write_json(str(tmp_path / task_info.DATASET_INFO_FILE), {"train": 7, "test": 3})
    assert task_info.num_images("mnist", "train", str(tmp_path)) == 7
    assert dataset_writer.complete_output_counts(str(tmp_path), {"train": 1}, {}) is None
    with pytest.raises(ValueError, match=r"dataset_info.json lacks \['splits', 'num_classes'"):
        task_info.get_task_info("custom_old", str(tmp_path))
    with pytest.raises(ValueError, match="Unknown task_name 'nothing_here'"):
        task_info.get_task_info("nothing_here")


def main_py(*args):
    command = [sys.executable, os.path.join(ROOT, "main.py"), "--use_tpu=False"]
    command += ["--use_bfloat16=False", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=600, cwd=ROOT)


@pytest.mark.slow
@pytest.mark.e2e
def test_trains_evaluates_and_predicts_with_its_classes(custom_data, tmp_path):
    out, info = custom_data
    model_dir = str(tmp_path / "model")
    tiny = [f"--{k}={v}" for k, v in TINY_OVERRIDES.items()]
    result = main_py(
        "--task_name=mine",
        "--mode=train_and_eval",
        f"--label_data_dir={out}",
        f"--model_dir={model_dir}",
        "--train_steps=4",
        "--train_batch_size=8",
        "--iterations_per_loop=2",
        "--save_checkpoints_steps=4",
        "--eval_batch_size=6",
        *tiny,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    results = json.load(open(os.path.join(model_dir, "eval_results.json")))
    # Evaluated on the split dataset_info.json lists, over all its images.
    assert set(results) == {"dev"} and results["dev"]["num_images"] == 6
    params = json.load(open(os.path.join(model_dir, "model_params.txt")))
    assert params["num_classes"] == NUM_CLASSES and params["task_name"] == "mine"
    np.testing.assert_allclose(params["mean_rgb"], info["mean_rgb"], rtol=1e-6)
    np.testing.assert_allclose(params["stddev_rgb"], info["stddev_rgb"], rtol=1e-6)
    result = main_py(
        "--task_name=mine",
        "--mode=predict",
        f"--label_data_dir={out}/unlabeled",
        "--file_prefix=extra",
        "--num_shards=1",
        "--shard_id=0",
        "--eval_batch_size=6",
        f"--predict_ckpt_path={model_dir}",
        f"--info_dir={tmp_path}/info",
        f"--output_dir={tmp_path}/pred",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    info_file = json.load(open(file_names.info_path(str(tmp_path / "info"), 0, 1, 0)))
    assert info_file["image_num"] == 12
    path = file_names.prediction_path(str(tmp_path / "pred"), 0, 1, 0)
    probabilities = [
        tf.train.Example.FromString(raw.numpy()).features.feature["probabilities"].float_list.value
        for raw in tf.data.TFRecordDataset(path)
    ]
    assert len(probabilities) == 12
    assert all(len(p) == NUM_CLASSES and abs(sum(p) - 1) < 1e-4 for p in probabilities)


@pytest.mark.slow
@pytest.mark.e2e
def test_unknown_task_without_description_is_a_usage_error(tmp_path):
    result = main_py(
        "--task_name=custom",
        "--mode=train",
        f"--label_data_dir={tmp_path}",
        f"--model_dir={tmp_path}/m",
    )
    assert result.returncode != 0
    assert f"{tmp_path} holds no {task_info.DATASET_INFO_FILE}" in result.stderr
