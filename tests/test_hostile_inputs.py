"""Hostile or inconsistent inputs: data files are never run as code, and every
bad input stops with one message naming the file and what was expected."""

import json
import os
import struct
import subprocess
import sys
import zlib

import numpy as np
import pytest
import tensorflow as tf
from conftest import ROOT, TINY_TRAIN_FLAGS, class_image, run_script
from test_scripts import SCRIPTS, run_bash

import task_info

TASK_INFO = {
    "splits": {"train": 4, "extra": 6},
    "num_classes": 2,
    "class_names": ["a", "b"],
    "mean_rgb": [1, 2, 3],
    "stddev_rgb": [1, 1, 1],
    "median_size": [32, 32],
    "num_files": {"extra": 1},
}


def write_info(folder, **changes):
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, task_info.DATASET_INFO_FILE)
    with open(path, "w") as f:
        json.dump(dict(TASK_INFO, **changes), f)
    return path


@pytest.mark.slow
@pytest.mark.e2e
@pytest.mark.parametrize(
    "script, args",
    [
        ("custom/predict.sh", ()),
        ("custom/train_teacher.sh", ()),
        ("custom/loop.sh", ()),
        ("custom/reassign.sh", ("--help",)),
        ("custom/filter_unlabel.sh", ("1",)),
    ],
)
@pytest.mark.parametrize("dry_run", ["0", "1"])
def test_data_file_values_are_never_run(tmp_path, script, args, dry_run):
    planted = tmp_path / "X"
    path = write_info(str(tmp_path / "data"), num_files={"extra": f"1; touch {planted}"})
    env = {"PYTHON": sys.executable, "DATA_DIR": str(tmp_path / "data"), "DRY_RUN": dry_run}
    result = run_bash(os.path.join(SCRIPTS, script), env, *args, cwd=str(tmp_path))
    assert not planted.exists()
    assert result.returncode == 1, result.stdout
    first = result.stderr.splitlines()[0]
    assert first == (
        f"task_info.py: error: {path}: num_files['extra'] is '1; touch {planted}': "
        "expected a whole number >= 1."
    )
    assert result.stdout == ""


@pytest.mark.parametrize(
    "changes, expected",
    [
        ({"num_classes": "2; id"}, "num_classes is '2; id': expected a whole number >= 1"),
        ({"splits": {"extra": 1.5}}, "splits['extra'] is 1.5: expected a whole number >= 0"),
        ({"splits": {"$(id)": 1}}, "splits has the subset name '$(id)'"),
        ({"median_size": ["32; id", 1]}, "median_size is ['32; id', 1]: expected a list of 2"),
        ({"random_flip": "yes"}, "random_flip is 'yes': expected true or false"),
    ],
)
def test_shell_settings_check_every_value(tmp_path, changes, expected):
    path = write_info(str(tmp_path), **changes)
    with pytest.raises(ValueError) as raised:
        task_info.shell_settings(str(tmp_path))
    assert str(raised.value).startswith(f"{path}: {expected}")


def test_shell_settings_of_good_data(tmp_path):
    write_info(str(tmp_path))
    assert task_info.shell_settings(str(tmp_path)).splitlines() == [
        "DATA_NUM_CLASSES=2",
        "DATA_SMALL_IMAGE=1",
        "DATA_NUM_UNLABELED=6",
        "DATA_UNLABELED_SHARDS=1",
        "DATA_EVAL_SUBSETS=train",
        "DATA_NUM_IMAGE=3",
    ]


@pytest.mark.slow
@pytest.mark.e2e
def test_filter_num_shards_must_be_positive(tmp_path):
    flag = "num_shards"
    dirs = [f"--{name}={tmp_path}/{name}" for name in ("prediction_dir", "info_dir")]
    result = run_script(
        "filter_unlabel_data.py",
        *dirs,
        f"--prelim_stats_dir={tmp_path}/stats",
        "--only_get_stats=1",
        f"--{flag}=0",
    )
    assert result.returncode == 1
    assert result.stderr.splitlines()[-1] == (
        f"filter_unlabel_data.py: error: --{flag}=0: {flag} must be positive (a whole number >= 1)"
    )
    assert os.listdir(tmp_path) == []


# ---------------------------------------------------------------------------
# TFRecords that are not what the pipelines read.


def _labeled_records(count=4):
    import tfrecords

    rng = np.random.default_rng(0)
    return [
        tfrecords.labeled_example(tfrecords.encode_jpeg(class_image(i % 10, rng)), i % 10)
        for i in range(count)
    ]


def _float_label(example):
    copy = tf.train.Example()
    copy.CopyFrom(example)
    copy.features.feature["image/class/label"].ClearField("int64_list")
    copy.features.feature["image/class/label"].float_list.value[:] = [3.0]
    return copy


def _renamed_label(example):
    copy = tf.train.Example()
    copy.CopyFrom(example)
    copy.features.feature["label"].CopyFrom(copy.features.feature.pop("image/class/label"))
    return copy


@pytest.mark.parametrize(
    "change, kind, expected",
    [
        (_float_label, "labeled", "key 'image/class/label' holds float values, expected int64"),
        (
            _renamed_label,
            "labeled",
            "key 'image/class/label' is missing (keys present: image/encoded, label)",
        ),
        (
            lambda e: e,
            "unlabeled",
            "key 'probabilities' is missing (keys present: image/class/label, image/encoded)",
        ),
    ],
)
def test_bad_record_names_file_record_and_key(tmp_path, change, kind, expected):
    import data_input
    import tfrecords

    examples = _labeled_records()
    examples[2] = change(examples[2])
    path = str(tmp_path / "train-00000-of-00001")
    tfrecords.write_tfrecord(path, (e.SerializeToString() for e in examples))
    error = data_input.locate_bad_record([path], kind, num_classes=10)
    assert (
        str(error) == f"{path}: record {0 if kind == 'unlabeled' else 2} cannot be used: {expected}"
    )


@pytest.mark.slow
@pytest.mark.e2e
def test_training_on_a_file_that_is_no_tfrecord_says_so_first(tmp_path):
    import atomic_files
    import file_names

    data_dir = tmp_path / "data"
    data_dir.mkdir()
    path = file_names.labeled_shard_path(str(data_dir), "train", 0, 1)
    with open(path, "wb") as f:
        f.write(b"a text file, not TFRecords\n" * 20)
    atomic_files.write_json(str(data_dir / "dataset_info.json"), {"train": 8})
    result = run_script(
        "main.py",
        *TINY_TRAIN_FLAGS,
        f"--label_data_dir={data_dir}",
        f"--model_dir={tmp_path}/m",
        "--train_steps=2",
        "--train_batch_size=4",
        timeout=300,
    )
    assert result.returncode == 1
    errors = [line for line in result.stderr.splitlines() if not line.startswith(("I", "W"))]
    assert errors[-1] == (
        f"main.py: error: {path}: record 0 cannot be used: not a TFRecord file "
        "(no readable record at its start)"
    )
    assert "Traceback" not in result.stderr and "Detected at node" not in result.stderr
    assert not os.path.exists(f"{tmp_path}/m/checkpoint")


# ---------------------------------------------------------------------------
# A task's classes against its labels.


def _custom_data(folder, labels, **changes):
    """Labeled train records with these 0-based `labels`, described by a dataset_info.json."""
    import file_names
    import tfrecords

    rng = np.random.default_rng(0)
    path = file_names.labeled_shard_path(str(folder), "train", 0, 1)
    os.makedirs(folder, exist_ok=True)
    tfrecords.write_tfrecord(
        path,
        (
            tfrecords.labeled_example(
                tfrecords.encode_jpeg(class_image(lab, rng)), lab
            ).SerializeToString()
            for lab in labels
        ),
    )
    info = write_info(str(folder), splits={"train": len(labels)}, num_files={"train": 1}, **changes)
    return path, info


def _train_custom(data_dir, model_dir, batch_size=4):
    return run_script(
        "main.py",
        *TINY_TRAIN_FLAGS,
        "--task_name=custom",
        f"--label_data_dir={data_dir}",
        f"--model_dir={model_dir}",
        "--train_steps=2",
        f"--train_batch_size={batch_size}",
        "--iterations_per_loop=2",
        timeout=300,
    )


@pytest.mark.slow
@pytest.mark.e2e
def test_classes_without_images_and_a_large_batch_are_warned_about(tmp_path):
    _, info = _custom_data(
        tmp_path / "data", [0, 1] * 4, num_classes=4, class_names=["a", "b", "c", "d"]
    )
    result = _train_custom(tmp_path / "data", tmp_path / "m", batch_size=16)
    assert result.returncode == 0, result.stderr[-3000:]
    warnings = [
        line.split("] ", 1)[1]
        for line in result.stderr.splitlines()
        if line.startswith("W") and "] " in line
    ]
    assert (
        "--train_batch_size=16 is larger than the labeled training set (8 images): every batch "
        "repeats images. A batch of at most 8 is usual." in warnings
    )
    assert (
        f"{info}: 2 of its 4 classes have no training image: 2 (c), 3 (d). The model will never "
        "learn them; add images, or rewrite the data with proc_folder.py if the file was edited."
        in warnings
    )
    assert os.path.exists(tmp_path / "m" / "ckpt-2.index")


@pytest.mark.slow
@pytest.mark.e2e
@pytest.mark.parametrize(
    "labels, message",
    [
        (
            [0, 1, 2, 1],
            "num_classes is 2, but {path}: record 2 cannot be used: key 'image/class/label' "
            "is 3: expected 1..2 (1-based)",
        ),
        (
            [1, 1, 1, 1],
            "every training image is of class 'b': a classifier needs images of at "
            "least 2 classes.",
        ),
    ],
)
def test_labels_that_disagree_with_the_classes_stop_training(tmp_path, labels, message):
    path, info = _custom_data(tmp_path / "data", labels)
    result = _train_custom(tmp_path / "data", tmp_path / "m")
    assert result.returncode == 1
    errors = [line for line in result.stderr.splitlines() if not line.startswith(("I", "W"))]
    assert errors[-1] == f"main.py: error: {info}: " + message.format(path=path)
    assert "Traceback" not in result.stderr and "Detected at node" not in result.stderr
    assert not os.path.exists(tmp_path / "m")


@pytest.mark.slow
@pytest.mark.e2e
@pytest.mark.parametrize(
    "changes, expected",
    [
        (
            {"num_classes": 1, "class_names": ["a"]},
            "num_classes is 1: a classifier needs at least 2 classes",
        ),
        ({"num_classes": 3}, "num_classes is 3 but class_names lists 2: the file was edited"),
    ],
)
def test_class_count_that_disagrees_with_the_file_is_an_error(tmp_path, changes, expected):
    path = write_info(str(tmp_path), **changes)
    result = run_script("task_info.py", str(tmp_path))
    assert result.returncode == 1 and result.stdout == ""
    assert result.stderr.startswith(f"task_info.py: error: {path}: {expected}")


# ---------------------------------------------------------------------------
# Checkpoints of another network.


def _wide_checkpoint(folder):
    """A checkpoint of a 0.2-wide tiny network (the tests' flags build a 0.1-wide one)."""
    import atomic_files
    import checkpoints

    description = checkpoints.model_description(
        "efficientnet-b0",
        10,
        True,
        {"width_coefficient": 0.2, "depth_coefficient": 0.1},
        32,
        task_name="mnist",
    )
    model = checkpoints.create_model(description)
    prefix = tf.train.Checkpoint(model=model, ema_model=model).write(str(folder / "ckpt-1"))
    atomic_files.write_json(str(folder / checkpoints.MODEL_PARAMS_FILE), description)
    return prefix


@pytest.mark.slow
@pytest.mark.e2e
@pytest.mark.parametrize("flag", ["init_model_path", "teacher_model_path"])
def test_checkpoint_of_another_width_is_one_message(tiny_data, tmp_path, flag):
    prefix = _wide_checkpoint(tmp_path)
    flags = [f"--{flag}={prefix}"]
    if flag == "teacher_model_path":
        # Without model_params.txt the teacher is built from the flags (0.1 wide).
        os.remove(tmp_path / "model_params.txt")
        flags += [
            "--teacher_model_name=efficientnet-b0",
            f"--unlabel_data_dir={tiny_data}/unlabeled",
            "--unlabel_ratio=1",
        ]
    result = run_script(
        "main.py",
        *TINY_TRAIN_FLAGS,
        f"--label_data_dir={tiny_data}",
        f"--model_dir={tmp_path}/student",
        "--train_steps=1",
        "--train_batch_size=4",
        *flags,
        timeout=300,
    )
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    # No warning per unmatched value of the checkpoint.
    assert sum(line.startswith("W") for line in result.stderr.splitlines()) <= 3
    message = result.stderr.splitlines()[-1]
    assert message.startswith(
        f"main.py: error: --{flag} {prefix!r} holds another network than the model "
    )
    assert message.endswith(
        "Pass the flags of the network it was trained with (--model_name, --width_coefficient, "
        "--depth_coefficient), or another checkpoint."
    )
    if flag == "init_model_path":
        assert (
            "It holds efficientnet-b0 of width_coefficient 0.2, depth_coefficient 0.1 and 10 "
            "classes (model_params.txt)." in message
        )
    assert not os.path.exists(f"{tmp_path}/student/checkpoint")


# ---------------------------------------------------------------------------
# A huge image among the class folders.


def _write_large_png(path, width, height):
    """A valid grey RGB PNG, compressed row by row (never whole in memory)."""

    def chunk(kind, data):
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    compressor = zlib.compressobj(1)
    row = b"\x00" + b"\x80" * (3 * width)
    data = b"".join(compressor.compress(row) for _ in range(height)) + compressor.flush()
    with open(path, "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n")
        f.write(chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)))
        f.write(chunk(b"IDAT", data))
        f.write(chunk(b"IEND", b""))


# Runs proc_folder.py and prints its peak resident memory (KiB, Linux) last.
# The peak resident memory of the process itself in KiB: VmHWM of its own
# address space. ru_maxrss would also count the forking parent's (pytest's)
# resident memory, which Linux carries over to the child at exec.
_MEASURED_PROC_FOLDER = """
import runpy, sys
sys.argv = sys.argv[1:]
try:
    runpy.run_path(sys.argv[0], run_name="__main__")
finally:
    with open("/proc/self/status") as f:
        hwm = next(line.split()[1] for line in f if line.startswith("VmHWM:"))
    print(hwm, file=sys.stderr)
"""


@pytest.mark.slow
@pytest.mark.e2e
def test_proc_folder_skips_a_huge_image_without_decoding_it(tmp_path):
    from PIL import Image

    rng = np.random.default_rng(0)
    for label in range(2):
        os.makedirs(tmp_path / "labeled" / f"c{label}")
        for i in range(3):
            Image.fromarray(class_image(label, rng)).save(
                tmp_path / "labeled" / f"c{label}/{i}.png"
            )
    huge = tmp_path / "labeled" / "c1" / "huge.png"
    _write_large_png(huge, 8000, 8000)
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            _MEASURED_PROC_FOLDER,
            os.path.join(ROOT, "proc_folder.py"),
            f"--labeled_dir={tmp_path}/labeled",
            f"--output_dir={tmp_path}/out",
            "--num_workers=1",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert (tmp_path / "out" / "skipped.txt").read_text() == (
        f"{huge}\ttoo large: 8000x8000 = 64,000,000 pixels, more than the 40,000,000 "
        "proc_folder.py takes (MAX_IMAGE_PIXELS); downscale it\n"
    )
    info = json.loads((tmp_path / "out" / "dataset_info.json").read_text())
    assert info["splits"] == {"train": 6} and info["median_size"] == [32.0, 32.0]
    # Decoding it would take 192 MB for the pixels alone, and the statistics'
    # float64 copies 3 GB: the run stays at what TensorFlow's import takes.
    peak_mb = int(result.stderr.splitlines()[-1]) / 1024
    assert peak_mb < 1500, peak_mb


@pytest.mark.slow
@pytest.mark.e2e
def test_defaults_read_task_info_output_as_data_only(tmp_path):
    """Even lines that task_info.py would never print are not run by the shell."""
    planted = tmp_path / "X"
    write_info(str(tmp_path / "data"))
    fake = tmp_path / "python"
    fake.write_text(f"#!/bin/sh\necho 'DATA_UNLABELED_SHARDS=1; touch {planted}'\n")
    fake.chmod(0o755)
    env = {"PYTHON": str(fake), "DATA_DIR": str(tmp_path / "data"), "DRY_RUN": "1"}
    result = run_bash(os.path.join(SCRIPTS, "custom/predict.sh"), env, cwd=str(tmp_path))
    assert not planted.exists()
    assert result.returncode == 1 and result.stdout == ""
    assert result.stderr == (
        f"predict.sh: error: {tmp_path}/data/dataset_info.json: unexpected setting "
        f"'DATA_UNLABELED_SHARDS=1; touch {planted}' from task_info.py.\n"
    )
