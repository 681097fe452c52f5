"""Tests of grouped cross-replica batch norm (`--num_shards_per_group`).

The distributed checks need 4 logical CPU devices, which must be configured
before TensorFlow initializes, so this file also runs as a script in a
subprocess (`python tests/test_bn_groups.py OUT.npz`): it runs the layers under
`MirroredStrategy` and saves inputs and results; the tests compare them with
statistics computed by hand in NumPy.
"""

import functools
import json
import os
import subprocess
import sys

import numpy as np
import pytest

pytestmark = [pytest.mark.slow, pytest.mark.e2e]

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NUM_REPLICAS = 4
# Per-replica batch [3, 4, 4, 6]; replica r's values are shifted by 3 * r so
# that per-replica, per-group and global statistics are far apart.
SHAPE = (3, 4, 4, 6)
MOMENTUM = 0.5
EPSILON = 1e-3
CASES = {"group1": 1, "group2": 2, "group4": 4, "keras_sync": True, "group2_bf16": 2}
TINY = {
    "width_coefficient": 0.25,
    "depth_coefficient": 0.25,
    "dropout_rate": 0.0,
    "stochastic_depth_rate": 0.0,
}


# ---------------------------------------------------------------------------
# The subprocess.


def _run_distributed(out_path):
    import tensorflow as tf

    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(
        cpu, [tf.config.LogicalDeviceConfiguration()] * NUM_REPLICAS
    )
    # The graphs here are tiny: Grappler's rewrites would take longer than running them.
    tf.config.optimizer.set_experimental_options({"disable_meta_optimizer": True})
    import efficientnet_builder
    import efficientnet_model

    strategy = tf.distribute.MirroredStrategy([f"/cpu:{i}" for i in range(NUM_REPLICAS)])
    rng = np.random.default_rng(0)
    x = rng.normal(size=(NUM_REPLICAS, *SHAPE)).astype(np.float32)
    x += 3.0 * np.arange(NUM_REPLICAS, dtype=np.float32).reshape(-1, 1, 1, 1, 1)
    gamma = rng.uniform(0.5, 1.5, SHAPE[-1]).astype(np.float32)
    beta = rng.normal(size=SHAPE[-1]).astype(np.float32)
    per_replica_x = strategy.experimental_distribute_values_from_function(
        lambda ctx: tf.constant(x[ctx.replica_id_in_sync_group])
    )
    results = {"x": x, "gamma": gamma, "beta": beta}

    for case, sync in CASES.items():
        with strategy.scope():
            kwargs = {"synchronized": True} if sync is True else {"group_size": sync}
            # The bfloat16 case checks the statistics stay float32 under the
            # mixed policy (bfloat16 inputs and outputs).
            dtype = "mixed_bfloat16" if case.endswith("bf16") else "float32"
            bn = efficientnet_model.BatchNormalization(
                momentum=MOMENTUM, epsilon=EPSILON, dtype=dtype, **kwargs
            )
            bn.build((None, *SHAPE[1:]))
            bn.gamma.assign(gamma)
            bn.beta.assign(beta)

        @functools.partial(tf.function, autograph=False)
        def step(values, bn=bn):
            def replica_fn(xr):
                xr = tf.cast(xr, bn.compute_dtype)
                with tf.GradientTape() as tape:
                    tape.watch(xr)
                    y = bn(xr, training=True)
                    loss = tf.reduce_sum(tf.cast(y, tf.float32) ** 3)
                grad = tape.gradient(loss, xr)
                return tf.cast(y, tf.float32), tf.cast(grad, tf.float32)

            return strategy.run(replica_fn, args=(values,))

        y, grad = step(per_replica_x)
        # The values the layer saw (bfloat16-rounded in the mixed case).
        results[f"{case}/x_seen"] = tf.cast(tf.cast(x, bn.compute_dtype), tf.float32).numpy()
        results[f"{case}/y"] = np.stack([t.numpy() for t in strategy.experimental_local_results(y)])
        results[f"{case}/grad"] = np.stack(
            [t.numpy() for t in strategy.experimental_local_results(grad)]
        )
        for name in ("moving_mean", "moving_variance"):
            variable = getattr(bn, name)
            # One copy per replica (aggregation NONE): each follows its group.
            copies = variable.value.values
            results[f"{case}/{name}_copies"] = np.stack([c.numpy() for c in copies])
            results[f"{case}/{name}_read"] = variable.numpy()

    # A network (the first two stages, to keep tracing 4 replicas fast) built
    # with groups of 2, against an unsynchronized copy that sees each group's
    # examples as one batch.
    desc = efficientnet_builder.architecture_description(
        "efficientnet-b0", 10, override_params=TINY
    )
    desc.update(stages=desc["stages"][:2], num_blocks=2, head_filters=16)
    images = rng.normal(size=(NUM_REPLICAS, 2, 32, 32, 3)).astype(np.float32)
    with strategy.scope():
        grouped = efficientnet_builder.build_model_from_description(dict(desc, sync_batch_norm=2))
        grouped(tf.zeros([1, 32, 32, 3]), training=False)
    single = efficientnet_builder.build_model_from_description(desc)
    single(tf.zeros([1, 32, 32, 3]), training=False)
    single.set_weights(grouped.get_weights())
    per_replica_images = strategy.experimental_distribute_values_from_function(
        lambda ctx: tf.constant(images[ctx.replica_id_in_sync_group])
    )
    forward = tf.function(
        lambda b: strategy.run(lambda x: grouped(x, training=True), args=(b,)), autograph=False
    )
    logits = forward(per_replica_images)
    results["model/grouped"] = np.stack(
        [t.numpy() for t in strategy.experimental_local_results(logits)]
    )
    results["model/single"] = np.stack(
        [single(images[g : g + 2].reshape(4, 32, 32, 3), training=True).numpy() for g in (0, 2)]
    )
    results["model/group_sizes"] = np.array(
        [
            layer.group_size
            for layer in grouped.layers
            if isinstance(layer, efficientnet_model.BatchNormalization)
        ]
    )
    np.savez(out_path, **results)
    print(json.dumps({"replicas": strategy.num_replicas_in_sync}))


@pytest.fixture(scope="module")
def distributed(tmp_path_factory):
    out = tmp_path_factory.mktemp("bn_groups") / "results.npz"
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    proc = subprocess.run(
        [sys.executable, os.path.abspath(__file__), str(out)],
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
        cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert json.loads(proc.stdout.strip().splitlines()[-1]) == {"replicas": NUM_REPLICAS}
    with np.load(out) as data:
        return dict(data)


# ---------------------------------------------------------------------------
# NumPy oracle.


def _group_moments(x, group_size):
    """Per-replica (mean, biased variance) of each replica's group, by hand."""
    channels = x.shape[-1]
    means, variances = [], []
    for replica in range(NUM_REPLICAS):
        first = replica // group_size * group_size
        values = x[first : first + group_size].reshape(-1, channels).astype(np.float64)
        means.append(values.mean(axis=0))
        variances.append(values.var(axis=0))
    return np.array(means), np.array(variances)


def _expected_outputs_and_grads(data, group_size, case=None):
    """Batch norm with group statistics, and d/dx of sum(y^3) over all replicas."""
    x = data[f"{case}/x_seen"] if case else data["x"]
    gamma, beta = data["gamma"], data["beta"]
    mean, variance = _group_moments(x, group_size)
    x = x.astype(np.float64)
    shape = (NUM_REPLICAS, 1, 1, 1, -1)
    inv_std = 1.0 / np.sqrt(variance.reshape(shape) + EPSILON)
    x_hat = (x - mean.reshape(shape)) * inv_std
    y = x_hat * gamma + beta
    # Backprop through the group statistics: the textbook batch-norm gradient
    # with means taken over the group's examples (all of its replicas).
    dx_hat = 3.0 * y**2 * gamma
    grads = np.empty_like(x)
    for first in range(0, NUM_REPLICAS, group_size):
        rows = slice(first, first + group_size)
        axes = (0, 1, 2, 3)
        mean_dx_hat = dx_hat[rows].mean(axis=axes)
        mean_dx_hat_x_hat = (dx_hat[rows] * x_hat[rows]).mean(axis=axes)
        grads[rows] = inv_std[rows] * (dx_hat[rows] - mean_dx_hat - x_hat[rows] * mean_dx_hat_x_hat)
    return y, grads, mean, variance


def _assert_close(got, want, rtol):
    scale = np.abs(want).max()
    np.testing.assert_allclose(got, want, rtol=0, atol=rtol * scale)


# ---------------------------------------------------------------------------
# Distributed tests.


@pytest.mark.parametrize(
    "case, group_size", [("group1", 1), ("group2", 2), ("group4", 4), ("keras_sync", 4)]
)
def test_each_replica_normalizes_with_its_groups_statistics(distributed, case, group_size):
    y, grads, _, _ = _expected_outputs_and_grads(distributed, group_size, case)
    _assert_close(distributed[f"{case}/y"], y, 1e-5)
    _assert_close(distributed[f"{case}/grad"], grads, 1e-4)


def test_groups_under_mixed_bfloat16(distributed):
    # Statistics of the bfloat16 inputs, computed in float32; outputs and
    # gradients rounded to bfloat16 (8 bits of mantissa).
    y, grads, _, _ = _expected_outputs_and_grads(distributed, 2, "group2_bf16")
    _assert_close(distributed["group2_bf16/y"], y, 1e-2)
    _assert_close(distributed["group2_bf16/grad"], grads, 5e-2)


@pytest.mark.parametrize("group_size", [1, 2, 4])
def test_groups_differ(distributed, group_size):
    # The checks above discriminate: another grouping gives other outputs.
    for other in {1, 2, 4} - {group_size}:
        y_other, _, _, _ = _expected_outputs_and_grads(distributed, other)
        assert np.abs(distributed[f"group{group_size}/y"] - y_other).max() > 0.1


@pytest.mark.parametrize(
    "case, group_size",
    [("group1", 1), ("group2", 2), ("group4", 4), ("keras_sync", 4), ("group2_bf16", 2)],
)
def test_moving_statistics_follow_the_group(distributed, case, group_size):
    _, _, mean, variance = _expected_outputs_and_grads(distributed, group_size, case)
    # Initial moving mean 0 and variance 1; one update with momentum 0.5.
    want_mean = (1 - MOMENTUM) * mean
    want_var = MOMENTUM * 1.0 + (1 - MOMENTUM) * variance
    _assert_close(distributed[f"{case}/moving_mean_copies"], want_mean, 1e-5)
    _assert_close(distributed[f"{case}/moving_variance_copies"], want_var, 1e-5)
    # Reading the variable (checkpoints, evaluation) gives replica 0's copy.
    np.testing.assert_array_equal(
        distributed[f"{case}/moving_mean_read"], distributed[f"{case}/moving_mean_copies"][0]
    )
    np.testing.assert_array_equal(
        distributed[f"{case}/moving_variance_read"],
        distributed[f"{case}/moving_variance_copies"][0],
    )


def test_model_with_groups_of_two_equals_one_batch_per_group(distributed):
    assert set(distributed["model/group_sizes"]) == {2}
    grouped = distributed["model/grouped"]  # [replica, 2 examples, 10]
    single = distributed["model/single"]  # [group, 4 examples, 10]
    _assert_close(grouped.reshape(2, 4, 10), single, 1e-4)
    assert np.abs(grouped).max() > 1e-3


# ---------------------------------------------------------------------------
# In-process tests.


def _published_groups(num_shards, num_shards_per_group_flag):
    """Oracle: the published TpuBatchNormalization._moments grouping, as lists of replicas.

    Returns None where the published code raised ValueError.
    """
    if num_shards_per_group_flag != -1:
        per_group = num_shards_per_group_flag
    elif num_shards <= 8:
        per_group = 1
    else:
        per_group = max(8, num_shards // 8)
    if per_group > 1 or per_group == -2:
        if per_group > 1:
            if num_shards % per_group != 0:
                return None
            return [
                [x for x in range(num_shards) if x // per_group == y]
                for y in range(num_shards // per_group)
            ]
        return [list(range(num_shards))]
    return [[x] for x in range(num_shards)]


def test_group_size_hand_computed():
    import efficientnet_model as em

    assert em.batch_norm_group_size(1) == 1
    assert em.batch_norm_group_size(8) == 1  # <= 8 replicas: not synchronized
    assert em.batch_norm_group_size(16) == 8  # max(8, 16 // 8)
    assert em.batch_norm_group_size(64) == 8
    assert em.batch_norm_group_size(128) == 16
    assert em.batch_norm_group_size(1024) == 128
    assert em.batch_norm_group_size(4, -2) == 4
    assert em.batch_norm_group_size(4, 1) == 1
    assert em.batch_norm_group_size(4, 2) == 2
    assert em.batch_norm_group_size(8, 4) == 4


@pytest.mark.parametrize(
    "num_replicas, flag, message",
    [
        (12, -1, "groups of 8 replicas do not divide 12"),
        (4, 3, "groups of 3 replicas do not divide 4"),
        (1, 2, "groups of 2 replicas do not divide 1"),
        (0, -1, "num_replicas"),
        (4, 0, "num_shards_per_group"),
        (4, -3, "num_shards_per_group"),
    ],
)
def test_group_size_errors(num_replicas, flag, message):
    import efficientnet_model as em

    with pytest.raises(ValueError, match=message):
        em.batch_norm_group_size(num_replicas, flag)


def test_group_size_matches_published_grouping():
    import efficientnet_model as em

    for num_replicas in [*range(1, 300), 512, 1000, 1024, 2048]:
        for flag in (-2, -1, 1, 2, 4, 8, 16, 32):
            want = _published_groups(num_replicas, flag)
            if want is None:
                with pytest.raises(ValueError):
                    em.batch_norm_group_size(num_replicas, flag)
                continue
            size = em.batch_norm_group_size(num_replicas, flag)
            got = [list(range(g, g + size)) for g in range(0, num_replicas, size)]
            assert got == want, (num_replicas, flag)


def test_group_size_one_replica_is_the_local_batch():
    import keras

    import efficientnet_model as em

    x = np.random.default_rng(3).normal(size=SHAPE).astype(np.float32)
    grouped = em.BatchNormalization(group_size=4, momentum=MOMENTUM)
    plain = em.BatchNormalization(momentum=MOMENTUM)
    # One replica (no strategy): the group is the layer's own batch.
    np.testing.assert_allclose(
        grouped(x, training=True), plain(x, training=True), rtol=1e-6, atol=1e-6
    )
    np.testing.assert_allclose(grouped.moving_mean, plain.moving_mean, rtol=1e-6)
    restored = em.BatchNormalization.from_config(grouped.get_config())
    assert restored.group_size == 4
    with pytest.raises(ValueError, match="group_size"):
        em.BatchNormalization(group_size=0)
    with pytest.raises(ValueError, match="synchronized"):
        em.BatchNormalization(group_size=2, synchronized=True)
    keras.backend.clear_session()


def test_builder_accepts_bool_and_group_size():
    import json as json_lib

    import keras

    import efficientnet_builder
    import efficientnet_model as em

    def bns(sync):
        desc = efficientnet_builder.architecture_description(
            "efficientnet-b0", 10, override_params=dict(TINY, sync_batch_norm=sync)
        )
        desc = json_lib.loads(json_lib.dumps(desc))  # as read from model_params.txt
        assert desc["sync_batch_norm"] == sync and type(desc["sync_batch_norm"]) is type(sync)
        model = efficientnet_builder.build_model_from_description(desc)
        return [layer for layer in model.layers if isinstance(layer, em.BatchNormalization)]

    assert all(bn.group_size == 2 and not bn.synchronized for bn in bns(2))
    assert all(bn.group_size == 1 and bn.synchronized for bn in bns(True))
    assert all(bn.group_size == 1 and not bn.synchronized for bn in bns(False))
    assert all(bn.group_size == 1 and not bn.synchronized for bn in bns(1))
    for bad in (0, -1, 2.5, "2"):
        with pytest.raises(ValueError, match="sync_batch_norm"):
            efficientnet_builder.architecture_description(
                "efficientnet-b0", 10, override_params=dict(TINY, sync_batch_norm=bad)
            )
    keras.backend.clear_session()


if __name__ == "__main__":
    sys.path.insert(0, ROOT)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    _run_distributed(sys.argv[1])
