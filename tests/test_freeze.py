"""Tests of `efficientnet_model.freeze_first_blocks` (`--fix_layer_num`)."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import efficientnet_builder
import efficientnet_model as em

# Depth 0.5: ceil(0.5 * [1, 2, 2, 3, 3, 4, 1]) = [1, 1, 1, 2, 2, 2, 1] blocks;
# written out by hand as the oracle of the block order.
BLOCKS = [
    "block1a",
    "block2a",
    "block3a",
    "block4a",
    "block4b",
    "block5a",
    "block5b",
    "block6a",
    "block6b",
    "block7a",
]
OVERRIDES = {
    "width_coefficient": 0.25,
    "depth_coefficient": 0.5,
    "dropout_rate": 0.0,
    # High, so that an active stochastic depth layer is visible: block4b
    # (index 4 of 10) drops examples with probability 0.9 * 4 / 10 = 0.36.
    "stochastic_depth_rate": 0.9,
}


@pytest.fixture(autouse=True)
def _fresh_session():
    yield
    keras.backend.clear_session()


def _model():
    model = efficientnet_builder.build_model("efficientnet-b0", 10, override_params=OVERRIDES)
    rng = np.random.default_rng(0)
    # Moving statistics far from the batch statistics, so inference mode and
    # training mode give different outputs.
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            c = layer.gamma.shape[0]
            layer.moving_mean.assign(rng.normal(0.0, 0.5, c))
            layer.moving_variance.assign(rng.uniform(0.5, 2.0, c))
    return model


def _images(batch=16):
    return np.random.default_rng(1).normal(size=(batch, 32, 32, 3)).astype(np.float32)


def _frozen_prefixes(fix_layer_num):
    if fix_layer_num == -1:
        return ()
    return ("stem_", *(f"{name}_" for name in BLOCKS[:fix_layer_num]))


def _bn_stats(model):
    return {
        layer.name: (np.array(layer.moving_mean), np.array(layer.moving_variance))
        for layer in model.layers
        if isinstance(layer, keras.layers.BatchNormalization)
    }


def test_block_layers_in_network_order():
    model = _model()
    blocks = em.block_layers(model)
    assert [block[0].name.split("_")[0] for block in blocks] == BLOCKS
    assert [layer.name for layer in blocks[4]] == [
        f"block4b_{suffix}"
        for suffix in (
            "expand_conv",
            "expand_bn",
            "expand_activation",
            "dwconv",
            "bn",
            "activation",
            "se_squeeze",
            "se_reduce",
            "se_expand",
            "se_excite",
            "project_conv",
            "project_bn",
            "drop",
            "add",
        )
    ]


def test_block_letters_round_trip():
    # Stages with more than 26 blocks continue "ba", "bb", ... (Keras naming).
    for index in range(0, 2000):
        assert em._letters_index(em._block_letters(index)) == index


@pytest.mark.parametrize("fix_layer_num", [-1, 0, 1, 5, 10, 99])
def test_trainable_variables_exclude_exactly_the_frozen_layers(fix_layer_num):
    model = _model()
    all_trainable = [v.path for v in model.trainable_variables]
    weights_order = [v.path for v in model.weights]
    frozen_names = em.freeze_first_blocks(model, fix_layer_num)

    prefixes = _frozen_prefixes(fix_layer_num)
    assert frozen_names == [
        layer.name for layer in model.layers if prefixes and layer.name.startswith(prefixes)
    ]
    want = [path for path in all_trainable if not (prefixes and path.startswith(prefixes))]
    assert [v.path for v in model.trainable_variables] == want
    # Frozen means all of the stem's and those blocks' variables: kernels,
    # SE biases, BN gamma/beta; the head and the classifier stay trainable.
    frozen = set(all_trainable) - set(want)
    if fix_layer_num == -1:
        assert not frozen
    else:
        assert {"stem_conv/kernel", "stem_bn/gamma", "stem_bn/beta"} <= frozen
    if fix_layer_num >= 5:
        assert {"block4b_se_reduce/bias", "block4b_project_bn/beta"} <= frozen
    for path in ["top_conv/kernel", "top_bn/gamma", "predictions/kernel", "predictions/bias"]:
        assert path in want
    # The order of model.weights, which EMA and checkpoints pair up, is unchanged.
    assert [v.path for v in model.weights] == weights_order


def test_frozen_layers_run_in_inference_mode_and_keep_their_statistics():
    model = _model()
    em.freeze_first_blocks(model, 5)  # stem + block1a .. block4b
    before = _bn_stats(model)
    images = _images()

    # The output of the last frozen block: identical in training and inference
    # calls (no batch statistics, no stochastic depth in block4b).
    probe = keras.Model(model.input, model.get_layer("block4b_add").output)
    inference = np.asarray(probe(images, training=False))
    for _ in range(3):
        np.testing.assert_array_equal(np.asarray(probe(images, training=True)), inference)

    # A training step: frozen BN statistics stay, the others move; frozen
    # weights get no update.
    optimizer = keras.optimizers.SGD(learning_rate=0.1)
    weights_before = {v.path: np.array(v) for v in model.weights}
    with tf.GradientTape() as tape:
        logits = model(images, training=True)
        loss = tf.reduce_mean(tf.square(logits))
    grads = tape.gradient(loss, model.trainable_variables)
    optimizer.apply_gradients(zip(grads, model.trainable_variables, strict=True))
    after = _bn_stats(model)
    prefixes = _frozen_prefixes(5)
    for name, (mean, variance) in after.items():
        if name.startswith(prefixes):
            np.testing.assert_array_equal(mean, before[name][0], err_msg=name)
            np.testing.assert_array_equal(variance, before[name][1], err_msg=name)
        else:
            assert np.abs(variance - before[name][1]).max() > 1e-4, name
    for v in model.weights:
        unchanged = np.array_equal(np.array(v), weights_before[v.path])
        if v.path.startswith(prefixes):
            assert unchanged, v.path
    assert not np.array_equal(
        np.array(model.get_layer("top_conv").kernel), weights_before["top_conv/kernel"]
    )

    # The unfrozen part is still in training mode: batch statistics in
    # block5a, stochastic depth in block5b (rate 0.9 * 6 / 10).
    probe5 = keras.Model(model.input, model.get_layer("block5a_project_bn").output)
    assert not np.allclose(probe5(images, training=True), probe5(images, training=False))
    drop5 = keras.Model(model.input, model.get_layer("block5b_drop").output)
    dropped = np.all(np.asarray(drop5(images, training=True)) == 0, axis=(1, 2, 3))
    assert dropped.any()


def test_unfrozen_control_differs():
    # Without freezing, the same probe differs between training and inference,
    # so the equality above is due to freezing.
    model = _model()
    probe = keras.Model(model.input, model.get_layer("block4b_add").output)
    images = _images()
    assert not np.allclose(probe(images, training=True), probe(images, training=False))


def test_zero_freezes_the_stem_only():
    model = _model()
    assert em.freeze_first_blocks(model, 0) == ["stem_conv", "stem_bn", "stem_activation"]
    before = _bn_stats(model)
    images = _images()
    probe = keras.Model(model.input, model.get_layer("stem_activation").output)
    np.testing.assert_array_equal(probe(images, training=True), probe(images, training=False))
    model(images, training=True)
    after = _bn_stats(model)
    np.testing.assert_array_equal(after["stem_bn"][1], before["stem_bn"][1])
    assert np.abs(after["block1a_bn"][1] - before["block1a_bn"][1]).max() > 1e-4


def test_minus_one_freezes_nothing():
    model = _model()
    paths = [v.path for v in model.trainable_variables]
    assert em.freeze_first_blocks(model, -1) == []
    assert [v.path for v in model.trainable_variables] == paths
    assert all(layer.trainable for layer in model.layers)


def test_frozen_stochastic_depth_is_the_identity():
    layer = em.StochasticDepth(0.5, seed=0)
    x = np.ones((64, 2, 2, 3), np.float32)
    assert np.any(np.asarray(layer(x, training=True)) == 0)
    layer.trainable = False
    np.testing.assert_array_equal(layer(x, training=True), x)


def test_errors():
    with pytest.raises(ValueError, match="fix_layer_num"):
        em.freeze_first_blocks(_model(), -2)
    other = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    with pytest.raises(ValueError, match="stem_"):
        em.freeze_first_blocks(other, 3)
