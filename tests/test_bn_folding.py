"""bn_folding: the folded inference network computes what the trained one does."""

import keras
import numpy as np
import pytest
import tensorflow as tf
from conftest import TINY_OVERRIDES

import bn_folding
import checkpoints
import efficientnet_model
import train_lib


def _randomize(model, rng):
    """Gives every weight a value, batch norm statistics of the size training leaves."""
    for weight in model.weights:
        if weight.name == "moving_variance":
            value = rng.uniform(0.5, 1.5, weight.shape)
        elif weight.name == "gamma":
            value = rng.uniform(0.8, 1.2, weight.shape)
        elif weight.name in ("beta", "moving_mean"):
            value = rng.normal(0.0, 0.2, weight.shape)
        else:
            value = weight.numpy() + rng.normal(0.0, 0.01, weight.shape)
        weight.assign(value.astype(np.float32))


def _assert_folded_like(model, folded, size, rng):
    assert not any(isinstance(layer, keras.layers.BatchNormalization) for layer in folded.layers)
    assert [layer.name for layer in folded.layers] == [layer.name for layer in model.layers]
    images = rng.normal(size=(3, size, size, 3)).astype(np.float32)
    want = model(images, training=False).numpy()
    got = folded(images, training=False).numpy()
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * np.abs(want).max())


def test_folded_weights_by_hand():
    """1x1 conv (kernel 2) then batch norm: kernel 2 * g / sqrt(v + eps), bias b - m * scale."""
    inputs = keras.Input((1, 1, 1))
    conv = keras.layers.Conv2D(1, 1, use_bias=False, name="c")
    dw = keras.layers.DepthwiseConv2D(1, depth_multiplier=2, use_bias=False, name="d")
    bn1 = efficientnet_model.BatchNormalization(epsilon=0.0, name="b1")
    bn2 = keras.layers.BatchNormalization(epsilon=0.0, name="b2")
    model = keras.Model(inputs, bn2(dw(bn1(conv(inputs)))))
    conv.set_weights([np.full((1, 1, 1, 1), 2.0)])
    dw.set_weights([np.array([[[[1.0, -1.0]]]])])
    bn1.set_weights([np.array([3.0]), np.array([1.0]), np.array([0.5]), np.array([4.0])])
    bn2.set_weights([np.array([1.0, 2.0]), np.array([0.0, 1.0]), np.zeros(2), np.full(2, 0.25)])
    kernel, bias = bn_folding.folded_weights(conv, bn1)
    # scale = 3 / sqrt(4) = 1.5: kernel 2 * 1.5 = 3, bias 1 - 0.5 * 1.5 = 0.25.
    np.testing.assert_allclose(kernel.ravel(), [3.0])
    np.testing.assert_allclose(bias, [0.25])
    kernel, bias = bn_folding.folded_weights(dw, bn2)
    # scales 1 / 0.5 = 2 and 2 / 0.5 = 4 on the two multiplier channels.
    np.testing.assert_allclose(kernel.ravel(), [2.0, -4.0])
    np.testing.assert_allclose(bias, [0.0, 1.0])
    folded = bn_folding.fold_batch_norms(model)
    x = np.array([[[[5.0]]]], np.float32)
    # 5 -> 3 * 5 + 0.25 = 15.25 -> (2 * 15.25, -4 * 15.25 + 1).
    np.testing.assert_allclose(folded(x).numpy().ravel(), [30.5, -60.0], rtol=1e-6)
    np.testing.assert_allclose(model(x, training=False).numpy().ravel(), [30.5, -60.0], rtol=1e-6)


def test_unfoldable_batch_norm_is_kept():
    """A batch norm after a conv another layer also reads (or after no conv) stays."""
    inputs = keras.Input((4, 4, 2))
    x = keras.layers.Conv2D(2, 1, use_bias=False, name="c")(inputs)
    y = keras.layers.BatchNormalization(name="b")(x)
    z = keras.layers.BatchNormalization(name="b_in")(inputs)
    model = keras.Model(inputs, keras.layers.Add()([x, y, z]))
    assert bn_folding.foldable_pairs(model) == {}
    assert bn_folding.fold_batch_norms(model) is model


@pytest.mark.parametrize(
    "small_image_model,size,overrides",
    [
        (True, 32, {"width_coefficient": 0.25, "depth_coefficient": 0.25}),
        pytest.param(False, 224, {}, marks=pytest.mark.slow),
    ],
    ids=["small_image_32", "b0_224"],
)
def test_folded_efficientnet_matches(small_image_model, size, overrides):
    description = checkpoints.model_description(
        "efficientnet-b0", 10, small_image_model, overrides, size
    )
    model = checkpoints.create_model(description)
    rng = np.random.default_rng(0)
    _randomize(model, rng)
    folded = bn_folding.fold_batch_norms(model)
    num_bn = sum(isinstance(layer, keras.layers.BatchNormalization) for layer in model.layers)
    assert len(bn_folding.foldable_pairs(model)) == num_bn > 0
    _assert_folded_like(model, folded, size, rng)
    # The trained network is untouched: still its batch norms, no conv bias.
    assert (
        sum(isinstance(layer, keras.layers.BatchNormalization) for layer in model.layers) == num_bn
    )
    assert not model.get_layer("stem_conv").use_bias


def test_loaded_checkpoint_folds_its_ema_weights(tmp_path):
    """LoadedModel.inference_model is the EMA network folded, not the raw one."""
    config = train_lib.TrainConfig(
        model_dir=str(tmp_path / "model"),
        label_data_dir="",
        task_name="svhn",
        num_label_classes=10,
        input_image_size=32,
        small_image_model=True,
        override_params=dict(TINY_OVERRIDES),
    )
    state = train_lib.TrainState(config, tf.distribute.get_strategy())
    rng = np.random.default_rng(1)
    _randomize(state.model, rng)
    _randomize(state.ema_model, rng)
    train_lib.write_run_files(config, state)
    state.save()
    loaded = train_lib.load_model_dir(config)
    assert loaded.use_ema
    _assert_folded_like(state.ema_model, loaded.inference_model, 32, rng)
    assert loaded.inference_model is loaded.inference_model  # folded once
    images = rng.normal(size=(2, 32, 32, 3)).astype(np.float32)
    raw = state.model(images, training=False).numpy()
    assert np.abs(loaded.inference_model(images).numpy() - raw).max() > 1e-3


@pytest.mark.slow
@pytest.mark.slow
def test_folds_inside_a_mirrored_strategy():
    strategy = tf.distribute.MirroredStrategy(["/cpu:0"])
    description = checkpoints.model_description("efficientnet-b0", 10, True, TINY_OVERRIDES, 32)
    with strategy.scope():
        model = checkpoints.create_model(description)
    folded = bn_folding.fold_batch_norms(model)
    assert isinstance(folded.weights[0].value, tf.distribute.DistributedValues)
    images = tf.zeros([2, 32, 32, 3])
    got = strategy.run(tf.function(lambda x: folded(x, training=False)), args=(images,))
    np.testing.assert_allclose(got.numpy(), model(images, training=False).numpy(), atol=1e-5)
