"""Stale locks, checkpoints rotated while read, and a bad eval_results.json.

Each case runs main.py as a user does (a subprocess) and checks its exit
status, its message and what it left in the model_dir.
"""

import errno
import glob
import os
import shutil
import subprocess
import sys

import pytest
import tensorflow as tf
from conftest import ROOT, TINY_TRAIN_FLAGS, tiny_config

import atomic_files
import run_lock
import train_lib

STRATEGY = tf.distribute.get_strategy()


def run_main(data_dir, model_dir, *args, prelude=None):
    """main.py with the tiny network; `prelude` is Python run in the process first."""
    argv = [
        "main.py",
        *TINY_TRAIN_FLAGS,
        f"--label_data_dir={data_dir}",
        f"--model_dir={model_dir}",
        "--train_batch_size=8",
        "--train_steps=1",
        *args,
    ]
    code = (
        f"import runpy, sys\nsys.path.insert(0, {ROOT!r})\n{prelude or ''}\n"
        f"sys.argv = {argv!r}\nrunpy.run_path({os.path.join(ROOT, 'main.py')!r}, "
        "run_name='__main__')\n"
    )
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=ROOT
    )


@pytest.mark.slow
@pytest.mark.e2e
def test_empty_lock_left_by_a_full_disk_is_taken_over(tiny_data, tmp_path):
    model_dir = tmp_path / "m"
    model_dir.mkdir()
    (model_dir / train_lib.LOCK_FILE).write_bytes(b"")
    out = run_main(tiny_data, model_dir)
    assert out.returncode == 0, out.stderr[-3000:]
    assert f"Taking over the lock {model_dir / train_lib.LOCK_FILE}, which is empty" in out.stderr
    assert not (model_dir / train_lib.LOCK_FILE).exists()
    assert tf.train.latest_checkpoint(str(model_dir)).endswith("ckpt-1")


@pytest.mark.parametrize("content", [b"\xff\xfe\x00garbage", b"[1, 2]", b'{"pid": "x"}'])
def test_unreadable_lock_is_taken_over(tmp_path, caplog, content):
    path = tmp_path / "lock"
    path.write_bytes(content)
    with run_lock.RunLock(str(path), "--model_dir=x"):
        assert atomic_files.read_json(str(path))["pid"] == os.getpid()
    assert "which is empty or unreadable" in caplog.text
    assert not path.exists()


def test_full_disk_while_taking_the_lock_leaves_no_lock(tmp_path, monkeypatch):
    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(run_lock.os, "fsync", full)
    with pytest.raises(OSError, match="No space left"):
        run_lock.RunLock(str(tmp_path / "lock"), "--model_dir=x").acquire()
    assert os.listdir(tmp_path) == []


@pytest.mark.slow
@pytest.mark.e2e
def test_eval_takes_the_next_checkpoint_when_training_rotates_the_one_it_reads(tiny_data, tmp_path):
    # A training with --keep_checkpoint_max=1 replaces ckpt-2 by ckpt-4 while
    # --mode=eval reads ckpt-2: here, right after eval has chosen ckpt-2 and
    # while it builds the network.
    trained = tmp_path / "trained"
    config = tiny_config(trained, tiny_data, train_steps=4, iterations_per_loop=2)
    config.save_checkpoints_steps = 2
    state = train_lib.TrainState(config, STRATEGY)
    train_lib.write_run_files(config, state)
    train_lib.train(config, STRATEGY, state=state)
    model_dir = tmp_path / "m"
    shutil.copytree(trained, model_dir)
    for path in glob.glob(str(model_dir / "ckpt-4*")):
        os.remove(path)
    with open(model_dir / "checkpoint", "w") as f:
        f.write('model_checkpoint_path: "ckpt-2"\nall_model_checkpoint_paths: "ckpt-2"\n')
    prelude = f"""
import glob, os, shutil
import checkpoints
create_model = checkpoints.create_model
def rotate_then_create(*args, **kwargs):
    if os.path.exists({str(model_dir / "ckpt-2.index")!r}):
        for path in glob.glob({str(trained / "ckpt-4*")!r}):
            shutil.copy(path, {str(model_dir)!r})
        with open({str(model_dir / "checkpoint")!r}, "w") as f:
            f.write('model_checkpoint_path: "ckpt-4"\\nall_model_checkpoint_paths: "ckpt-4"\\n')
        for path in glob.glob({str(model_dir / "ckpt-2*")!r}):
            os.remove(path)
    return create_model(*args, **kwargs)
checkpoints.create_model = rotate_then_create
"""
    out = run_main(tiny_data, model_dir, "--mode=eval", "--eval_subsets=dev", prelude=prelude)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "ckpt-2 was replaced by a newer checkpoint while it was read" in out.stderr
    results = atomic_files.read_json(str(model_dir / train_lib.EVAL_RESULTS_FILE))
    assert results["dev"]["global_step"] == 4 and results["dev"]["num_images"] == 23


@pytest.mark.slow
@pytest.mark.e2e
@pytest.mark.parametrize("content", [b"{not json", b'["a list"]'])
def test_train_and_eval_with_a_garbage_eval_results_file_fails_before_training(
    tiny_data, tmp_path, content
):
    model_dir = tmp_path / "m"
    model_dir.mkdir()
    path = model_dir / train_lib.EVAL_RESULTS_FILE
    path.write_bytes(content)
    out = run_main(tiny_data, model_dir, "--mode=train_and_eval", "--eval_subsets=dev")
    assert out.returncode != 0
    assert str(path) in out.stderr and "Move it away or delete it" in out.stderr
    assert "Traceback" not in out.stderr
    assert sorted(os.listdir(model_dir)) == [train_lib.EVAL_RESULTS_FILE]
    assert path.read_bytes() == content
