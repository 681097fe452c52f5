"""The scripts' logs never follow a symlink planted where they go.

`>` follows a link and overwrites its target; each log is created new
instead (local_scripts/common.sh, new_file). Each step here fails fast on a
bad flag, after its log is written.
"""

import os

import pytest
from test_scripts import run_bash

pytestmark = [pytest.mark.slow, pytest.mark.e2e]

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VICTIM_TEXT = "the link's target: must stay as it is\n"


def plant_link(link, tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_text(VICTIM_TEXT)
    link.parent.mkdir(parents=True, exist_ok=True)
    os.symlink(victim, link)
    return victim


def assert_log_replaced_link(log, victim, message):
    assert victim.read_text() == VICTIM_TEXT
    assert not log.is_symlink() and log.is_file()
    assert message in log.read_text()


def test_loop_log_is_not_written_through_a_planted_link(tiny_data, tmp_path):
    out = tmp_path / "out"
    log = out / "logs" / "round0_teacher.log"
    victim = plant_link(log, tmp_path)
    env = {"OUT": str(out), "DATA_DIR": tiny_data, "UNLABEL_DIR": tiny_data}
    env["TEACHER_FLAGS"] = "--no_such_flag=1"
    result = run_bash("local_scripts/loop.sh", env, cwd=ROOT)
    assert result.returncode == 1 and "step round0_teacher failed" in result.stderr
    assert_log_replaced_link(log, victim, "no_such_flag")


def test_predict_worker_log_is_not_written_through_a_planted_link(tmp_path):
    data_root = tmp_path / "pseudo"
    log = data_root / "logs" / "predict-worker0.log"
    victim = plant_link(log, tmp_path)
    teacher = tmp_path / "teacher"
    teacher.mkdir()
    (teacher / "checkpoint").write_text('model_checkpoint_path: "ckpt-1"\n')
    (teacher / "ckpt-1.index").write_bytes(b"")
    unlabeled = tmp_path / "unlabeled"
    unlabeled.mkdir()
    (unlabeled / "extra-00000-of-00001").write_bytes(b"")
    env = {
        "DATA_ROOT": str(data_root),
        "TEACHER_CKPT": str(teacher),
        "UNLABEL_DIR": str(unlabeled),
        "NUM_SHARDS": "1",
        "PREDICT_FLAGS": "--no_such_flag=1",
    }
    result = run_bash("local_scripts/mnist/predict.sh", env, cwd=ROOT)
    assert result.returncode == 1 and "predict failed for 1 of 1 shards" in result.stderr
    assert_log_replaced_link(log, victim, "no_such_flag")
