"""TF1 (published TPUEstimator) checkpoints and convert_ckpt.py.

The fixtures write real name-based TF1 checkpoints with `tf.compat.v1`
variables and a `Saver`, named as the published code named them (spelled out
in `_published_layer_names` below, independently of the loader), holding
known weights of one of our models, with `/ExponentialMovingAverage` shadows
holding different values.
"""

import json
import os
import re
import shutil

import numpy as np
import pytest
import tensorflow as tf
from absl import flags

import checkpoints
import convert_ckpt
import efficientnet_builder
import tf1_checkpoint
import train_lib

pytestmark = pytest.mark.slow

SIZE = 32
NUM_CLASSES = 10
EMA = "/ExponentialMovingAverage"

# Layer names inside blocks_<i> of the published code, in its call order.
_EXPANDED_BLOCK = {
    "expand_conv": "conv2d",
    "expand_bn": "tpu_batch_normalization",
    "dwconv": "depthwise_conv2d",
    "bn": "tpu_batch_normalization_1",
    "se_reduce": "se/conv2d",
    "se_expand": "se/conv2d_1",
    "project_conv": "conv2d_1",
    "project_bn": "tpu_batch_normalization_2",
}
_UNEXPANDED_BLOCK = {
    "dwconv": "depthwise_conv2d",
    "bn": "tpu_batch_normalization",
    "se_reduce": "se/conv2d",
    "se_expand": "se/conv2d_1",
    "project_conv": "conv2d",
    "project_bn": "tpu_batch_normalization_1",
}
_OUTER = {
    "stem_conv": "stem/conv2d",
    "stem_bn": "stem/tpu_batch_normalization",
    "top_conv": "head/conv2d",
    "top_bn": "head/tpu_batch_normalization",
    "predictions": "head/dense",
}


def _published_layer_names(model):
    """{Keras layer name: TF1 layer path below the model scope} of the published code."""
    names = {}
    block_order = []
    for layer in model.layers:
        match = re.match(r"^(block\d+[a-z]+)_(.+)$", layer.name)
        if match and match.group(1) not in block_order:
            block_order.append(match.group(1))
    for layer in model.layers:
        if not layer.weights:
            continue
        if layer.name in _OUTER:
            names[layer.name] = _OUTER[layer.name]
            continue
        block, role = re.match(r"^(block\d+[a-z]+)_(.+)$", layer.name).groups()
        expanded = any(lay.name == f"{block}_expand_conv" for lay in model.layers)
        table = _EXPANDED_BLOCK if expanded else _UNEXPANDED_BLOCK
        names[layer.name] = f"blocks_{block_order.index(block)}/{table[role]}"
    return names


def _published_variables(model, scope, values):
    """{TF1 variable name: value} for `values` ({Keras weight path: array})."""
    layer_names = _published_layer_names(model)
    out = {}
    for layer in model.layers:
        for weight in layer.weights:
            attr = "depthwise_kernel" if layer.name.endswith("_dwconv") else weight.name
            out[f"{scope}/{layer_names[layer.name]}/{attr}"] = values[weight.path]
    return out


def write_tf1_checkpoint(prefix, variables):
    """Writes `variables` ({name: array}) as a TF1 name-based checkpoint with a Saver."""
    with tf.Graph().as_default():
        var_list = {
            # Reference variables, as TF1 made by default (and quicker to build).
            name: tf.compat.v1.Variable(value, name=f"v{i}", use_resource=False)
            for i, (name, value) in enumerate(sorted(variables.items()))
        }
        saver = tf.compat.v1.train.Saver(var_list=var_list)
        with tf.compat.v1.Session() as sess:
            sess.run(tf.compat.v1.global_variables_initializer())
            saver.save(sess, prefix, write_meta_graph=False)
    return prefix


def random_values(model, rng):
    """{weight path: value}: random kernels (He-scaled), BN statistics and biases."""
    values = {}
    for weight in model.weights:
        shape = tuple(weight.shape)
        if weight.name in ("gamma", "moving_variance"):
            value = rng.uniform(0.5, 1.5, shape)
        elif weight.name in ("beta", "moving_mean", "bias"):
            value = rng.normal(0.0, 0.2, shape)
        else:
            fan_in = (
                np.prod(shape[:-1])
                if len(shape) == 2
                else np.prod(shape[:2]) * (1 if weight.path.endswith("dwconv/kernel") else shape[2])
            )
            value = rng.normal(0.0, np.sqrt(2.0 / fan_in), shape)
        values[weight.path] = value.astype(np.float32)
    return values


def ema_of(values, rng):
    """Shadow values that differ from `values` (variances stay positive)."""
    return {k: (v * rng.uniform(0.6, 1.4, v.shape)).astype(np.float32) for k, v in values.items()}


def build(model_name, num_classes=NUM_CLASSES):
    model = efficientnet_builder.build_model(model_name, num_classes=num_classes)
    model(tf.zeros([1, SIZE, SIZE, 3]), training=False)
    return model


def set_values(model, values):
    for weight in model.weights:
        weight.assign(values[weight.path])


def logits(model, images):
    return model(images, training=False).numpy()


class Source:
    """A model with known raw and EMA weights, saved as a TF1 checkpoint.

    With `teacher`, the checkpoint also holds a teacher_model/ copy of the
    network with other values and no EMA shadows, as a noisy-student
    checkpoint of the published code does.
    """

    def __init__(self, tmp_dir, model_name, seed, teacher=False):
        rng = np.random.default_rng(seed)
        self.model_name = model_name
        self.model = build(model_name)
        self.raw = random_values(self.model, rng)
        self.ema = ema_of(self.raw, rng)
        raw = _published_variables(self.model, model_name, self.raw)
        shadows = _published_variables(self.model, model_name, self.ema)
        variables = dict(raw)
        variables.update({k + EMA: v for k, v in shadows.items()})
        if teacher:
            self.teacher = ema_of(self.raw, rng)
            variables.update(
                _published_variables(self.model, "teacher_model/" + model_name, self.teacher)
            )
        # What else a training checkpoint holds: the step and optimizer slots.
        variables["global_step"] = np.int64(1234)
        for name in list(raw)[:5]:
            variables[name + "/RMSProp"] = np.zeros_like(raw[name])
        self.dir = os.path.join(tmp_dir, f"{model_name}-{seed}")
        os.makedirs(self.dir, exist_ok=True)
        self.prefix = write_tf1_checkpoint(os.path.join(self.dir, "model.ckpt"), variables)
        self.images = rng.uniform(-2.0, 2.0, (2, SIZE, SIZE, 3)).astype(np.float32)
        set_values(self.model, self.raw)
        self.raw_logits = logits(self.model, self.images)
        set_values(self.model, self.ema)
        self.ema_logits = logits(self.model, self.images)
        if teacher:
            set_values(self.model, self.teacher)
            self.teacher_logits = logits(self.model, self.images)
        # The test only means something if the two sets of weights disagree.
        assert np.abs(self.raw_logits - self.ema_logits).max() > 1e-2


@pytest.fixture(scope="module")
def b0(tmp_path_factory):
    return Source(str(tmp_path_factory.mktemp("tf1")), "efficientnet-b0", seed=0, teacher=True)


@pytest.fixture(scope="module")
def b0_model():
    """A B0 to load into: every load overwrites all of its weights."""
    return build("efficientnet-b0")


@pytest.fixture(scope="module")
def b1(tmp_path_factory):
    return Source(str(tmp_path_factory.mktemp("tf1")), "efficientnet-b1", seed=1)


def test_published_names_of_blocks_with_and_without_expansion(b0_model):
    specs = tf1_checkpoint.variable_specs(b0_model, "efficientnet-b0")
    by_name = {s.tf1_name: (s.layer_name, s.attr, tuple(s.variable.shape)) for s in specs}
    expected = {
        "stem/conv2d/kernel": ("stem_conv", "kernel", (3, 3, 3, 32)),
        "stem/tpu_batch_normalization/moving_variance": ("stem_bn", "moving_variance", (32,)),
        # Block 0 has no expansion: its first conv is the projection.
        "blocks_0/depthwise_conv2d/depthwise_kernel": ("block1a_dwconv", "kernel", (3, 3, 32, 1)),
        "blocks_0/tpu_batch_normalization/gamma": ("block1a_bn", "gamma", (32,)),
        "blocks_0/se/conv2d/bias": ("block1a_se_reduce", "bias", (8,)),
        "blocks_0/se/conv2d_1/kernel": ("block1a_se_expand", "kernel", (1, 1, 8, 32)),
        "blocks_0/conv2d/kernel": ("block1a_project_conv", "kernel", (1, 1, 32, 16)),
        "blocks_0/tpu_batch_normalization_1/beta": ("block1a_project_bn", "beta", (16,)),
        # Block 1 expands: conv2d is the expansion, conv2d_1 the projection.
        "blocks_1/conv2d/kernel": ("block2a_expand_conv", "kernel", (1, 1, 16, 96)),
        "blocks_1/tpu_batch_normalization/gamma": ("block2a_expand_bn", "gamma", (96,)),
        "blocks_1/tpu_batch_normalization_1/gamma": ("block2a_bn", "gamma", (96,)),
        "blocks_1/conv2d_1/kernel": ("block2a_project_conv", "kernel", (1, 1, 96, 24)),
        "blocks_1/tpu_batch_normalization_2/moving_mean": (
            "block2a_project_bn",
            "moving_mean",
            (24,),
        ),
        "blocks_15/conv2d_1/kernel": ("block7a_project_conv", "kernel", (1, 1, 1152, 320)),
        "head/conv2d/kernel": ("top_conv", "kernel", (1, 1, 320, 1280)),
        "head/tpu_batch_normalization/beta": ("top_bn", "beta", (1280,)),
        "head/dense/kernel": ("predictions", "kernel", (1280, NUM_CLASSES)),
        "head/dense/bias": ("predictions", "bias", (NUM_CLASSES,)),
    }
    for name, want in expected.items():
        assert by_name["efficientnet-b0/" + name] == want, name
    assert len(specs) == len(b0_model.weights)
    assert not any("blocks_16" in n for n in by_name)


def test_b0_loads_ema_by_default_and_raw_when_opting_out(b0, b0_model):
    model = b0_model
    assert tf1_checkpoint.is_tf1_checkpoint(b0.prefix)
    # A directory works like the prefix, through the loader every flag uses.
    checkpoints.load_ema_weights(model, b0.dir, "--teacher_model_path")
    np.testing.assert_allclose(logits(model, b0.images), b0.ema_logits, rtol=1e-5, atol=1e-5)

    report = tf1_checkpoint.load_tf1_checkpoint(model, b0.prefix, use_ema=False)
    np.testing.assert_allclose(logits(model, b0.images), b0.raw_logits, rtol=1e-5, atol=1e-5)
    assert (report.num_ema, report.num_raw) == (0, len(model.weights))
    assert report.info.model_name == "efficientnet-b0"
    assert report.info.num_classes == NUM_CLASSES and report.info.num_blocks == 16


def test_depth_scaled_b1_loads(b1):
    model = build("efficientnet-b1")
    report = tf1_checkpoint.load_tf1_checkpoint(model, b1.prefix)
    np.testing.assert_allclose(logits(model, b1.images), b1.ema_logits, rtol=1e-5, atol=1e-5)
    assert report.num_ema == report.num_loaded == len(model.weights)
    assert report.info.num_blocks == 23
    assert "23 blocks" in report.summary() and "EMA" in report.summary()


def test_student_scope_preferred_over_teacher_scope(b0, b0_model):
    report = tf1_checkpoint.load_tf1_checkpoint(b0_model, b0.prefix)
    assert report.info.scope == "efficientnet-b0"
    assert report.info.all_scopes == ("efficientnet-b0", "teacher_model/efficientnet-b0")
    np.testing.assert_allclose(logits(b0_model, b0.images), b0.ema_logits, rtol=1e-5, atol=1e-5)

    # The teacher copy has no shadows: its raw values are used.
    report = tf1_checkpoint.load_tf1_checkpoint(
        b0_model, b0.prefix, scope="teacher_model/efficientnet-b0"
    )
    assert report.num_raw == len(b0_model.weights) and report.num_ema == 0
    np.testing.assert_allclose(logits(b0_model, b0.images), b0.teacher_logits, rtol=1e-5, atol=1e-5)
    # A checkpoint holding only the teacher scope falls back to it.
    assert tf1_checkpoint._scopes(["teacher_model/efficientnet-b3/stem/conv2d/kernel"]) == (
        "teacher_model/efficientnet-b3",
    )


def test_wrong_model_names_first_mismatching_variable(b0, b1, b0_model):
    model = b0_model
    before = [w.numpy() for w in model.weights]
    # B1's second block is an unexpanded 16->16 block; B0's expands 16->96.
    with pytest.raises(ValueError, match=r"'efficientnet-b1/blocks_1/conv2d/kernel' has shape"):
        checkpoints.load_ema_weights(model, b1.prefix, "--init_model_path")
    for w, value in zip(model.weights, before, strict=True):
        np.testing.assert_array_equal(w.numpy(), value)  # nothing half-loaded

    with pytest.raises(
        ValueError, match=r"'efficientnet-b0/blocks_1/depthwise_conv2d/depthwise_kernel'"
    ):
        tf1_checkpoint.load_tf1_checkpoint(b1.model, b0.prefix)


def test_directory_without_checkpoint_state_file(b0, b0_model, tmp_path):
    # Unpacked archives may lack the `checkpoint` file that names the prefix.
    for name in os.listdir(b0.dir):
        if name.startswith("model.ckpt"):
            shutil.copy(os.path.join(b0.dir, name), tmp_path / name)
    assert checkpoints.resolve_checkpoint(str(tmp_path)) == str(tmp_path / "model.ckpt")
    checkpoints.load_ema_weights(b0_model, str(tmp_path))
    np.testing.assert_allclose(logits(b0_model, b0.images), b0.ema_logits, rtol=1e-5, atol=1e-5)


def test_missing_variable_is_named(b0, b0_model, tmp_path):
    missing = "efficientnet-b0/blocks_3/se/conv2d_1/bias"
    variables = _published_variables(b0_model, "efficientnet-b0", b0.raw)
    del variables[missing]
    prefix = write_tf1_checkpoint(str(tmp_path / "model.ckpt"), variables)
    with pytest.raises(tf1_checkpoint.CheckpointMismatchError, match=f"'{missing}'.*missing"):
        tf1_checkpoint.load_tf1_checkpoint(b0_model, prefix)


def test_other_class_count_fails_unless_fine_tuning(b0, tmp_path):
    model = build("efficientnet-b0", num_classes=7)
    with pytest.raises(ValueError, match=r"'efficientnet-b0/head/dense/kernel' has shape"):
        checkpoints.load_ema_weights(model, b0.prefix, "--teacher_model_path")

    # --init_model_path skips the head and loads everything else.
    config = train_lib.TrainConfig(
        model_dir=str(tmp_path / "student"),
        label_data_dir="",
        num_label_classes=7,
        input_image_size=SIZE,
        init_model_path=b0.dir,
    )
    state = train_lib.TrainState(config, tf.distribute.get_strategy())
    head_before = state.model.get_layer("predictions").get_weights()
    state.restore_or_initialize()
    for weight in state.model.weights:
        if weight.path.startswith("predictions/"):
            continue
        np.testing.assert_array_equal(weight.numpy(), b0.ema[weight.path], err_msg=weight.path)
    for got, want in zip(
        state.model.get_layer("predictions").get_weights(), head_before, strict=True
    ):
        np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(
        state.ema_model.get_layer("top_conv").kernel.numpy(), b0.ema["top_conv/kernel"]
    )


def test_convert_tf1_checkpoint_to_model_dir(b0, tmp_path, capsys):
    out = str(tmp_path / "converted")
    flag_values = flags.FlagValues()
    convert_ckpt.define_flags(flag_values)
    flag_values(
        [
            "convert_ckpt.py",
            f"--input_path={b0.dir}",
            f"--output_dir={out}",
            f"--input_image_size={SIZE}",
        ]
    )
    assert flag_values.use_ema  # the default
    convert_ckpt.main([], flag_values)
    printed = capsys.readouterr().out
    assert "efficientnet-b0, 10 classes" in printed
    assert f"{len(b0.model.weights)} loaded, EMA" in printed

    description = checkpoints.read_model_description(out)
    assert description["model_name"] == "efficientnet-b0"
    assert description["num_classes"] == NUM_CLASSES and description["image_size"] == SIZE
    with open(os.path.join(out, train_lib.FLAGS_FILE)) as f:
        recorded = json.load(f)
    assert recorded["task_name"] == "imagenet" and recorded["converted_weights"] == "ema"

    model = checkpoints.create_model(description)
    checkpoints.load_ema_weights(model, out, "--model_dir")
    np.testing.assert_allclose(logits(model, b0.images), b0.ema_logits, rtol=1e-5, atol=1e-5)

    # This project's own checkpoints also skip a mismatched head for fine-tuning.
    seven = build("efficientnet-b0", num_classes=7)
    checkpoints.load_ema_weights(seven, out, "--init_model_path", skip_mismatched_head=True)
    np.testing.assert_array_equal(
        seven.get_layer("top_conv").kernel.numpy(), b0.ema["top_conv/kernel"]
    )

    raw_dir = str(tmp_path / "raw")
    summary = convert_ckpt.convert(b0.prefix, raw_dir, use_ema=False, input_image_size=SIZE)
    assert summary["weights"] == "raw" and summary["num_variables"] == len(b0.model.weights)
    checkpoints.load_ema_weights(model, raw_dir)
    np.testing.assert_allclose(logits(model, b0.images), b0.raw_logits, rtol=1e-5, atol=1e-5)

    with pytest.raises(FileExistsError):
        convert_ckpt.convert(b0.prefix, out)
    with pytest.raises(ValueError, match="--num_label_classes=7 but"):
        convert_ckpt.convert(b0.prefix, str(tmp_path / "x"), num_label_classes=7)


def _keras_app(include_top=True):
    import keras

    kwargs = {"classes": NUM_CLASSES, "classifier_activation": None} if include_top else {}
    return keras.applications.EfficientNetB0(
        weights=None, include_top=include_top, input_shape=(SIZE, SIZE, 3), **kwargs
    )


def test_convert_keras_weights_file(tmp_path):
    import keras

    app = _keras_app()
    rng = np.random.default_rng(7)
    for layer in app.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.set_weights(
                [rng.uniform(0.5, 1.5, w.shape).astype(np.float32) for w in layer.weights]
            )
    path = str(tmp_path / "b0.weights.h5")
    app.save_weights(path)
    assert convert_ckpt.inspect_keras_file(path) == ("efficientnet-b0", NUM_CLASSES)

    out = str(tmp_path / "from_keras")
    summary = convert_ckpt.convert(path, out, input_image_size=SIZE)
    assert (summary["model_name"], summary["num_classes"], summary["head_loaded"]) == (
        "efficientnet-b0",
        NUM_CLASSES,
        True,
    )
    assert summary["num_variables"] == len(build("efficientnet-b0").weights)

    model = checkpoints.create_model(checkpoints.read_model_description(out))
    checkpoints.load_ema_weights(model, out, "--model_dir")
    raw = rng.uniform(0, 255, (2, SIZE, SIZE, 3)).astype(np.float32)
    # Keras' EfficientNet rescales and normalizes inside; feed ours what its stem sees.
    stem_input = keras.Model(app.input, app.get_layer("stem_conv_pad").input)(raw)
    np.testing.assert_allclose(logits(model, stem_input), app(raw).numpy(), rtol=1e-4, atol=1e-4)

    # A file without classifier ("notop") is recognized as such.
    notop = str(tmp_path / "b0_notop.weights.h5")
    _keras_app(include_top=False).save_weights(notop)
    assert convert_ckpt.inspect_keras_file(notop) == ("efficientnet-b0", None)
