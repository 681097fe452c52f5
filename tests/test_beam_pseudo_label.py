"""beam_pseudo_label.py on Beam's local runner: the same result as predict.sh + filter_unlabel.sh."""

import collections
import os
import subprocess
import sys

import pytest
import tensorflow as tf
from conftest import NUM_CLASSES, ROOT
from test_scripts import run_bash

import utils

SVHN = os.path.join(ROOT, "local_scripts", "svhn")
NUM_SHARDS = 2
PREFIX = "train"
NUM_IMAGE = 20


@pytest.fixture(scope="module")
def unlabeled_dir(tiny_data):
    """The teacher's 200 training images (2 shards, train-*), read as unlabeled data.

    The tiny teacher tells these apart (it predicts unseen images as few
    classes), so some classes need upsampling and others downsampling.
    """
    return tiny_data


def run_beam(*args, timeout=600):
    command = [sys.executable, os.path.join(ROOT, "beam_pseudo_label.py"), *args]
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    return subprocess.run(
        command, capture_output=True, text=True, timeout=timeout, check=False, env=env
    )


def beam_flags(teacher_dir, unlabeled_dir, output_dir, **extra):
    flags = dict(
        input_dir=unlabeled_dir,
        file_prefix=PREFIX,
        predict_ckpt_path=teacher_dir,
        output_dir=output_dir,
        num_image=NUM_IMAGE,
        min_threshold=0.0,
        num_label_classes=NUM_CLASSES,
        task_name="mnist",
        batch_size=16,
        num_output_shards=2,
        **extra,
    )
    return [f"--{k}={v}" for k, v in flags.items()]


def check_ok(result):
    assert result.returncode == 0, f"stdout:\n{result.stdout}\nstderr:\n{result.stderr[-4000:]}"
    return result


def record_multiset(pattern):
    files = tf.io.gfile.glob(pattern)
    assert files, pattern
    return collections.Counter(r.numpy() for r in tf.data.TFRecordDataset(sorted(files)))


def without_provenance(thresholds):
    return {k: v for k, v in thresholds.items() if k != "provenance"}


@pytest.fixture(scope="module")
def script_result(teacher, tiny_data, unlabeled_dir, tmp_path_factory):
    """predict.sh + filter_unlabel.sh 1 + filter_unlabel.sh 0: the DATA_ROOT."""
    root = tmp_path_factory.mktemp("script")
    env = dict(
        PYTHON=sys.executable,
        TF_CPP_MIN_LOG_LEVEL="2",
        TASK_NAME="mnist",
        DATA_DIR=tiny_data,
        UNLABEL_DIR=unlabeled_dir,
        TEACHER_CKPT=teacher[0].model_dir,
        DATA_ROOT=str(root),
        NUM_SHARDS=str(NUM_SHARDS),
        NUM_WORKERS="2",
        BATCH_SIZE="16",
        FILE_PREFIX=PREFIX,
        NUM_IMAGE=str(NUM_IMAGE),
        MIN_THRESHOLD="0.0",
    )
    check_ok(run_bash(os.path.join(SVHN, "predict.sh"), env, timeout=300))
    check_ok(run_bash(os.path.join(SVHN, "filter_unlabel.sh"), env, "1", timeout=300))
    check_ok(run_bash(os.path.join(SVHN, "filter_unlabel.sh"), env, "0", timeout=300))
    return root


@pytest.mark.xfail(
    reason="Issue 13, item 2 is open: since the merge with batch-norm folding and the new "
    "optimizer kernel, the tiny teacher's predictions change the test's premise (one "
    "downsampled class) and the Beam and script records differed in CI; see the closing note.",
    strict=False,
)
def test_beam_equals_the_scripts(teacher, unlabeled_dir, script_result, tmp_path):
    """Same multiset of records and same thresholds; with 1 and with 2 local workers."""
    script_records = record_multiset(str(script_result / "filter_data" / "data" / "train-*"))
    script_thresholds = utils.read_json(script_result / "filter_data" / "threshold.json")
    counts = [n for _, n in without_provenance(script_thresholds).values()]
    # The class the tiny teacher predicts has more images than NUM_IMAGE: downsampled.
    assert max(counts) > NUM_IMAGE > sum(script_records.values()) > 0, counts
    for workers in (1, 2):
        out = tmp_path / f"beam{workers}"
        args = beam_flags(teacher[0].model_dir, unlabeled_dir, str(out))
        check_ok(
            run_beam(
                *args, f"--direct_num_workers={workers}", "--direct_running_mode=multi_threading"
            )
        )
        assert record_multiset(str(out / "data" / "train-*")) == script_records
        beam_thresholds = utils.read_json(out / "threshold.json")
        assert without_provenance(beam_thresholds) == without_provenance(script_thresholds)


def test_missing_checkpoint_and_empty_glob_are_named(tmp_path):
    """Both stop before the pipeline starts, naming the flag and the path, writing nothing."""
    out = tmp_path / "out"
    (tmp_path / f"{PREFIX}-00000-of-00001").write_bytes(b"")
    missing = run_beam(*beam_flags(str(tmp_path / "nope"), str(tmp_path), str(out)))
    assert missing.returncode != 0
    assert (
        missing.stderr.strip()
        .splitlines()[-1]
        .startswith("beam_pseudo_label.py: error: --predict_ckpt_path: no checkpoint at ")
    ), missing.stderr[-2000:]
    empty = run_beam(*beam_flags(str(tmp_path / "nope"), str(tmp_path / "empty"), str(out)))
    assert empty.returncode != 0
    assert empty.stderr.strip().splitlines()[-1] == (
        "beam_pseudo_label.py: error: --input_dir/--file_prefix: no file matches "
        f"{tmp_path / 'empty' / PREFIX}-*"
    ), empty.stderr[-2000:]
    assert not out.exists()
