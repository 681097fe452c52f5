"""main.py --mode=export: SavedModel signatures and the .keras file round trip."""

import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf
from conftest import TINY_OVERRIDES

import checkpoints
import efficientnet_model
import export_lib
import preprocessing
import task_info
import tfrecords
import train_lib

pytestmark = [pytest.mark.slow, pytest.mark.e2e]

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SIZE = 64
NUM_CLASSES = 7


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """A tiny ImageNet-style model_dir whose EMA and raw weights differ, exported by main.py."""
    root = tmp_path_factory.mktemp("export")
    config = train_lib.TrainConfig(
        model_dir=str(root / "model"),
        label_data_dir="",
        task_name="imagenet",
        num_label_classes=NUM_CLASSES,
        input_image_size=SIZE,
        override_params=dict(TINY_OVERRIDES),
    )
    state = train_lib.TrainState(config, tf.distribute.get_strategy())
    rng = np.random.default_rng(0)
    for model in (state.model, state.ema_model):
        for weight in model.weights:
            value = rng.normal(0.0, 0.5, weight.shape)
            if weight.name == "moving_variance":
                value = np.abs(value) + 0.5
            weight.assign(value.astype(np.float32))
    train_lib.write_run_files(config, state)
    state.save()
    export_dir = str(root / "exported")
    # The published default --use_bfloat16=True must not leak into the export.
    result = subprocess.run(
        [
            sys.executable,
            "main.py",
            "--mode=export",
            f"--model_dir={config.model_dir}",
            f"--export_dir={export_dir}",
            "--use_tpu=False",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
        env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"),
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return config, state, export_dir


def reference(model, images):
    info = task_info.get_task_info("imagenet")
    logits = model(preprocessing.normalize_image(images, info.mean_rgb, info.stddev_rgb))
    return tf.nn.softmax(logits).numpy()


def test_serving_default_matches_in_memory_ema_model(exported):
    _, state, export_dir = exported
    loaded = tf.saved_model.load(export_dir)
    assert set(loaded.signatures) == {"serving_default", "serving_bytes"}
    serve = loaded.signatures["serving_default"]
    spec = serve.structured_input_signature[1]["images"]
    assert spec.shape.as_list() == [None, SIZE, SIZE, 3] and spec.dtype == tf.float32

    images = np.random.default_rng(1).uniform(0, 255, (5, SIZE, SIZE, 3)).astype(np.float32)
    out = serve(images=tf.constant(images))
    assert out["probabilities"].shape == (5, NUM_CLASSES)
    assert out["classes"].dtype == tf.int64
    want = reference(state.ema_model, images)
    np.testing.assert_allclose(out["probabilities"].numpy(), want, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(out["classes"].numpy(), want.argmax(-1))
    # EMA, not the raw student, was exported.
    assert np.abs(reference(state.model, images) - want).max() > 1e-3


def test_signatures_restore_in_a_tf1_session_like_tf_serving(exported):
    # TF Serving and saved_model_cli restore variables by name in a graph
    # session, not through tf.saved_model.load's object graph.
    _, state, export_dir = exported
    images = np.random.default_rng(4).uniform(0, 255, (2, SIZE, SIZE, 3)).astype(np.float32)
    with tf.Graph().as_default(), tf.compat.v1.Session() as sess:
        meta = tf.compat.v1.saved_model.loader.load(sess, ["serve"], export_dir)
        signature = meta.signature_def["serving_default"]
        fetch = signature.outputs["probabilities"].name
        feed = {signature.inputs["images"].name: images}
        probabilities = sess.run(fetch, feed_dict=feed)
    np.testing.assert_allclose(
        probabilities, reference(state.ema_model, images), rtol=1e-5, atol=1e-6
    )


def test_serving_bytes_applies_eval_preprocessing(exported):
    _, state, export_dir = exported
    serve = tf.saved_model.load(export_dir).signatures["serving_bytes"]
    rng = np.random.default_rng(2)
    encoded = [
        tfrecords.encode_jpeg(rng.integers(0, 255, (80, 96, 3)).astype(np.uint8)),
        tf.io.encode_png(rng.integers(0, 255, (70, 50, 3)).astype(np.uint8)).numpy(),
    ]
    out = serve(image_bytes=tf.constant(encoded))
    images = np.stack(
        [preprocessing.preprocess_image(b, is_training=False, image_size=SIZE) for b in encoded]
    )
    want = reference(state.ema_model, images)
    np.testing.assert_allclose(out["probabilities"].numpy(), want, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(out["classes"].numpy(), want.argmax(-1))


def test_keras_file_reloads_and_export_info(exported):
    _, state, export_dir = exported
    model = keras.saving.load_model(os.path.join(export_dir, export_lib.KERAS_FILE))
    assert model.dtype_policy.name == "float32"
    assert isinstance(model.get_layer("stem_bn"), efficientnet_model.BatchNormalization)
    normalized = np.random.default_rng(3).normal(size=(2, SIZE, SIZE, 3)).astype(np.float32)
    np.testing.assert_allclose(
        model(normalized).numpy(), state.ema_model(normalized).numpy(), rtol=1e-5, atol=1e-5
    )
    with open(os.path.join(export_dir, export_lib.EXPORT_INFO_FILE)) as f:
        info = json.load(f)
    assert info["weights"] == "ema" and info["task_name"] == "imagenet"
    assert info["num_classes"] == NUM_CLASSES and info["image_size"] == SIZE
    assert info["checkpoint"].endswith("ckpt-0")


def test_recorded_task_wins_and_export_dir_required(exported):
    config, _, _ = exported
    # The weights were trained with the model_dir's task normalization.
    loaded = checkpoints.load_model(config.model_dir, what="--model_dir", default_task_name="mnist")
    assert loaded.description["task_name"] == "imagenet"
    assert loaded.mean_rgb == task_info.get_task_info("imagenet").mean_rgb
    with pytest.raises(ValueError, match="--export_dir"):
        export_lib.export(config, None)


def test_raw_weights_opt_out_for_project_checkpoints(exported):
    config, state, _ = exported
    model = checkpoints.create_model(checkpoints.read_model_description(config.model_dir))
    checkpoints.load_ema_weights(model, config.model_dir, use_ema=False)
    for got, want in zip(model.weights, state.model.weights, strict=True):
        np.testing.assert_array_equal(got.numpy(), want.numpy())
    checkpoints.load_ema_weights(model, config.model_dir)
    for got, want in zip(model.weights, state.ema_model.weights, strict=True):
        np.testing.assert_array_equal(got.numpy(), want.numpy())
