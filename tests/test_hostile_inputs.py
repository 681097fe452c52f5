"""Hostile or inconsistent inputs: data files are never run as code, and every
bad input stops with one message naming the file and what was expected."""

import json
import os
import sys

import pytest
from conftest import run_script
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
