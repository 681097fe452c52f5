"""The driver scripts of local_scripts/, end to end on tiny data (CPU).

The SVHN scripts run with TASK_NAME=mnist, the task of the tiny fixtures
(10 classes, 32x32, same file layout), a 4-shard unlabeled set and the tiny
teacher of conftest. A fake interpreter checks the worker pool itself:
shard assignment, device pinning and failure reports.
"""

import os
import sys

import numpy as np
import pytest
import tensorflow as tf
from conftest import NUM_CLASSES, ROOT, write_unlabeled
from test_scripts import run_bash

import atomic_files

pytestmark = [pytest.mark.slow, pytest.mark.e2e]

SVHN = os.path.join(ROOT, "local_scripts", "svhn")
IMAGENET = os.path.join(ROOT, "local_scripts", "imagenet")
NUM_SHARDS = 4
NUM_UNLABELED = 90
NUM_IMAGE = 12
# A tiny student for the training scripts: a few steps of a 0.1x0.1 network.
TINY_STUDENT = (
    "--width_coefficient=0.1 --depth_coefficient=0.1 --train_steps=4 --train_batch_size=8 "
    "--iterations_per_loop=2 --save_checkpoints_steps=2 --eval_batch_size=16 --seed=0"
)


def run_script(path, env, *args):
    """Runs a script with this Python, from an unrelated cwd (the scripts must cd to the repo root)."""
    return run_bash(
        path, dict(PYTHON=sys.executable, TF_CPP_MIN_LOG_LEVEL="2", **env), *args, timeout=300
    )


def check_ok(result):
    assert result.returncode == 0, f"stdout:\n{result.stdout}\nstderr:\n{result.stderr[-4000:]}"
    return result


def read_records(path):
    return [
        tf.train.Example.FromString(r.numpy()).features.feature
        for r in tf.data.TFRecordDataset(path)
    ]


def shard_name(prefix, shard, suffix=""):
    return f"{prefix}-{shard:05d}-of-{NUM_SHARDS:05d}{suffix}"


@pytest.fixture(scope="module")
def unlabeled_dir(tmp_path_factory):
    """NUM_UNLABELED raw unlabeled images in NUM_SHARDS shards: {dir}/extra-*."""
    data_dir = str(tmp_path_factory.mktemp("unl4"))
    write_unlabeled(data_dir, NUM_UNLABELED, NUM_SHARDS, np.random.default_rng(1))
    return os.path.join(data_dir, "unlabeled")


def test_offline_pipeline_through_scripts(teacher, tiny_data, unlabeled_dir, tmp_path):
    """predict -> filter pass 1 -> pass 2 -> offline student -> reassign."""
    root = tmp_path / "predict"
    env = dict(
        TASK_NAME="mnist",
        DATA_DIR=tiny_data,
        UNLABEL_DIR=unlabeled_dir,
        TEACHER_CKPT=teacher[0].model_dir,
        DATA_ROOT=str(root),
        NUM_SHARDS=str(NUM_SHARDS),
        NUM_WORKERS="2",
        BATCH_SIZE="16",
    )
    inputs = [read_records(os.path.join(unlabeled_dir, shard_name("extra", s))) for s in range(4)]
    assert sum(map(len, inputs)) == NUM_UNLABELED

    # Step 2: every image of every shard gets exactly one prediction.
    check_ok(run_script(os.path.join(SVHN, "predict.sh"), env))
    for shard in range(NUM_SHARDS):
        preds = read_records(root / "predict_label" / shard_name("train-info", shard, "-00000"))
        assert len(preds) == len(inputs[shard])
        assert all(len(p["probabilities"].float_list.value) == NUM_CLASSES for p in preds)
        info = atomic_files.read_json(root / "info" / f"{shard_name('info', shard, '-00000')}.txt")
        assert info["image_num"] == len(inputs[shard])
        assert info["provenance"]["input_records"] == len(inputs[shard])
    assert sorted(os.listdir(root / "logs")) == ["predict-worker0.log", "predict-worker1.log"]

    # Pass 2 before pass 1 stops at once, listing the shards without statistics.
    early = run_script(os.path.join(SVHN, "filter_unlabel.sh"), env, "0")
    assert early.returncode != 0 and "shard ids 0,1,2,3." in early.stderr

    # Step 3, pass 1: the histograms count every image once. Training flags in
    # EXTRA_FLAGS (as for the other steps) do not reach the filter.
    training_flags = dict(env, EXTRA_FLAGS="--width_coefficient=0.25 --train_steps=40")
    pass1 = check_ok(run_script(os.path.join(SVHN, "filter_unlabel.sh"), training_flags, "1"))
    assert "put flags of filter_unlabel_data.py in FILTER_FLAGS" in pass1.stderr
    stats = [
        atomic_files.read_json(root / "prelim_stats" / f"prelim_stats_{s:05d}_0.json")
        for s in range(4)
    ]
    counts = [pairs for st in stats for uid, pairs in st.items() if uid != "provenance"]
    assert sum(n for pairs in counts for _, n in pairs) == NUM_UNLABELED

    # Pass 2: filtered, balanced shards whose content matches the final stats.
    filter_env = dict(env, NUM_IMAGE=str(NUM_IMAGE), MIN_THRESHOLD="0.0")
    check_ok(run_script(os.path.join(SVHN, "filter_unlabel.sh"), filter_env, "0"))
    out = root / "filter_data"
    filtered = [read_records(out / "data" / shard_name("train-0", s)) for s in range(4)]
    final = atomic_files.read_json(out / "stats" / "final_stats.json")
    labels = [int(r["label"].int64_list.value[0]) for shard in filtered for r in shard]
    assert final["total_cnt"] == len(labels) > 0
    counts = np.bincount(labels, minlength=NUM_CLASSES)
    assert {int(k): v for k, v in final["cat_count"].items()} == dict(enumerate(counts.tolist()))
    input_images = {r["image/encoded"].bytes_list.value[0] for shard in inputs for r in shard}
    for shard in filtered:
        for r in shard:
            probs = np.array(r["probabilities"].float_list.value)
            assert r["label"].int64_list.value[0] == np.argmax(probs)
            assert r["image/encoded"].bytes_list.value[0] in input_images
    # Every predicted class is brought near NUM_IMAGE (exact balancing is
    # tested in test_filter_unlabel_data.py).
    for count in counts[counts > 0]:
        assert abs(count - NUM_IMAGE) <= 8, counts

    # Step 4: a student trains from the stored pseudo labels alone, then is evaluated.
    student = tmp_path / "student"
    check_ok(
        run_script(
            os.path.join(SVHN, "run_offline.sh"),
            dict(
                env,
                UNLABEL_DIR=str(out / "data"),
                MODEL_DIR=str(student),
                EXTRA_FLAGS=TINY_STUDENT,
            ),
        )
    )
    assert (student / "ckpt-4.index").exists()
    flags = atomic_files.read_json(student / "FLAGS.json")
    assert flags["unlabel_data_dir"] == str(out / "data") and flags["unlabel_ratio"] == 5
    assert not flags["teacher_model_path"] and not flags["teacher_model_name"]
    results = atomic_files.read_json(student / "eval_results.json")
    assert results["dev"]["num_images"] == 23 and results["test"]["num_images"] == 30

    # Relabeling the filtered data with the student keeps every image in place.
    check_ok(run_script(os.path.join(SVHN, "reassign.sh"), dict(env, REASSIGN_CKPT=str(student))))
    for shard in range(NUM_SHARDS):
        relabeled = read_records(root / "reassign" / shard_name("train-0", shard))
        assert [r["image/encoded"].bytes_list.value for r in relabeled] == [
            r["image/encoded"].bytes_list.value for r in filtered[shard]
        ]
        for r in relabeled:
            probs = np.array(r["probabilities"].float_list.value)
            assert r["label"].int64_list.value[0] == np.argmax(probs)


def test_teacher_then_online_student(tiny_data, tmp_path):
    """train_teacher.sh, then run.sh with that teacher predicting on the fly."""
    tiny = TINY_STUDENT.replace("--train_steps=4", "--train_steps=2")
    teacher_dir = tmp_path / "teacher"
    env = dict(TASK_NAME="mnist", DATA_DIR=tiny_data, MODEL_DIR=str(teacher_dir), EXTRA_FLAGS=tiny)
    check_ok(run_script(os.path.join(SVHN, "train_teacher.sh"), env))
    flags = atomic_files.read_json(teacher_dir / "FLAGS.json")
    assert flags["unlabel_ratio"] == 0 and flags["augment_name"] == "v1"
    assert flags["weight_decay"] == 1e-4 and flags["final_base_lr"] == 0.0002
    assert atomic_files.read_json(teacher_dir / "eval_results.json")["test"]["num_images"] == 30

    student = tmp_path / "online"
    env.update(TEACHER_CKPT=str(teacher_dir), MODEL_DIR=str(student))
    check_ok(run_script(os.path.join(SVHN, "run.sh"), env))
    flags = atomic_files.read_json(student / "FLAGS.json")
    assert flags["teacher_model_path"] == str(teacher_dir) and flags["unlabel_ratio"] == 5
    assert flags["teacher_softmax_temp"] == 1 and flags["randaug_mag"] == 5
    assert flags["unlabel_data_dir"] == os.path.join(tiny_data, "unlabeled")
    assert atomic_files.read_json(student / "eval_results.json")["test"]["global_step"] == 2


@pytest.mark.parametrize("script", ["run.sh", "predict.sh"])
def test_missing_teacher_is_a_clear_error(script, tiny_data, unlabeled_dir, tmp_path):
    empty = tmp_path / "no_teacher"
    empty.mkdir()
    env = dict(
        DATA_DIR=tiny_data,
        UNLABEL_DIR=unlabeled_dir,
        TEACHER_CKPT=str(empty),
        NUM_SHARDS=str(NUM_SHARDS),
        DATA_ROOT=str(tmp_path / "p"),
    )
    result = run_script(os.path.join(SVHN, script), env)
    assert result.returncode != 0
    assert f"TEACHER_CKPT={empty}: no checkpoint" in result.stderr
    assert "train_teacher.sh" in result.stderr
    assert not (tmp_path / "p").exists()


def test_wrong_num_shards_lists_missing_inputs(teacher, unlabeled_dir, tmp_path):
    env = dict(TEACHER_CKPT=teacher[0].model_dir, UNLABEL_DIR=unlabeled_dir, NUM_SHARDS="6")
    result = run_script(os.path.join(SVHN, "predict.sh"), env)
    assert result.returncode != 0
    assert "6 of 6 input shards missing" in result.stderr and "NUM_SHARDS=6" in result.stderr


def test_imagenet_train_rejects_unknown_model():
    result = run_script(os.path.join(IMAGENET, "train.sh"), dict(MODEL="efficientnet-b9"))
    assert result.returncode != 0 and "efficientnet-b7." in result.stderr


# ---------------------------------------------------------------------------
# The worker pool, with a fake interpreter that records its calls.

FAKE_PYTHON = """#!/bin/bash
# Records "CUDA_VISIBLE_DEVICES|shard ids" and, like predict, completes shards
# in order (writing the outputs reassign.sh and filter pass 1 check); fails on
# shard $FAIL_SHARD.
ids= out= stats= pass1=
for arg in "$@"; do
  case "$arg" in
    --shard_id=*) ids=${arg#--shard_id=} ;;
    --output_dir=*) out=${arg#--output_dir=} ;;
    --prelim_stats_dir=*) stats=${arg#--prelim_stats_dir=} ;;
    --only_get_stats=1) pass1=1 ;;
  esac
done
echo "${CUDA_VISIBLE_DEVICES-unset}|${ids}" >>"$CALLS"
IFS=, read -ra shards <<<"$ids"
for s in "${shards[@]}"; do
  if [[ "$s" == "${FAIL_SHARD:-}" ]]; then echo "shard $s is broken" >&2; exit 1; fi
  [[ -n "$out" ]] && mkdir -p "$out" && touch "$out/train-0-$(printf %05d "$s")-of-$(printf %05d "$NUM_SHARDS")"
  [[ -n "$pass1" ]] && mkdir -p "$stats" && touch "$stats/$(printf prelim_stats_%05d_0.json "$s")"
done
exit 0
"""


@pytest.fixture
def fake(tmp_path):
    """Fake interpreter, a checkpoint dir and 7 filtered input shards for reassign.sh."""
    python = tmp_path / "python"
    python.write_text(FAKE_PYTHON)
    python.chmod(0o755)
    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    (ckpt / "checkpoint").write_text("")
    (ckpt / "ckpt-1.index").write_text("")
    inputs = tmp_path / "filtered"
    inputs.mkdir()
    for s in range(7):
        (inputs / f"train-0-{s:05d}-of-00007").write_text("")
    return dict(
        PYTHON=str(python),
        CALLS=str(tmp_path / "calls"),
        REASSIGN_CKPT=str(ckpt),
        INPUT_DIR=str(inputs),
        OUTPUT_DIR=str(tmp_path / "out"),
        DATA_ROOT=str(tmp_path / "root"),
        NUM_SHARDS="7",
    )


def calls(env):
    with open(env["CALLS"]) as f:
        return sorted(tuple(line.strip().split("|")) for line in f)


def run_fake(script, env, *args):
    return run_bash(script, env, *args, timeout=600)


def test_pool_pins_one_gpu_per_worker_and_covers_each_shard_once(fake):
    check_ok(run_fake(os.path.join(SVHN, "reassign.sh"), dict(fake, GPUS="3,5,6")))
    assert calls(fake) == [("3", "0,3,6"), ("5", "1,4"), ("6", "2,5")]


def test_pool_list_mode_names_only_unfinished_shards(fake):
    result = run_fake(os.path.join(SVHN, "reassign.sh"), dict(fake, GPUS="0,1", FAIL_SHARD="2"))
    assert result.returncode != 0
    # Worker 0 finished shard 0, failed on 2 and never reached 4 and 6.
    assert "reassign failed for 3 of 7 shards: shard ids 2,4,6" in result.stderr
    assert "shard 2 is broken" in result.stderr  # the end of the failed worker's log
    assert calls(fake) == [("0", "0,2,4,6"), ("1", "1,3,5")]


def test_pool_filter_lists_shards_on_cpu_and_names_only_unfinished_ones(fake, tmp_path):
    root = tmp_path / "root"
    (root / "predict_label").mkdir(parents=True)
    (root / "info").mkdir()
    env = dict(fake, NUM_WORKERS="3", FAIL_SHARD="4")
    result = run_fake(os.path.join(SVHN, "filter_unlabel.sh"), env, "1")
    assert result.returncode != 0
    # Worker 1 finished shard 1 before failing on 4.
    assert "filter-pass1 failed for 1 of 7 shards: shard ids 4 " in result.stderr
    # One call per worker, each shard exactly once, none with a GPU.
    assert calls(fake) == [("", "0,3,6"), ("", "1,4"), ("", "2,5")]
    with open(root / "logs" / "filter-pass1-worker1.log") as f:
        log = f.read()
    assert "--shard_id=1,4" in log and "shard 4 is broken" in log


def test_pool_each_mode_runs_one_call_per_shard(fake, tmp_path):
    script = tmp_path / "each.sh"
    script.write_text(
        "set -euo pipefail\n"
        f"source {os.path.join(ROOT, 'local_scripts', 'common.sh')}\n"
        "setup_workers cpu\n"
        f'LOG_DIR={tmp_path / "logs"} run_sharded job each 7 "$PYTHON"\n'
    )
    result = run_fake(str(script), dict(fake, NUM_WORKERS="3", FAIL_SHARD="4"))
    assert result.returncode != 0
    assert "job failed for 1 of 7 shards: shard ids 4 " in result.stderr
    assert calls(fake) == [("", str(s)) for s in range(7)]
    with open(tmp_path / "logs" / "job-worker1.log") as f:
        log = f.read()
    assert "--shard_id=1" in log and "--shard_id=4" in log and "shard 4 is broken" in log


def test_pool_without_gpus_or_workers_keeps_the_environment(fake):
    env = dict(fake, CUDA_VISIBLE_DEVICES="7")
    check_ok(run_fake(os.path.join(IMAGENET, "reassign.sh"), env))
    assert calls(fake) == [("7", "0,1,2,3,4,5,6")]


def test_pool_rejects_gpus_and_num_workers_together(fake):
    result = run_fake(os.path.join(SVHN, "reassign.sh"), dict(fake, GPUS="0", NUM_WORKERS="2"))
    assert result.returncode != 0 and "not both" in result.stderr
    assert not os.path.exists(fake["CALLS"])
