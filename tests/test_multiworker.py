"""Two main.py --mode=train workers over 127.0.0.1 (MultiWorkerMirroredStrategy, CPU)."""

import json
import os
import socket
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
from conftest import ROOT, TINY_TRAIN_FLAGS

pytestmark = pytest.mark.slow

FLAGS = [
    *TINY_TRAIN_FLAGS,
    "--train_steps=4",
    "--train_batch_size=8",
    "--iterations_per_loop=2",
    "--save_checkpoints_steps=4",
]


def free_ports(n):
    sockets = [socket.socket() for _ in range(n)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def start(tiny_data, model_dir, tf_config=None, flags=FLAGS):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="")
    env.pop("TF_CONFIG", None)
    if tf_config is not None:
        env["TF_CONFIG"] = json.dumps(tf_config)
    command = [sys.executable, os.path.join(ROOT, "main.py"), *flags]
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


def two_workers(data_dir, model_dir, flags=FLAGS):
    """Runs main.py as worker 0 (chief) and worker 1 of one cluster; returns their stderr."""
    ports = free_ports(2)
    cluster = {"worker": [f"127.0.0.1:{p}" for p in ports]}
    workers = [
        start(
            data_dir, model_dir, {"cluster": cluster, "task": {"type": "worker", "index": i}}, flags
        )
        for i in range(2)
    ]
    return [finish(worker) for worker in workers]


def test_two_workers_train_in_sync(tiny_data, tmp_path):
    """Both workers exit 0; only the chief writes in model_dir; their weights agree exactly.

    The gradients are all-reduced, so every trainable weight (and its EMA) is
    the same on both workers after the steps; batch-norm moving statistics
    are per worker (local batch norm) and are not compared.
    """
    model_dir = tmp_path / "multi"
    two_workers(tiny_data, model_dir)
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


# One epoch per global batch, and no per-image randomness that depends on
# which worker reads an image: each image is one flat color (random crops,
# reflect padding and flips leave it unchanged), no RandAugment, no dropout
# or stochastic depth. Batch norm is synchronized over all replicas
# (--num_shards_per_group=-2), so one worker's batch of 8 and two workers'
# batches of 4 give the same statistics, losses and gradients.
NUM_FLAT_IMAGES = 8
EQUAL_FLAGS = [
    f
    for f in FLAGS
    if not f.startswith(("--train_steps", "--train_batch_size", "--save_checkpoints_steps"))
] + [
    "--train_steps=4",
    f"--train_batch_size={NUM_FLAT_IMAGES}",
    "--num_shards_per_group=-2",
    "--dropout_rate=0",
    "--stochastic_depth_rate=0",
    "--augment_name=none",
    f"--num_train_images={NUM_FLAT_IMAGES}",
    "--save_checkpoints_steps=2",
]


def write_flat_images(data_dir):
    import atomic_files
    import file_names
    import tfrecords

    rng = np.random.default_rng(3)
    colors = rng.integers(20, 236, (NUM_FLAT_IMAGES, 3))
    records = [
        tfrecords.labeled_example(
            tfrecords.encode_jpeg(np.full([32, 32, 3], color, np.uint8)), i % 4
        ).SerializeToString()
        for i, color in enumerate(colors)
    ]
    tfrecords.write_tfrecord(file_names.labeled_shard_path(str(data_dir), "train", 0, 1), records)
    atomic_files.write_json(os.path.join(data_dir, "dataset_info.json"), {"train": NUM_FLAT_IMAGES})


def weights_at(model_dir, step):
    reader = tf.train.load_checkpoint(os.path.join(model_dir, f"ckpt-{step}"))
    names = [n for n in reader.get_variable_to_shape_map() if "OPTIMIZER_SLOT" not in n]
    return {n: reader.get_tensor(n) for n in names if "model" in n}


@pytest.mark.e2e
def test_two_workers_equal_one_worker_with_the_same_global_batch(tmp_path):
    """Weights after 2 and 4 steps: 2 workers x 4 images = 1 worker x 8 images, to float tolerance."""
    data_dir = tmp_path / "flat"
    data_dir.mkdir()
    write_flat_images(data_dir)
    finish(start(str(data_dir), tmp_path / "single", flags=EQUAL_FLAGS))
    two_workers(str(data_dir), tmp_path / "multi", flags=EQUAL_FLAGS)
    for step in (2, 4):
        one = weights_at(tmp_path / "single", step)
        two = weights_at(tmp_path / "multi", step)
        assert one.keys() == two.keys() and len(one) > 100
        for name in one:
            np.testing.assert_allclose(
                two[name], one[name], rtol=1e-4, atol=1e-5, err_msg=f"step {step}: {name}"
            )
    # The steps moved the weights by far more than the tolerance.
    before, after = weights_at(tmp_path / "single", 2), weights_at(tmp_path / "single", 4)
    changes = [np.abs(after[n] - before[n]).max() for n in before if "kernel" in n]
    assert max(changes) > 20 * 1e-5, max(changes)
