"""beam_pseudo_label.py on Beam's local runner: the same result as predict.sh + filter_unlabel.sh."""

import collections
import os
import subprocess
import sys

import pytest
import tensorflow as tf
import test_package
from conftest import NUM_CLASSES, ROOT, TINY_TRAIN_FLAGS
from test_scripts import run_bash

import atomic_files
import file_names
import filter_stats

pytestmark = [pytest.mark.slow, pytest.mark.e2e]

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


@pytest.fixture(scope="module")
def teacher_dir(tiny_data, tmp_path_factory):
    """A tiny teacher of its own, seeded and deterministic, trained long enough to tell
    several classes apart (the session's 40-step teacher may predict one class for all)."""
    model_dir = str(tmp_path_factory.mktemp("beam_teacher"))
    flags = [
        *TINY_TRAIN_FLAGS,
        "--train_steps=150",
        "--train_batch_size=16",
        "--iterations_per_loop=50",
        "--save_checkpoints_steps=150",
        "--base_learning_rate=0.1",
        "--deterministic=True",
        f"--label_data_dir={tiny_data}",
        f"--model_dir={model_dir}",
    ]
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    result = subprocess.run(
        [sys.executable, os.path.join(ROOT, "main.py"), *flags],
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
    )
    check_ok(result)
    return model_dir


def run_beam(*args, timeout=600):
    command = [sys.executable, os.path.join(ROOT, "beam_pseudo_label.py"), *args]
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    return subprocess.run(
        command, capture_output=True, text=True, timeout=timeout, check=False, env=env
    )


def beam_flags(teacher_dir, unlabeled_dir, output_dir, num_image=NUM_IMAGE, **extra):
    flags = dict(
        input_dir=unlabeled_dir,
        file_prefix=PREFIX,
        predict_ckpt_path=teacher_dir,
        output_dir=output_dir,
        num_image=num_image,
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


def predicted_class_counts(prelim_dir):
    """Images per predicted class, summed over pass 1's per-shard statistics."""
    counts = collections.Counter()
    for path in tf.io.gfile.glob(os.path.join(prelim_dir, "prelim_stats_*.json")):
        for uid, bins in atomic_files.read_json(path).items():
            if uid != filter_stats.PROVENANCE_KEY:
                counts[int(uid)] += sum(n for _, n in bins)
    return counts


def balancing_target(counts):
    """A NUM_IMAGE between the fewest and most images of the predicted classes.

    The classes below it are upsampled (copies drawn per record, keyed), those
    above it downsampled: the equality test needs both.
    """
    present = sorted(n for n in counts.values() if n)
    assert len(present) >= 2 and present[-1] - present[0] >= 2, (
        f"the tiny teacher must predict two classes of different sizes; it predicted {counts}"
    )
    return (present[0] + present[-1]) // 2


@pytest.fixture(scope="module")
def script_result(teacher_dir, tiny_data, unlabeled_dir, tmp_path_factory):
    """predict.sh + filter_unlabel.sh 1 + filter_unlabel.sh 0: (DATA_ROOT, NUM_IMAGE)."""
    root = tmp_path_factory.mktemp("script")
    env = dict(
        PYTHON=sys.executable,
        TF_CPP_MIN_LOG_LEVEL="2",
        TASK_NAME="mnist",
        DATA_DIR=tiny_data,
        UNLABEL_DIR=unlabeled_dir,
        TEACHER_CKPT=teacher_dir,
        DATA_ROOT=str(root),
        NUM_SHARDS=str(NUM_SHARDS),
        NUM_WORKERS="2",
        BATCH_SIZE="16",
        FILE_PREFIX=PREFIX,
        MIN_THRESHOLD="0.0",
    )
    check_ok(run_bash(os.path.join(SVHN, "predict.sh"), env, timeout=300))
    check_ok(run_bash(os.path.join(SVHN, "filter_unlabel.sh"), env, "1", timeout=300))
    num_image = balancing_target(predicted_class_counts(str(root / "prelim_stats")))
    env["NUM_IMAGE"] = str(num_image)
    check_ok(run_bash(os.path.join(SVHN, "filter_unlabel.sh"), env, "0", timeout=300))
    return root, num_image


def test_beam_equals_the_scripts(teacher_dir, unlabeled_dir, script_result, tmp_path):
    """Same multiset of records, thresholds and final stats; with 1 and with 2 local workers."""
    root, num_image = script_result
    script_records = record_multiset(str(root / "filter_data" / "data" / "train-*"))
    counts = predicted_class_counts(str(root / "prelim_stats"))
    script_thresholds = atomic_files.read_json(root / "filter_data" / "threshold.json")
    script_final = atomic_files.read_json(file_names.final_stats_path(str(root / "filter_data")))
    assert script_final["pseudo_label_accuracy"]["before_filtering"]["num_images"] == sum(
        counts.values()
    )
    written = collections.Counter()
    for record, copies in script_records.items():
        label = tf.train.Example.FromString(record).features.feature["label"]
        written[label.int64_list.value[0]] += copies
    upsampled = [c for c, n in counts.items() if 0 < n < num_image]
    downsampled = [c for c, n in counts.items() if n > num_image]
    assert upsampled and downsampled, (counts, num_image)
    for c in upsampled:  # every image kept, some twice (drawn per record)
        assert counts[c] < written[c] and max(script_records.values()) >= 2, (counts, written)
    for c in downsampled:
        assert written[c] < counts[c], (counts, written)
    for workers in (1, 2):
        out = tmp_path / f"beam{workers}"
        args = beam_flags(teacher_dir, unlabeled_dir, str(out), num_image=num_image)
        if workers == 2:
            args.append("--write_predictions")
        check_ok(
            run_beam(
                *args, f"--direct_num_workers={workers}", "--direct_running_mode=multi_threading"
            )
        )
        assert record_multiset(str(out / "data" / "train-*")) == script_records
        assert_same_thresholds_and_stats(out, script_thresholds, script_final)
    # --write_predictions: predict.sh's prediction records, the same multiset.
    assert record_multiset(str(out / "predict_label" / "train-info-*")) == record_multiset(
        str(root / "predict_label" / "*")
    )
    print(  # shown with pytest -s
        f"predicted per class {dict(sorted(counts.items()))}, NUM_IMAGE {num_image}; "
        f"written per class {dict(sorted(written.items()))}: {sum(script_records.values())} "
        f"records ({len(script_records)} distinct), thresholds "
        f"{without_provenance(script_thresholds)}; Beam with 1 and 2 workers: the same"
    )


def assert_same_thresholds_and_stats(out, script_thresholds, script_final):
    """threshold.json (provenance included) and the final stats' totals are the scripts'."""
    beam_thresholds = atomic_files.read_json(out / "threshold.json")
    assert beam_thresholds == script_thresholds
    provenance = beam_thresholds["provenance"]
    assert set(provenance) == {"checkpoint", "global_step", "fingerprint", "use_ema"}
    assert provenance["global_step"] > 0 and provenance["use_ema"] is True
    # The final stats' totals, and the pseudo labels' accuracy against the
    # records' true labels (the teacher's own training images carry them).
    beam_final = atomic_files.read_json(file_names.final_stats_path(str(out)))
    for key in ("cat_count", "total_cnt", "pseudo_label_accuracy", "provenance"):
        assert beam_final[key] == script_final[key], key


def run_installed_beam(python, cwd, *args, timeout=600):
    """`python -m beam_pseudo_label` of an installed package, in `cwd`, without PYTHONPATH."""
    return subprocess.run(
        [python, "-m", "beam_pseudo_label", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        cwd=cwd,
        env=test_package.clean_env(),
    )


def test_installed_wheel_on_worker_processes_equals_the_scripts(
    teacher_dir, unlabeled_dir, script_result, tmp_path
):
    """The wheel in a fresh virtualenv, run from another folder on 2 worker processes.

    The workers are new Python processes of that virtualenv: they import the
    installed modules only (checked: the checkout is on no path), as
    Dataflow, Flink or Spark workers that got the wheel do.
    """
    root, num_image = script_result
    python, site_packages = test_package.install_wheel(tmp_path / "package")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    for module, path in test_package.module_files(python, str(elsewhere)).items():
        assert path == os.path.join(site_packages, f"{module}.py"), (module, path)
    out = tmp_path / "beam"
    args = beam_flags(teacher_dir, unlabeled_dir, str(out), num_image=num_image)
    check_ok(
        run_installed_beam(
            python,
            str(elsewhere),
            *args,
            "--direct_num_workers=2",
            "--direct_running_mode=multi_processing",
        )
    )
    assert record_multiset(str(out / "data" / "train-*")) == record_multiset(
        str(root / "filter_data" / "data" / "train-*")
    )
    assert_same_thresholds_and_stats(
        out,
        atomic_files.read_json(root / "filter_data" / "threshold.json"),
        atomic_files.read_json(file_names.final_stats_path(str(root / "filter_data"))),
    )
    assert os.listdir(elsewhere) == []  # nothing written where it ran


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


def test_wrong_class_count_is_named_before_anything_is_written(
    teacher_dir, unlabeled_dir, tmp_path
):
    out = tmp_path / "out"
    args = beam_flags(teacher_dir, unlabeled_dir, str(out))
    args = [a for a in args if not a.startswith("--num_label_classes=")]
    result = run_beam(*args, f"--num_label_classes={NUM_CLASSES + 3}")
    assert result.returncode != 0
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith(
        f"beam_pseudo_label.py: error: --num_label_classes={NUM_CLASSES + 3}, but "
    ), result.stderr[-2000:]
    assert last.endswith(f"predicts {NUM_CLASSES} classes (its model_params.txt)")
    assert not out.exists()


def test_corrupt_record_is_named(teacher_dir, unlabeled_dir, tmp_path):
    """A truncated input file: the error names the file and the record it could not read."""
    folder = tmp_path / "in"
    folder.mkdir()
    source = sorted(tf.io.gfile.glob(os.path.join(unlabeled_dir, f"{PREFIX}-*")))[0]
    data = open(source, "rb").read()
    bad = folder / f"{PREFIX}-00000-of-00001"
    bad.write_bytes(data[: len(data) // 2])
    num_whole = sum(1 for _ in tf.data.TFRecordDataset(str(bad)).ignore_errors())
    result = run_beam(*beam_flags(teacher_dir, str(folder), str(tmp_path / "out")))
    assert result.returncode != 0
    last = result.stderr.strip().splitlines()[-1]
    assert f"{bad}: corrupt record {num_whole}:" in last, result.stderr[-3000:]
    assert last.startswith("beam_pseudo_label.py: error: ")
