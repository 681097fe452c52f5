"""End-to-end test of local_scripts/mnist/loop.sh (local_scripts/loop.sh with
TASK_NAME=mnist) on a few hundred generated images.

A tiny EfficientNet (width/depth 0.1), a few training steps per model and one
noisy-student round: teacher -> predict -> filter (both passes) -> student ->
loop_report.py. Checks every step's outputs, results.json and summary.png,
that SEED reaches every training run and the filter, and that a re-run skips
the finished steps.
"""

import json
import os
import shutil
import struct
import subprocess
import sys

import numpy as np
import pytest
from conftest import NUM_CLASSES, ROOT, write_labeled_subset, write_unlabeled
from test_scripts import run_bash

pytestmark = [pytest.mark.slow, pytest.mark.e2e]

NUM_UNLABELED_SHARDS = 2
SEED = 7
STEPS = ["round0_teacher", "round1_predict", "round1_filter1", "round1_filter2", "round1_student"]


def tiny_env(data_dir, out_dir):
    return dict(
        PYTHON=sys.executable,
        TF_CPP_MIN_LOG_LEVEL="2",
        DATA_DIR=data_dir,
        OUT=out_dir,
        ROUNDS="1",
        SEED=str(SEED),
        NUM_SHARDS=str(NUM_UNLABELED_SHARDS),
        NUM_WORKERS="2",
        # Every image is kept: a 4-step teacher is far from confident.
        MIN_THRESHOLD="0",
        NUM_IMAGE="8",
        BATCH_SIZE="32",
        INIT_STUDENT="1",
        MODEL_FLAGS="--width_coefficient=0.1 --depth_coefficient=0.1",
        RUN_FLAGS="--iterations_per_loop=2 --save_checkpoints_steps=2 --eval_batch_size=32 "
        "--eval_subsets=train,dev,test",
        TEACHER_FLAGS="--train_batch_size=8 --train_steps=4 --augment_name=v1 --randaug_mag=5",
        STUDENT_FLAGS="--train_batch_size=8 --unlabel_ratio=2 --teacher_softmax_temp=1 "
        "--train_steps=4 --augment_name=v1 --randaug_mag=5",
    )


def run_loop(env):
    return run_bash("local_scripts/mnist/loop.sh", env, cwd=ROOT, timeout=900)


@pytest.fixture(scope="module")
def loop_run(tmp_path_factory):
    import atomic_files

    data_dir = str(tmp_path_factory.mktemp("mnist_like"))
    out_dir = str(tmp_path_factory.mktemp("loop_out"))
    rng = np.random.default_rng(0)
    counts = {"train": 100, "dev": 20, "test": 30}
    for subset, n in counts.items():
        write_labeled_subset(data_dir, subset, n, 2, rng)
    write_unlabeled(data_dir, 60, NUM_UNLABELED_SHARDS, rng)
    counts["extra"] = 60
    atomic_files.write_json(os.path.join(data_dir, "dataset_info.json"), counts)
    env = tiny_env(data_dir, out_dir)
    proc = run_loop(env)
    assert proc.returncode == 0, f"loop.sh failed:\n{proc.stdout}\n{proc.stderr}"
    return env, out_dir, proc


def _shard(name, shard, extra=""):
    return f"{name}-{shard:05d}-of-{NUM_UNLABELED_SHARDS:05d}{extra}"


def test_every_step_writes_its_outputs(loop_run):
    _, out, _ = loop_run
    for model_dir in ("round0_teacher", "round1_student"):
        path = os.path.join(out, model_dir)
        files = os.listdir(path)
        assert "checkpoint" in files and "ckpt-4.index" in files
        assert "model_params.txt" in files and "FLAGS.json" in files
        assert any(f.startswith("events.out.tfevents") for f in files), "no TensorBoard log"
        with open(os.path.join(path, "eval_results.json")) as f:
            results = json.load(f)
        assert set(results) == {"train", "dev", "test"}
        assert results["test"]["num_images"] == 30 and results["test"]["global_step"] == 4
    pseudo = os.path.join(out, "round1_pseudo")
    for shard in range(NUM_UNLABELED_SHARDS):
        assert os.path.exists(
            os.path.join(pseudo, "predict_label", _shard("train-info", shard, "-00000"))
        )
        assert os.path.exists(os.path.join(pseudo, "info", _shard("info", shard, "-00000.txt")))
        assert os.path.exists(
            os.path.join(pseudo, "prelim_stats", f"prelim_stats_{shard:05d}_0.json")
        )
        assert os.path.exists(os.path.join(pseudo, "filter_data", "data", _shard("train-0", shard)))
    assert os.path.exists(os.path.join(pseudo, "prelim_stats", "total_counts.json"))
    with open(os.path.join(pseudo, "filter_data", "stats", "final_stats.json")) as f:
        assert json.load(f)["total_cnt"] > 0
    # The student learned from the pseudo labels, starting from the teacher.
    with open(os.path.join(out, "round1_student", "FLAGS.json")) as f:
        student_flags = json.load(f)
    assert student_flags["unlabel_data_dir"].endswith("round1_pseudo/filter_data/data")
    assert student_flags["init_model_path"].endswith("round0_teacher")
    assert sorted(os.listdir(os.path.join(out, ".done"))) == sorted(STEPS)
    for step in STEPS:
        assert os.path.getsize(os.path.join(out, "logs", f"{step}.log")) > 0


def test_seed_reaches_every_step(loop_run):
    _, out, _ = loop_run
    for model_dir in ("round0_teacher", "round1_student"):
        with open(os.path.join(out, model_dir, "FLAGS.json")) as f:
            flags_json = json.load(f)
        assert flags_json["seed"] == SEED, model_dir
        assert flags_json["deterministic"] is True, model_dir
    logs = os.path.join(out, "round1_pseudo", "logs")
    for prefix in ("predict", "filter-pass1", "filter-pass2"):
        names = [f for f in os.listdir(logs) if f.startswith(prefix + "-worker")]
        assert names, f"no {prefix} worker log"
        for name in names:
            with open(os.path.join(logs, name)) as f:
                calls = [line for line in f if line.startswith("=== ")]
            assert calls and all(f"--seed={SEED} " in c for c in calls), (name, calls)
    with open(os.path.join(out, "results.json")) as f:
        results = json.load(f)
    assert results["settings"]["seed"] == str(SEED)
    assert results["settings"]["training"]["round1_student"]["seed"] == SEED


def test_bad_seed_fails_fast(tmp_path):
    env = tiny_env(str(tmp_path), str(tmp_path / "out"))
    env["SEED"] = "x1"
    proc = run_loop(env)
    assert proc.returncode != 0 and "SEED=x1" in proc.stderr


def test_results_json_is_well_formed(loop_run):
    _, out, proc = loop_run
    with open(os.path.join(out, "results.json")) as f:
        results = json.load(f)
    assert set(results) >= {"rounds", "wall_seconds", "settings"}
    rounds = results["rounds"]
    assert [r["round"] for r in rounds] == [0, 1]
    assert [r["role"] for r in rounds] == ["teacher", "student"]
    for r in rounds:
        assert isinstance(r["model_name"], str) and r["model_name"].startswith("efficientnet-b0")
        for key in ("test_top_1", "dev_top_1", "train_top_1"):
            assert isinstance(r[key], float) and 0.0 <= r[key] <= 1.0
        assert isinstance(r["num_pseudo_labeled"], int)
    assert rounds[0]["num_pseudo_labeled"] == 0
    with open(os.path.join(out, "round1_pseudo", "filter_data", "stats", "final_stats.json")) as f:
        total = json.load(f)["total_cnt"]
    assert rounds[1]["num_pseudo_labeled"] == total
    assert sum(rounds[1]["pseudo_label_counts_after"]) == total
    before = rounds[1]["pseudo_label_counts_before"]
    assert len(before) == NUM_CLASSES and sum(before) == 60  # every unlabeled image
    assert isinstance(results["wall_seconds"], float) and results["wall_seconds"] > 0
    assert set(results["step_seconds"]) == set(STEPS)
    settings = results["settings"]
    assert settings["task_name"] == "mnist" and settings["min_threshold"] == "0"
    assert settings["labeled_data"]["train"] == 100
    assert settings["training"]["round1_student"]["unlabel_ratio"] == 2
    # The loop's compute: 4 teacher steps of 8 images, 4 student steps of 8 + 16.
    assert [r["train_images"] for r in rounds] == [32, 96]
    assert results["train_images"] == 128
    # The table is printed, with the compute.
    assert "teacher" in proc.stdout and "student 1" in proc.stdout
    assert "images processed by training, all rounds: 128" in proc.stdout


def test_summary_png(loop_run):
    _, out, _ = loop_run
    with open(os.path.join(out, "summary.png"), "rb") as f:
        data = f.read()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", data[16:24])
    assert width >= 600 and height >= 300


def test_rerun_skips_finished_steps(loop_run):
    env, out, _ = loop_run
    with open(os.path.join(out, "results.json")) as f:
        before = json.load(f)
    proc = run_loop(env)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.count("done earlier") == len(STEPS)
    with open(os.path.join(out, "results.json")) as f:
        after = json.load(f)
    assert after["rounds"] == before["rounds"]
    assert after["wall_seconds"] == before["wall_seconds"]


def test_no_confident_image_stops_the_loop_with_the_filters_message(loop_run, tmp_path):
    """A threshold no prediction reaches: the filter's own message ends the loop's output."""
    env, out, _ = loop_run
    copy = str(tmp_path / "out")
    shutil.copytree(out, copy)
    for step in ("round1_filter2", "round1_student"):
        os.remove(os.path.join(copy, ".done", step))
    proc = run_loop(dict(env, OUT=copy, MIN_THRESHOLD="0.99"))
    assert proc.returncode == 1
    assert "no image would be kept" in proc.stderr and "Lower --min_threshold" in proc.stderr
    assert "step round1_filter2 failed" in proc.stderr
    assert not os.path.exists(os.path.join(copy, ".done", "round1_filter2"))


def test_missing_data_fails_fast(tmp_path):
    env = tiny_env(str(tmp_path / "nowhere"), str(tmp_path / "out"))
    proc = run_loop(env)
    assert proc.returncode != 0
    assert "DATA_DIR" in proc.stderr and "prepro.sh" in proc.stderr


@pytest.mark.parametrize(
    "script",
    sorted(
        f for f in os.listdir(os.path.join(ROOT, "local_scripts", "mnist")) if f.endswith(".sh")
    ),
)
def test_scripts_parse(script):
    path = os.path.join(ROOT, "local_scripts", "mnist", script)
    assert subprocess.run(["bash", "-n", path]).returncode == 0
