"""local_scripts/custom/prepro.sh + loop.sh end to end on tiny generated class folders."""

import json
import os
import sys

import numpy as np
import pytest
import tensorflow as tf
from conftest import ROOT
from test_custom_task import NUM_CLASSES, write_class_folders
from test_scripts import run_bash

pytestmark = [pytest.mark.slow, pytest.mark.e2e]


def test_custom_loop_one_round(tmp_path):
    root = str(tmp_path)
    write_class_folders(root, per_class=12, unlabeled=24)
    # No test split: loop_report.py compares the rounds on dev.
    env = dict(
        PYTHON=sys.executable,
        TF_CPP_MIN_LOG_LEVEL="2",
        DATA_DIR=f"{root}/data",
        LABELED_DIR=f"{root}/labeled",
        UNLABELED_DIR=f"{root}/unlabeled",
        DEV_FRACTION="0.25",
        PREPRO_WORKERS="1",
        RANDOM_FLIP="False",
    )
    proc = run_bash("local_scripts/custom/prepro.sh", env, cwd=ROOT, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    env.update(
        OUT=f"{root}/out",
        DATA_ROOT=f"{root}/predict",
        ROUNDS="1",
        NUM_WORKERS="1",
        MIN_THRESHOLD="0",
        BATCH_SIZE="16",
        MODEL_FLAGS="--width_coefficient=0.1 --depth_coefficient=0.1",
        TEACHER_FLAGS="--train_batch_size=8 --train_steps=4",
        STUDENT_FLAGS="--train_batch_size=8 --unlabel_ratio=1 --teacher_softmax_temp=-1 "
        "--train_steps=4",
        RUN_FLAGS="--iterations_per_loop=2 --save_checkpoints_steps=2 --eval_batch_size=16 "
        "--eval_subsets=train,dev",
    )
    proc = run_bash("local_scripts/custom/loop.sh", env, cwd=ROOT, timeout=900)
    assert proc.returncode == 0, f"{proc.stdout}\n{proc.stderr[-3000:]}"
    results = json.load(open(f"{root}/out/results.json"))
    assert [r["role"] for r in results["rounds"]] == ["teacher", "student"]
    student = results["rounds"][1]
    teacher_error = 1 - results["rounds"][0]["dev_top_1"]
    if teacher_error:
        ratio = (1 - student["dev_top_1"]) / teacher_error
        assert student["dev_error_vs_teacher"] == round(ratio, 4)
    assert student["test_top_1"] is None and "test_error_vs_teacher" not in student
    # NUM_IMAGE from the data: 24 unlabeled images / 3 classes.
    assert results["settings"]["num_image"] == "8"
    assert len(student["pseudo_label_counts_before"]) == NUM_CLASSES
    assert sum(student["pseudo_label_counts_before"]) == 24
    assert results["settings"]["labeled_data"]["class_names"] == ["class_0", "class_1", "class_2"]
    for model in ("round0_teacher", "round1_student"):
        params = json.load(open(f"{root}/out/{model}/model_params.txt"))
        assert params["num_classes"] == NUM_CLASSES and params["image_size"] == 32
        evaluated = json.load(open(f"{root}/out/{model}/eval_results.json"))
        assert evaluated["dev"]["num_images"] == 9 and "test" not in evaluated
    picture = f"{root}/out/round1_pseudo/pseudo_labels.png"
    assert os.path.getsize(picture) > 0
    assert os.path.getsize(f"{root}/out/summary.png") > 0

    # Reassign on the loop's own filter output: the student relabels the
    # filtered records of the custom task, keeping every image in place.
    pseudo = f"{root}/out/round1_pseudo"
    proc = run_bash(
        "local_scripts/custom/reassign.sh",
        dict(env, DATA_ROOT=pseudo, REASSIGN_CKPT=f"{root}/out/round1_student"),
        cwd=ROOT,
        timeout=300,
    )
    assert proc.returncode == 0, f"{proc.stdout}\n{proc.stderr[-3000:]}"
    num_shards = json.load(open(f"{root}/data/dataset_info.json"))["num_files"]["extra"]
    names = [f"train-0-{s:05d}-of-{num_shards:05d}" for s in range(num_shards)]
    assert sorted(os.listdir(f"{pseudo}/reassign")) == sorted(names + ["provenance"])
    for name in names:
        filtered = _records(f"{pseudo}/filter_data/data/{name}")
        relabeled = _records(f"{pseudo}/reassign/{name}")
        assert [r["image/encoded"].bytes_list.value for r in relabeled] == [
            r["image/encoded"].bytes_list.value for r in filtered
        ]
        for r in relabeled:
            probs = np.array(r["probabilities"].float_list.value)
            assert len(probs) == NUM_CLASSES
            assert r["label"].int64_list.value[0] == np.argmax(probs)


def _records(path):
    return [
        tf.train.Example.FromString(r.numpy()).features.feature
        for r in tf.data.TFRecordDataset(path)
    ]
