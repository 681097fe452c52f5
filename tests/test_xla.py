"""`--use_xla`: the XLA-compiled training step computes what the plain one does."""

import keras
import numpy as np
import pytest
import tensorflow as tf
from conftest import NUM_CLASSES, TINY_OVERRIDES, tiny_config

import train_lib

pytestmark = pytest.mark.slow

STRATEGY = tf.distribute.get_strategy()


def one_step(tmp_path, use_xla, batch):
    """One step of a fresh seeded TrainState; returns (metrics, weights before, weights after)."""
    overrides = dict(TINY_OVERRIDES, dropout_rate=0.0, stochastic_depth_rate=0.0)
    config = tiny_config(
        tmp_path / f"xla_{use_xla}", str(tmp_path), override_params=overrides, use_xla=use_xla
    )
    keras.utils.set_random_seed(0)
    state = train_lib.TrainState(config, STRATEGY)
    # Past the warm-up, so that the step moves the weights (its learning rate
    # at step 0 is 0).
    state.optimizer.iterations.assign(1000)
    before = [v.numpy() for v in state.model.weights]
    step = train_lib.make_replica_step(config, state)
    assert isinstance(step, tf.types.experimental.GenericFunction) == use_xla
    metrics = {k: float(v) for k, v in step(batch).items()}
    return metrics, before, [v.numpy() for v in state.model.weights]


def test_xla_step_matches_plain_step(tmp_path):
    rng = np.random.default_rng(0)
    batch = {
        "images": tf.constant(rng.uniform(0, 255, (8, 32, 32, 3)), tf.float32),
        "labels": tf.constant(rng.integers(0, NUM_CLASSES, 8), tf.int32),
    }
    plain_metrics, initial, plain_weights = one_step(tmp_path, False, batch)
    xla_metrics, xla_initial, xla_weights = one_step(tmp_path, True, batch)
    for a, b in zip(initial, xla_initial, strict=True):
        np.testing.assert_array_equal(a, b)
    assert xla_metrics.keys() == plain_metrics.keys()
    for name, value in plain_metrics.items():
        assert xla_metrics[name] == pytest.approx(value, rel=1e-4, abs=1e-5), name
    moved = 0
    for before, after_plain, after_xla in zip(initial, plain_weights, xla_weights, strict=True):
        np.testing.assert_allclose(after_xla, after_plain, rtol=1e-4, atol=1e-5)
        moved += not np.allclose(before, after_plain, rtol=1e-4, atol=1e-5)
    # The comparison is not vacuous: the step moved most weights (all but a
    # few batch-norm statistics of tiny magnitude).
    assert moved > 0.8 * len(initial)


def test_use_xla_default_is_off_on_cpu_and_explicit_values_win():
    assert not tf.config.list_logical_devices("GPU")
    assert train_lib.use_xla_for(None, STRATEGY) is False
    assert train_lib.use_xla_for(True, STRATEGY) is True
    assert train_lib.use_xla_for(False, STRATEGY) is False
