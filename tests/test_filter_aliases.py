"""The published entry names keep working as thin aliases (task 7).

filter_unlabel.py -> filter_unlabel_data.py, local_scripts/svhn/svhn_offline.sh
-> run_offline.sh, local_scripts/imagenet/train_offline.sh -> run_offline.sh:
same messages, same exit status, arguments and environment passed through.
(The successful run of filter_unlabel.py is in test_filter_unlabel_data.py's
test_scripts_run_both_passes.)
"""

import os

import filter_helpers as fh
import pytest
from test_scripts import run_bash

pytestmark = [pytest.mark.slow, pytest.mark.e2e]


def test_filter_alias_fails_like_the_real_script(tmp_path):
    dirs, _ = fh.make_dataset(tmp_path, 2, 4, num_workers=1)
    os.remove(os.path.join(dirs["in"], "extra-00001-of-00002"))
    dirs["prelim"] = str(tmp_path / "no_stats_here")
    args = fh.cli_args(dirs, 2, shard_id="1")
    real = fh.run_script(args)
    alias = fh.run_script(args, "filter_unlabel.py")
    assert real.returncode == alias.returncode == 1
    message = real.stderr.strip().splitlines()[-1]
    assert message == alias.stderr.strip().splitlines()[-1]
    assert message.startswith("filter_unlabel_data.py: error: missing prelim stats for 2 of 2")


def test_filter_alias_help_lists_the_published_flags():
    """--help of both names shows the same flags (absl exits 1 after printing help)."""

    def help_flags(script):
        result = fh.run_script(["--help"], script)
        lines = result.stdout.splitlines()
        return result.returncode, [
            line.split(":")[0].replace("[no]", "") for line in lines if line.startswith("  --")
        ]

    status, listed = help_flags("filter_unlabel.py")
    assert (status, listed) == help_flags("filter_unlabel_data.py")
    published = (
        "input_dir prediction_dir info_dir prelim_stats_dir output_dir num_shards "
        "only_use_num_shards shard_id num_image total_replicas task min_threshold max_prob "
        "num_label_classes upsample only_get_stats file_prefix data_type use_top use_all"
    )
    for flag in published.split():
        assert any(entry.startswith(f"  --{flag}") for entry in listed), flag


ALIASES = [
    ("local_scripts/svhn/svhn_offline.sh", "local_scripts/svhn/run_offline.sh"),
    ("local_scripts/imagenet/train_offline.sh", "local_scripts/imagenet/run_offline.sh"),
]


@pytest.mark.parametrize("alias, real", ALIASES)
def test_offline_alias_fails_like_the_real_script(tmp_path, alias, real):
    env = dict(DATA_DIR=str(tmp_path / "missing"))
    # From another folder too: the alias finds its target next to itself.
    results = [
        run_bash(os.path.join(fh.REPO, script), env, "--train_steps=5", cwd=tmp_path)
        for script in (alias, real)
    ]
    assert results[0].returncode == results[1].returncode == 1
    assert results[0].stderr == results[1].stderr
    assert results[0].stderr.startswith(
        f"run_offline.sh: error: DATA_DIR: directory {tmp_path / 'missing'} does not exist."
    )


@pytest.mark.parametrize("alias, real", ALIASES)
def test_offline_alias_passes_arguments_and_environment(tmp_path, alias, real):
    """With a stand-in interpreter that prints its arguments, both run the same commands."""
    data, unlabeled = tmp_path / "data", tmp_path / "filtered"
    data.mkdir()
    unlabeled.mkdir()
    (unlabeled / "train-0-00000-of-00001").write_bytes(b"")
    python = tmp_path / "python"
    python.write_text('#!/bin/bash\necho "python $*"\n')
    python.chmod(0o755)
    env = dict(
        PYTHON=str(python),
        DATA_DIR=str(data),
        UNLABEL_DIR=str(unlabeled),
        MODEL_DIR=str(tmp_path / "model"),
        EXTRA_FLAGS="--iterations_per_loop=3",
    )
    outputs = []
    for script in (alias, real):
        result = run_bash(
            os.path.join(fh.REPO, script), env, "--train_steps=5", "--seed=2", cwd=fh.REPO
        )
        assert result.returncode == 0, result.stderr
        outputs.append(result.stdout)
    assert outputs[0] == outputs[1]
    commands = [line for line in outputs[0].splitlines() if line.startswith("python main.py")]
    assert commands
    for command in commands:
        assert f"--label_data_dir={data}" in command
        # The user's value comes after the settings' own, so absl keeps it.
        assert command.endswith("--iterations_per_loop=3 --train_steps=5 --seed=2")
    assert f"--unlabel_data_dir={unlabeled}" in commands[0]
    assert f"--model_dir={tmp_path / 'model'}" in commands[0]
