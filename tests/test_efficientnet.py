"""Tests of efficientnet_builder / efficientnet_model against keras.applications."""

import json

import keras
import numpy as np
import pytest
import tensorflow as tf

import efficientnet_builder
import efficientnet_model

KERAS_MODELS = {
    f"efficientnet-b{i}": getattr(keras.applications, f"EfficientNetB{i}") for i in range(8)
}
# One block per stage and 8..80 filters: builds and runs in well under a second.
TINY = {"width_coefficient": 0.25, "depth_coefficient": 0.25}


@pytest.fixture(autouse=True)
def _fresh_session():
    yield
    keras.backend.clear_session()


def _weighted_layers(model):
    return {layer.name: layer for layer in model.layers if layer.weights}


def _keras_normalization(model):
    (layer,) = [layer for layer in model.layers if isinstance(layer, keras.layers.Normalization)]
    return layer


@pytest.mark.slow
@pytest.mark.parametrize("model_name", sorted(KERAS_MODELS))
def test_structure_matches_keras_applications(model_name):
    ours = efficientnet_builder.build_model(model_name)
    ref = KERAS_MODELS[model_name](weights=None)
    norm = _keras_normalization(ref)
    assert ours.count_params() == ref.count_params() - norm.count_params()
    if model_name == "efficientnet-b0":
        assert ours.count_params() == 5_330_564

    ref_layers = _weighted_layers(ref)
    del ref_layers[norm.name]
    our_layers = _weighted_layers(ours)
    assert sorted(our_layers) == sorted(ref_layers)
    for name, layer in our_layers.items():
        assert [w.shape for w in layer.weights] == [w.shape for w in ref_layers[name].weights], name


def _randomize_like_trained(model, rng):
    """Gives BN non-trivial statistics/affines and biases non-zero values."""
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            c = layer.gamma.shape[0]
            layer.set_weights(
                [
                    rng.uniform(0.5, 1.5, c),
                    rng.normal(0.0, 0.2, c),
                    rng.normal(0.0, 0.2, c),
                    rng.uniform(0.5, 2.0, c),
                ]
            )
        elif isinstance(layer, (keras.layers.Conv2D, keras.layers.Dense)) and layer.use_bias:
            kernel, bias = layer.get_weights()
            layer.set_weights([kernel, rng.normal(0.0, 0.1, bias.shape)])


def _copy_by_name(src, dst):
    dst_layers = _weighted_layers(dst)
    copied = 0
    for layer in src.layers:
        if layer.weights and not isinstance(layer, keras.layers.Normalization):
            dst_layers[layer.name].set_weights(layer.get_weights())
            copied += 1
    assert copied == len(dst_layers)


@pytest.mark.parametrize(
    "model_name,size", [("efficientnet-b0", 64), ("efficientnet-b0", 57), ("efficientnet-b2", 48)]
)
def test_logits_match_keras_applications(model_name, size):
    rng = np.random.default_rng(0)
    ref = KERAS_MODELS[model_name](
        weights=None, input_shape=(size, size, 3), classifier_activation=None
    )
    # Without adapt() Keras' input Normalization is mean 0 / variance 1; check
    # it so the comparison below really is "Rescaling(1/255) then our model".
    norm = _keras_normalization(ref)
    np.testing.assert_array_equal(np.asarray(norm.mean).ravel(), 0.0)
    np.testing.assert_array_equal(np.asarray(norm.variance).ravel(), 1.0)
    _randomize_like_trained(ref, rng)
    ours = efficientnet_builder.build_model(model_name)
    _copy_by_name(ref, ours)

    pixels = rng.uniform(0, 255, (2, size, size, 3)).astype(np.float32)
    want = np.asarray(ref(pixels, training=False))
    got = np.asarray(ours(pixels * np.float32(1.0 / 255.0), training=False))
    assert got.shape == (2, 1000)
    assert np.abs(want).max() > 1e-3  # the comparison is not between zeros
    assert np.abs(got - want).max() / np.abs(want).max() < 1e-4


def test_training_mode_matches_keras_applications():
    """Batch-statistics BN (our fused kernel) and moving-average updates match Keras."""
    rng = np.random.default_rng(5)
    ref = keras.applications.EfficientNetB0(
        weights=None, input_shape=(64, 64, 3), classifier_activation=None
    )
    for layer in ref.layers:
        if isinstance(layer, keras.layers.Dropout):
            layer.rate = 0.0  # take the noise out of the comparison
    _randomize_like_trained(ref, rng)
    ours = efficientnet_builder.build_model(
        "efficientnet-b0", override_params={"dropout_rate": 0.0, "stochastic_depth_rate": 0.0}
    )
    _copy_by_name(ref, ours)

    names = ["stem_bn", "block4c_bn", "top_bn"]
    initial = {name: np.array(ours.get_layer(name).moving_variance) for name in names}
    pixels = rng.uniform(0, 255, (4, 64, 64, 3)).astype(np.float32)
    want = np.asarray(ref(pixels, training=True))
    got = np.asarray(ours(pixels * np.float32(1.0 / 255.0), training=True))
    assert np.abs(got - want).max() / np.abs(want).max() < 1e-4
    for name in names:
        ours_bn, ref_bn = ours.get_layer(name), ref.get_layer(name)
        # momentum 0.99 moves the statistics by ~1%: far above the tolerance.
        assert np.abs(np.asarray(ours_bn.moving_variance) - initial[name]).max() > 1e-3
        for var in ["moving_mean", "moving_variance"]:
            np.testing.assert_allclose(
                getattr(ours_bn, var), getattr(ref_bn, var), rtol=1e-5, atol=1e-6
            )


def test_stochastic_depth_layers_match_keras_drop_layers():
    ours = efficientnet_builder.build_model("efficientnet-b1")
    ref = keras.applications.EfficientNetB1(weights=None)

    def rates(model, cls):
        return {
            layer.name: layer.rate
            for layer in model.layers
            if isinstance(layer, cls) and layer.name.endswith("_drop")
        }

    ours_rates = rates(ours, efficientnet_model.StochasticDepth)
    assert ours_rates.keys() == rates(ref, keras.layers.Dropout).keys()
    for name, rate in rates(ref, keras.layers.Dropout).items():
        assert ours_rates[name] == pytest.approx(rate)
    # B1 has 23 blocks; block2b is block index 3 (after block1a, block1b, block2a).
    assert ours_rates["block2b_drop"] == pytest.approx(0.2 * 3 / 23)
    assert "block1a_drop" not in ours_rates  # 32 -> 16 filters: no skip
    assert "block2a_drop" not in ours_rates  # stride 2: no skip


def test_small_image_model_resolution():
    images = np.zeros((1, 32, 32, 3), np.float32)

    def feature_shapes(small):
        model = efficientnet_builder.build_model("efficientnet-b0", 10, small_image_model=small)
        names = ["stem_activation", "block2b_add", "block3b_add", "block4a_project_bn"]
        names += ["top_activation"]
        probe = keras.Model(model.input, [model.get_layer(n).output for n in names])
        return [tuple(t.shape[1:3]) for t in probe(images)], model(images).shape

    small, logits_shape = feature_shapes(True)
    # Stem stride 2 is kept; stages 2 and 3 stay at 16x16; stages 4 and 6 halve.
    assert small == [(16, 16), (16, 16), (16, 16), (8, 8), (4, 4)]
    assert logits_shape == (1, 10)
    standard, _ = feature_shapes(False)
    assert standard == [(16, 16), (8, 8), (4, 4), (2, 2), (1, 1)]

    desc = efficientnet_builder.architecture_description("efficientnet-b0", 10, True)
    assert [s["strides"] for s in desc["stages"]] == [1, 1, 1, 2, 1, 2, 1]


def test_noise_only_in_training():
    images = np.random.default_rng(1).normal(size=(8, 32, 32, 3)).astype(np.float32)
    noisy = efficientnet_builder.build_model(
        "efficientnet-b0",
        10,
        override_params=dict(TINY, depth_coefficient=1.0, stochastic_depth_rate=0.5),
    )
    assert any(isinstance(layer, efficientnet_model.StochasticDepth) for layer in noisy.layers)
    np.testing.assert_array_equal(noisy(images, training=False), noisy(images, training=False))
    assert not np.allclose(noisy(images, training=True), noisy(images, training=True))

    # Without dropout and stochastic depth, training mode (batch-statistics BN)
    # is deterministic, so the difference above comes from the noise layers.
    clean = efficientnet_builder.build_model(
        "efficientnet-b0",
        10,
        override_params=dict(TINY, stochastic_depth_rate=0.0, dropout_rate=0.0),
    )
    assert not any(
        isinstance(layer, (efficientnet_model.StochasticDepth, keras.layers.Dropout))
        for layer in clean.layers
    )
    np.testing.assert_allclose(
        clean(images, training=True), clean(images, training=True), rtol=1e-6, atol=1e-6
    )

    dropout_only = efficientnet_builder.build_model(
        "efficientnet-b0", 10, override_params=dict(TINY, stochastic_depth_rate=0.0)
    )
    assert dropout_only.get_layer("top_dropout").rate == pytest.approx(0.2)
    assert not np.allclose(dropout_only(images, training=True), dropout_only(images, training=True))


def test_stochastic_depth_layer():
    rate = 0.3
    layer = efficientnet_model.StochasticDepth(rate, seed=3)
    x = np.random.default_rng(2).uniform(1.0, 2.0, (4000, 2, 2, 3)).astype(np.float32)
    np.testing.assert_array_equal(layer(x, training=False), x)
    np.testing.assert_array_equal(layer(x), x)

    y = np.asarray(layer(x, training=True))
    dropped = np.all(y == 0, axis=(1, 2, 3))
    kept = np.all(np.isclose(y, x / (1 - rate), rtol=1e-6), axis=(1, 2, 3))
    assert np.all(dropped ^ kept)  # every example entirely dropped or entirely kept
    assert abs(kept.mean() - (1 - rate)) < 0.03  # 4000 draws: std of the mean ~0.007

    assert not np.array_equal(y, np.asarray(layer(x, training=True)))
    with pytest.raises(ValueError):
        efficientnet_model.StochasticDepth(1.0)


@pytest.mark.parametrize("dtype", ["float32", "mixed_bfloat16"])
def test_fused_batch_norm_matches_keras(dtype):
    rng = np.random.default_rng(4)
    x = rng.normal(1.0, 2.0, (4, 5, 6, 8)).astype(np.float32)
    weights = [rng.uniform(0.5, 1.5, 8), rng.normal(size=8), rng.normal(size=8)]
    weights.append(rng.uniform(0.5, 2.0, 8))
    ours = efficientnet_model.BatchNormalization(momentum=0.9, epsilon=1e-3, dtype=dtype)
    ref = keras.layers.BatchNormalization(momentum=0.9, epsilon=1e-3, dtype=dtype)
    results = []
    for layer in (ours, ref):
        layer.build(x.shape)
        layer.set_weights(weights)
        inputs = keras.ops.cast(x, layer.compute_dtype)
        with tf.GradientTape() as tape:
            tape.watch(inputs)
            y = layer(inputs, training=True)
            loss = keras.ops.sum(keras.ops.cast(y, "float32") ** 3)
        grads = tape.gradient(loss, [inputs, layer.gamma, layer.beta])
        results.append(
            [y, *grads, layer.moving_mean, layer.moving_variance, layer(inputs, training=False)]
        )
    # Statistics are float32 in both; outputs and gradients are rounded to
    # bfloat16 (8 bits of mantissa) under the mixed policy.
    tol = 1e-4 if dtype == "float32" else 1e-2
    names = ["outputs", "d_inputs", "d_gamma", "d_beta", "moving_mean", "moving_var", "inference"]
    for name, got, want in zip(names, *results, strict=True):
        got = np.asarray(keras.ops.cast(got, "float32"))
        want = np.asarray(keras.ops.cast(want, "float32"))
        rtol = 1e-5 if name.startswith("moving") else tol
        np.testing.assert_allclose(
            got, want, rtol=rtol, atol=rtol * np.abs(want).max(), err_msg=name
        )
    # The moving statistics moved by the batch mean and the biased batch variance.
    seen = np.asarray(keras.ops.cast(keras.ops.cast(x, ours.compute_dtype), "float32"))
    np.testing.assert_allclose(
        np.asarray(ours.moving_mean), 0.9 * weights[2] + 0.1 * seen.mean(axis=(0, 1, 2)), rtol=1e-5
    )
    np.testing.assert_allclose(
        np.asarray(ours.moving_variance),
        0.9 * weights[3] + 0.1 * seen.var(axis=(0, 1, 2)),
        rtol=1e-5,
    )


def test_efficientnet_params():
    assert efficientnet_builder.efficientnet_params("efficientnet-b3") == (1.2, 1.4, 300, 0.3)
    assert efficientnet_builder.efficientnet_params("efficientnet-l2") == (4.3, 5.3, 800, 0.5)
    with pytest.raises(ValueError) as err:
        efficientnet_builder.efficientnet_params("efficientnet-b9")
    for name in ["efficientnet-b0", "efficientnet-b7", "efficientnet-l2"]:
        assert name in str(err.value)


def test_override_errors():
    with pytest.raises(ValueError) as err:
        efficientnet_builder.build_model("efficientnet-b0", override_params={"dropout": 0.1})
    assert "dropout" in str(err.value)
    for key in ["dropout_rate", "stochastic_depth_rate", "width_coefficient", "sync_batch_norm"]:
        assert key in str(err.value)
    with pytest.raises(ValueError, match="efficientnet-b0"):
        efficientnet_builder.build_model("resnet-50")


def test_override_defaults_and_none_values():
    desc = efficientnet_builder.architecture_description(
        "efficientnet-b2", override_params={"dropout_rate": None, "stochastic_depth_rate": 0.3}
    )
    assert desc["dropout_rate"] == 0.3  # B2's table value, the None override is ignored
    assert desc["stochastic_depth_rate"] == 0.3
    assert desc["batch_norm_momentum"] == 0.99
    assert desc["batch_norm_epsilon"] == 1e-3
    assert desc["sync_batch_norm"] is False
    assert desc["num_classes"] == 1000
    desc = efficientnet_builder.architecture_description(
        "efficientnet-b0", 10, override_params={"num_classes": 7}
    )
    assert desc["num_classes"] == 7


def test_width_depth_rounding():
    # Hand-computed for width 0.25: 32->8, 16->4->8, 24->6->8,
    # 40->10->8 (< 90% of 10) -> 16, 80->20->24, 112->28->32, 192->48, 320->80,
    # 1280->320; depth 0.25: every stage ceil(0.25 * r) = 1 block.
    desc = efficientnet_builder.architecture_description(
        "efficientnet-b0", 10, override_params=TINY
    )
    stages = desc["stages"]
    assert desc["stem_filters"] == 8
    assert [s["input_filters"] for s in stages] == [8, 8, 8, 16, 24, 32, 48]
    assert [s["output_filters"] for s in stages] == [8, 8, 16, 24, 32, 48, 80]
    assert [s["repeats"] for s in stages] == [1] * 7
    assert desc["head_filters"] == 320
    assert desc["num_blocks"] == 7

    model = efficientnet_builder.build_model_from_description(desc)
    assert model.get_layer("stem_conv").kernel.shape == (3, 3, 3, 8)
    assert model.get_layer("block3a_expand_conv").kernel.shape == (1, 1, 8, 48)
    assert model.get_layer("block3a_dwconv").kernel.shape == (5, 5, 48, 1)
    assert model.get_layer("block3a_se_reduce").kernel.shape == (1, 1, 48, 2)  # int(8 * 0.25)
    assert model.get_layer("block3a_project_conv").kernel.shape == (1, 1, 48, 16)
    assert model.get_layer("top_conv").kernel.shape == (1, 1, 80, 320)
    assert model.get_layer("predictions").kernel.shape == (320, 10)
    assert not any(layer.name.startswith("block2b") for layer in model.layers)

    # Depth 1.1 (B1): ceil(1.1 * [1, 2, 2, 3, 3, 4, 1]); width 1.1: 32 -> 35.2 -> 32.
    desc = efficientnet_builder.architecture_description(
        "efficientnet-b0", override_params={"depth_coefficient": 1.1, "width_coefficient": 1.1}
    )
    assert [s["repeats"] for s in desc["stages"]] == [2, 3, 3, 4, 4, 5, 2]
    assert desc["stem_filters"] == 32
    assert desc["head_filters"] == 1408


def test_description_round_trip_and_deterministic_names():
    desc = efficientnet_builder.architecture_description(
        "efficientnet-b0", 10, True, override_params=dict(TINY, depth_coefficient=1.0)
    )
    restored = json.loads(json.dumps(desc))
    assert restored == desc
    first = efficientnet_builder.build_model_from_description(restored)
    second = efficientnet_builder.build_model(
        "efficientnet-b0", 10, True, dict(TINY, depth_coefficient=1.0)
    )
    assert [w.path for w in first.weights] == [w.path for w in second.weights]
    assert [layer.name for layer in first.layers] == [layer.name for layer in second.layers]
    assert "block2b_dwconv/kernel" in [w.path for w in first.weights]

    with pytest.raises(ValueError, match="stem_filters"):
        efficientnet_builder.build_model_from_description(
            {k: v for k, v in desc.items() if k != "stem_filters"}
        )
    with pytest.raises(ValueError, match="extra"):
        efficientnet_builder.build_model_from_description(dict(desc, extra=1))


def test_sync_batch_norm():
    model = efficientnet_builder.build_model(
        "efficientnet-b0", 10, override_params=dict(TINY, sync_batch_norm=True)
    )
    bns = [layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)]
    assert bns and all(bn.synchronized for bn in bns)
    assert model(np.ones((2, 32, 32, 3), np.float32), training=True).shape == (2, 10)
    default = efficientnet_builder.build_model("efficientnet-b0", 10, override_params=TINY)
    assert not any(
        layer.synchronized
        for layer in default.layers
        if isinstance(layer, keras.layers.BatchNormalization)
    )


def test_mixed_bfloat16():
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
        model = efficientnet_builder.build_model(
            "efficientnet-b0", 10, override_params=dict(TINY, stochastic_depth_rate=0.5)
        )
        images = np.ones((2, 32, 32, 3), np.float32)
        assert model.get_layer("stem_conv").compute_dtype == "bfloat16"
        assert model.get_layer("stem_conv").kernel.dtype == "float32"
        for training in (False, True):
            logits = model(images, training=training)
            assert logits.dtype == "float32"
            assert np.all(np.isfinite(logits))
    finally:
        keras.mixed_precision.set_global_policy("float32")
