"""SIGTERM/SIGINT during training: stop after the running step, save it, resume from it.

What a cloud VM sends before it stops. `main.py --mode=train` saves a
checkpoint of the step it stopped at, releases train.lock and exits with
status 75; the driver scripts pass the signal on to their children.
"""

import os
import re
import signal
import subprocess
import sys
import threading
import time

import pytest
import tensorflow as tf
from conftest import ROOT, TINY_TRAIN_FLAGS, tiny_config
from test_scripts import script_env

import atomic_files
import preemption
import train_lib

pytestmark = pytest.mark.slow

STRATEGY = tf.distribute.get_strategy()
# One compiled loop call would run all these steps: minutes, not seconds.
LONG = ["--train_steps=100000", "--iterations_per_loop=100000", "--save_checkpoints_steps=100000"]


def wait_for(predicate, timeout, what):
    deadline = time.time() + timeout
    while not predicate():
        if time.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.2)


def log_has(path, text):
    return lambda: os.path.exists(path) and text in open(path, errors="replace").read()


def test_stop_request_ends_a_compiled_loop_call_after_the_running_step(tiny_data, tmp_path):
    config = tiny_config(
        tmp_path, tiny_data, iterations_per_loop=100000, save_checkpoints_steps=100000
    )
    config.train_steps = 1000
    state = train_lib.train(config, STRATEGY, until_step=2)  # traces the loop
    assert state.step == 2
    # Set from another thread while the main thread waits in one loop call of
    # 998 steps, as preemption.StopOnSignals' watcher does.
    timer = threading.Timer(0.5, lambda: state.stop_requested.assign(True))
    start = time.time()
    timer.start()
    with pytest.raises(preemption.Preempted) as stopped:
        train_lib.train(config, STRATEGY, state=state)
    elapsed = time.time() - start
    step = stopped.value.step
    assert 2 < step < 1000 and step == state.step
    assert elapsed < 60
    assert tf.train.latest_checkpoint(str(tmp_path)).endswith(f"ckpt-{step}")
    resumed = train_lib.TrainState(config, STRATEGY)
    resumed.restore_or_initialize()
    assert resumed.step == step


def start_main(model_dir, data_dir, log_path, *args):
    log = open(log_path, "w")
    command = [
        sys.executable,
        os.path.join(ROOT, "main.py"),
        *TINY_TRAIN_FLAGS,
        f"--label_data_dir={data_dir}",
        f"--model_dir={model_dir}",
        "--train_batch_size=8",
        *args,
    ]
    return subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)


@pytest.mark.e2e
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_signal_saves_the_step_releases_the_lock_and_the_rerun_resumes(tiny_data, tmp_path, signum):
    model_dir = tmp_path / "m"
    log = str(tmp_path / "log")
    proc = start_main(model_dir, tiny_data, log, *LONG)
    try:
        wait_for(log_has(log, "Training efficientnet-b0 from step 0"), 300, "training to start")
        time.sleep(3)
        proc.send_signal(signum)
        proc.wait(timeout=600)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    text = open(log).read()
    assert proc.returncode == preemption.PREEMPTED_EXIT_CODE == 75, text[-3000:]
    assert f"{signal.Signals(signum).name} received" in text
    found = re.findall(r"preempted at step (\d+), checkpoint saved", text)
    assert len(found) == 1, text[-3000:]
    step = int(found[0])
    assert step < 100000
    assert tf.train.latest_checkpoint(str(model_dir)).endswith(f"ckpt-{step}")
    assert not (model_dir / train_lib.LOCK_FILE).exists()
    assert "Traceback" not in text
    proc = start_main(model_dir, tiny_data, log, f"--train_steps={step + 1}")
    assert proc.wait(timeout=300) == 0, open(log).read()[-3000:]
    text = open(log).read()
    assert f"Resuming from step {step} " in text
    assert tf.train.latest_checkpoint(str(model_dir)).endswith(f"ckpt-{step + 1}")


def alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie is gone for our purposes; its parent has not reaped it yet.
    with open(f"/proc/{pid}/stat") as f:
        return f.read().split(") ", 1)[1][0] != "Z"


@pytest.mark.e2e
def test_sigterm_to_loop_sh_leaves_no_orphan_and_no_lock(tiny_data, tmp_path):
    out = tmp_path / "out"
    teacher_dir = out / "round0_teacher"
    env = script_env(
        {
            "OUT": str(out),
            "DATA_DIR": tiny_data,
            "UNLABEL_DIR": tiny_data,
            "ROUNDS": "0",
            "TF_CPP_MIN_LOG_LEVEL": "2",
            "MODEL_FLAGS": "--width_coefficient=0.1 --depth_coefficient=0.1",
            "RUN_FLAGS": "--eval_subsets=dev,test --eval_batch_size=8",
            "TEACHER_FLAGS": "--train_batch_size=8 " + " ".join(LONG),
        }
    )
    command = ["bash", os.path.join(ROOT, "local_scripts/loop.sh")]
    loop = subprocess.Popen(command, env=env, cwd="/", stdout=subprocess.PIPE, text=True)
    lock = teacher_dir / train_lib.LOCK_FILE
    log = str(out / "logs" / "round0_teacher.log")
    pid = None
    try:
        wait_for(log_has(log, "Training efficientnet-b0 from step 0"), 300, "the teacher")
        pid = atomic_files.read_json(str(lock))["pid"]
        time.sleep(2)
        loop.send_signal(signal.SIGTERM)
        stdout, _ = loop.communicate(timeout=600)
    finally:
        if loop.poll() is None:
            loop.kill()
            loop.wait()
        orphan = pid is not None and alive(pid)
        if orphan:
            time.sleep(10)  # a training saving its checkpoint may still be ending
            orphan = alive(pid)
            if orphan:
                os.kill(pid, signal.SIGKILL)
    assert not orphan, "main.py outlived loop.sh"
    assert loop.returncode == 75, stdout
    assert "STOPPED" in stdout
    assert not lock.exists()
    step = int(re.findall(r"preempted at step (\d+)", open(log).read())[0])
    # The re-run resumes the teacher from that step and finishes the loop.
    env["TEACHER_FLAGS"] = f"--train_batch_size=8 --train_steps={step + 2}"
    rerun = subprocess.run(command, env=env, cwd="/", capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    assert f"Resuming from step {step} " in open(log).read()
    assert tf.train.latest_checkpoint(str(teacher_dir)).endswith(f"ckpt-{step + 2}")
