"""Reproducible runs: seeds, deterministic records, and the published optimizer and batch."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
from conftest import ROOT, tiny_config

import data_input
import train_lib

pytestmark = [pytest.mark.slow, pytest.mark.e2e]

TINY_FLAGS = [
    "--use_tpu=False",
    "--use_bfloat16=False",
    "--task_name=mnist",
    "--mode=train",
    "--train_steps=4",
    "--train_batch_size=8",
    "--iterations_per_loop=2",
    "--save_checkpoints_steps=4",
    "--width_coefficient=0.1",
    "--depth_coefficient=0.1",
    "--augment_name=v1",
    "--stochastic_depth_rate=0.5",
    "--dropout_rate=0.5",
]


def run_main(*args):
    return subprocess.run(
        [sys.executable, os.path.join(ROOT, "main.py"), *args],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
    )


def checkpoint_tensors(prefix):
    reader = tf.train.load_checkpoint(prefix)
    names = [n for n in reader.get_variable_to_shape_map() if "OBJECT_GRAPH" not in n]
    return {n: reader.get_tensor(n) for n in names}


def test_same_seed_gives_identical_checkpoints(tiny_data, tmp_path):
    """Two runs with one --seed write bit-identical checkpoints; another seed differs."""
    runs = {}
    for name, extra in (
        ("a", ["--seed=0", "--deterministic"]),
        ("b", ["--seed=0", "--deterministic"]),
        ("unseeded", []),
    ):
        model_dir = tmp_path / name
        out = run_main(
            *TINY_FLAGS, f"--label_data_dir={tiny_data}", f"--model_dir={model_dir}", *extra
        )
        assert out.returncode == 0, out.stderr[-3000:]
        runs[name] = (checkpoint_tensors(str(model_dir / "ckpt-4")), out.stderr, model_dir)
    a, b, other = runs["a"][0], runs["b"][0], runs["unseeded"][0]
    assert len(a) > 100 and a.keys() == b.keys()
    differ = [n for n in a if not np.array_equal(a[n], b[n])]
    assert differ == []
    # The unseeded run drew a seed of its own, logged it and recorded it.
    seed = json.loads((runs["unseeded"][2] / "FLAGS.json").read_text())["seed"]
    assert isinstance(seed, int) and f"No --seed given: using --seed={seed}" in runs["unseeded"][1]
    weights = [n for n in a if "model/" in n and a[n].size > 1]
    assert sum(not np.array_equal(a[n], other[n]) for n in weights) > 0.9 * len(weights)


def test_input_pipeline_is_a_function_of_the_seed(tiny_data):
    """Augmented batches repeat exactly for one seed, whatever the map parallelism."""
    files = data_input.labeled_files(tiny_data, "train")

    def first_batches(seed):
        ds = data_input.make_train_dataset(
            None,
            label_files=files,
            per_replica_batch_size=8,
            image_size=32,
            small_image_model=True,
            num_classes=10,
            augment_name="v1",
            randaug_mag=10,
            unlabel_files=data_input.unlabeled_files(os.path.join(tiny_data, "unlabeled")),
            unlabel_ratio=2,
            seed=seed,
        )
        return [b["images"].numpy() for b in ds.take(3)]

    first, again, other = first_batches(5), first_batches(5), first_batches(6)
    for x, y in zip(first, again, strict=True):
        np.testing.assert_array_equal(x, y)
    assert not np.array_equal(first[0], other[0])
    # A resumed run gets other draws than the start of the run.
    assert train_lib.input_seed(5, 0) == 5 and train_lib.input_seed(5, 100) != 5


def test_unlabeled_batch_counts_label_data_sample_prob(tiny_data):
    """Unlabeled batch = ceil(batch x label_data_sample_prob x unlabel_ratio), as published."""
    assert data_input.unlabeled_batch_size(128, 5, 1.0) == 640
    assert data_input.unlabeled_batch_size(8, 3, 0.5) == 12
    assert data_input.unlabeled_batch_size(10, 0.25, 0.5) == 2  # ceil(1.25)
    assert data_input.unlabeled_batch_size(8, 0, 0.5) == 0
    ds = data_input.make_train_dataset(
        None,
        label_files=data_input.labeled_files(tiny_data, "train"),
        per_replica_batch_size=8,
        image_size=32,
        small_image_model=True,
        num_classes=10,
        unlabel_files=data_input.unlabeled_files(os.path.join(tiny_data, "unlabeled")),
        unlabel_ratio=3,
        label_data_sample_prob=0.5,
    )
    batch = next(iter(ds))
    assert batch["images"].shape[0] == 8 + 12 and batch["unl_probs"].shape[0] == 12


def test_rmsprop_starts_mean_square_at_one_as_tf1():
    """Two updates by hand with TF1's RMSPropOptimizer rule (ms starts at 1.0)."""
    lr, rho, momentum, eps = 0.1, 0.9, 0.9, 1e-3
    var = tf.Variable([1.0, -2.0, 0.5])
    optimizer = train_lib.create_optimizer(lr)
    optimizer.build([var])
    grads = [np.array([0.5, -3.0, 0.0], np.float32), np.array([1.0, 2.0, -1.0], np.float32)]
    w, ms, mom = np.array([1.0, -2.0, 0.5]), np.ones(3), np.zeros(3)
    for g in grads:
        optimizer.apply_gradients([(tf.constant(g), var)])
        ms = rho * ms + (1 - rho) * g**2
        mom = momentum * mom + lr * g / np.sqrt(ms + eps)
        w = w - mom
        np.testing.assert_allclose(var.numpy(), w, rtol=1e-6)
    # Keras' own RMSprop (ms from 0) moves the first step much further.
    keras_var = tf.Variable([1.0, -2.0, 0.5])
    import keras

    keras.optimizers.RMSprop(lr, rho=rho, momentum=momentum, epsilon=eps).apply_gradients(
        [(tf.constant(grads[0]), keras_var)]
    )
    assert abs(keras_var.numpy()[0] - 1.0) > 2 * abs(0.5 * lr / np.sqrt(0.9 + 0.025 + eps))


def test_resumed_optimizer_keeps_its_mean_square(tiny_data, tmp_path):
    """The 1.0 start is only for a fresh run: a restored accumulator is not reset."""
    config = tiny_config(tmp_path, tiny_data, train_steps=2, iterations_per_loop=2)
    state = train_lib.train(config, tf.distribute.get_strategy())
    trained = [v.numpy().copy() for v in state.optimizer._velocities]  # noqa: SLF001
    assert any(not np.allclose(v, 1.0) for v in trained)
    again = train_lib.TrainState(config, tf.distribute.get_strategy())
    again.restore_or_initialize()
    for want, got in zip(trained, again.optimizer._velocities, strict=True):  # noqa: SLF001
        np.testing.assert_array_equal(want, got.numpy())


def test_prediction_records_are_serialized_deterministically(tmp_path):
    """Record bytes do not depend on the process (protobuf map order is sorted)."""
    import tfrecords

    rng = np.random.default_rng(0)
    vectors = [rng.dirichlet(np.ones(n)).astype(np.float32) for n in (3, 1000)]
    np.save(tmp_path / "p.npy", np.array(vectors, dtype=object), allow_pickle=True)
    code = (
        "import sys, numpy as np; sys.path.insert(0, '.'); import tfrecords\n"
        f"for p in np.load({str(tmp_path / 'p.npy')!r}, allow_pickle=True):\n"
        "    print(tfrecords.prediction_example(p).SerializeToString(deterministic=True).hex())\n"
        "    print(tfrecords.pseudo_labeled_example(b'i', p).SerializeToString(deterministic=True).hex())"
    )
    outputs = set()
    for hash_seed in ("1", "2"):
        out = subprocess.run(
            [sys.executable, "-c", code],
            capture_output=True,
            text=True,
            cwd=ROOT,
            env=dict(os.environ, PYTHONHASHSEED=hash_seed),
            timeout=600,
        )
        assert out.returncode == 0, out.stderr[-2000:]
        outputs.add(out.stdout)
    assert len(outputs) == 1
    lines = [bytes.fromhex(line) for line in outputs.pop().split()]
    for i, probs in enumerate(vectors):
        prediction, pseudo = lines[2 * i], lines[2 * i + 1]
        assert tf.train.Example.FromString(pseudo) == tfrecords.pseudo_labeled_example(b"i", probs)
        assert tf.train.Example.FromString(prediction) == tfrecords.prediction_example(probs)
