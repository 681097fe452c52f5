"""Two main.py --mode=train workers over 127.0.0.1 (MultiWorkerMirroredStrategy, CPU)."""

import json
import os
import socket
import subprocess
import sys

import numpy as np
import tensorflow as tf
from conftest import ROOT

FLAGS = [
    "--mode=train",
    "--use_tpu=False",
    "--use_bfloat16=False",
    "--task_name=mnist",
    "--width_coefficient=0.1",
    "--depth_coefficient=0.1",
    "--train_steps=4",
    "--train_batch_size=8",
    "--iterations_per_loop=2",
    "--save_checkpoints_steps=4",
    "--seed=0",
]


def free_ports(n):
    sockets = [socket.socket() for _ in range(n)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def start(tiny_data, model_dir, tf_config=None):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="")
    env.pop("TF_CONFIG", None)
    if tf_config is not None:
        env["TF_CONFIG"] = json.dumps(tf_config)
    command = [sys.executable, os.path.join(ROOT, "main.py"), *FLAGS]
    command += [f"--label_data_dir={tiny_data}", f"--model_dir={model_dir}"]
    return subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
    )


def finish(process, timeout=540):
    try:
        out, err = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        out, err = process.communicate()
    assert process.returncode == 0, err[-4000:]
    return err


def weights(model_dir):
    prefix = tf.train.latest_checkpoint(str(model_dir))
    assert prefix, os.listdir(model_dir)
    reader = tf.train.load_checkpoint(prefix)
    names = [n for n in reader.get_variable_to_shape_map() if "OPTIMIZER_SLOT" not in n]
    return prefix, {n: reader.get_tensor(n) for n in names if "model" in n}


def test_two_workers_train_in_sync(tiny_data, tmp_path):
    """Both workers exit 0; only the chief writes in model_dir; their weights agree exactly.

    The gradients are all-reduced, so every trainable weight (and its EMA) is
    the same on both workers after the steps; batch-norm moving statistics
    are per worker (local batch norm) and are not compared.
    """
    ports = free_ports(2)
    cluster = {"worker": [f"127.0.0.1:{p}" for p in ports]}
    model_dir = tmp_path / "multi"
    workers = [
        start(tiny_data, model_dir, {"cluster": cluster, "task": {"type": "worker", "index": i}})
        for i in range(2)
    ]
    for worker in workers:
        finish(worker)
    chief_prefix, chief = weights(model_dir)
    scratch = model_dir / "workers"
    other_prefix, other = weights(scratch / "worker_1")
    assert os.path.basename(chief_prefix) == os.path.basename(other_prefix) == "ckpt-4"
    # Only the chief writes summaries and the checkpoints of model_dir; worker
    # 1 saves too (saving is collective), but in its scratch folder.
    assert list(model_dir.glob("*events.out.tfevents*"))
    assert not list(scratch.glob("**/events.out.tfevents*"))
    assert [p.name for p in scratch.iterdir()] == ["worker_1"]
    trained = [n for n in chief if "moving_" not in n]
    assert len(trained) > 50 and chief.keys() == other.keys()
    for name in trained:
        np.testing.assert_array_equal(chief[name], other[name], err_msg=name)
