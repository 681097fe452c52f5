"""--mixed_precision: float16 with dynamic loss scaling, checked on the CPU."""

import inspect
import json
import os
import subprocess
import sys
import types

import keras
import numpy as np
import pytest
import tensorflow as tf
from conftest import NUM_CLASSES, ROOT, TINY_OVERRIDES, class_image, tiny_config

import efficientnet_model
import precision
import train_lib

SCALE = "loss_scale/scale/.ATTRIBUTES/VARIABLE_VALUE"
GOOD_STEPS = "loss_scale/good_steps/.ATTRIBUTES/VARIABLE_VALUE"
# No dropout or stochastic depth: the float32 and float16 steps see the same network.
NO_NOISE = {**TINY_OVERRIDES, "dropout_rate": 0.0, "stochastic_depth_rate": 0.0}


@pytest.fixture
def policy():
    """Sets Keras' global policy for one test and restores float32 after it."""
    yield train_lib.set_precision
    keras.mixed_precision.set_global_policy("float32")


def batch(size=16, seed=0):
    rng = np.random.default_rng(seed)
    labels = np.arange(size) % NUM_CLASSES
    images = np.stack([class_image(int(label), rng) for label in labels]).astype(np.float32)
    return {"images": tf.constant(images), "labels": tf.constant(labels, tf.int32)}


def run_steps(state, config, num_steps, data):
    """`num_steps` steps of the real training loop (step, EMA) on `data`; returns its metrics."""
    loop = train_lib.make_train_loop(config, state)
    iterator = iter(tf.data.Dataset.from_tensors(data).repeat())
    return {k: float(v) for k, v in loop(iterator, tf.constant(num_steps)).items()}


def values(variables):
    return [np.array(v.numpy()) for v in variables]


def float16_state(tmp_path, policy, **kwargs):
    policy("float16")
    config = tiny_config(
        tmp_path, "", override_params=dict(NO_NOISE), mixed_precision="float16", **kwargs
    )
    state = train_lib.TrainState(config, tf.distribute.get_strategy())
    state.restore_or_initialize()
    return config, state


# --- The flags -----------------------------------------------------------------


@pytest.mark.parametrize(
    "mixed_precision, use_bfloat16, given, expected",
    [
        (None, True, False, "bfloat16"),  # the published default
        (None, False, True, "float32"),
        ("float16", True, False, "float16"),  # --use_bfloat16 left at its default
        ("float16", False, True, "float16"),  # the scripts' --use_bfloat16=False
        ("float32", False, True, "float32"),
        ("bfloat16", True, True, "bfloat16"),
        ("bfloat16", False, True, "bfloat16"),  # the scripts' flag declines only the default
    ],
)
def test_precision_from_the_flags(mixed_precision, use_bfloat16, given, expected):
    assert precision.resolve_precision(mixed_precision, use_bfloat16, given) == expected


def test_precision_sets_the_keras_policy(policy):
    for value, name in [
        ("float32", "float32"),
        ("bfloat16", "mixed_bfloat16"),
        ("float16", "mixed_float16"),
    ]:
        policy(value)
        assert keras.mixed_precision.global_policy().name == name


@pytest.mark.slow
@pytest.mark.e2e
@pytest.mark.parametrize(
    "flags",
    [
        ["--use_bfloat16=True", "--mixed_precision=float16"],
        ["--use_bfloat16=True", "--mixed_precision=float32"],
    ],
)
def test_contradicting_flags_are_a_usage_error(flags, tmp_path):
    command = [sys.executable, os.path.join(ROOT, "main.py"), "--use_tpu=False", "--mode=train"]
    command += ["--task_name=mnist", f"--model_dir={tmp_path}/m", *flags]
    out = subprocess.run(command, capture_output=True, text=True, timeout=600, check=False)
    assert out.returncode == 1, out.stderr[-3000:]
    value = flags[1].split("=")[1]
    message = f"--mixed_precision={value} contradicts {flags[0]}"
    assert message in out.stderr, out.stderr[-3000:]
    # A usage error (its message last, after the usage) before TensorFlow is
    # imported (no oneDNN or CUDA lines); nothing was written.
    assert out.stderr.strip().splitlines()[-1].startswith(message)
    assert not any(word in out.stderr for word in ("Traceback", "oneDNN", "cuda", "CUDA"))
    assert not (tmp_path / "m").exists()


@pytest.mark.slow
@pytest.mark.e2e
def test_unknown_precision_is_refused_by_the_flag(tmp_path):
    command = [sys.executable, os.path.join(ROOT, "main.py"), "--use_tpu=False"]
    command += ["--mixed_precision=float8", f"--model_dir={tmp_path}/m"]
    out = subprocess.run(command, capture_output=True, text=True, timeout=600, check=False)
    assert out.returncode == 1
    message = "--mixed_precision=float8: value should be one of <float32|bfloat16|float16>"
    assert message in out.stderr, out.stderr[-2000:]


# --- The loss scale -------------------------------------------------------------


def test_loss_scale_defaults_are_keras():
    keras_defaults = inspect.signature(keras.optimizers.LossScaleOptimizer).parameters
    assert train_lib.INITIAL_LOSS_SCALE == keras_defaults["initial_scale"].default == 2.0**15
    assert train_lib.LOSS_SCALE_GROWTH_STEPS == keras_defaults["dynamic_growth_steps"].default
    assert train_lib.LOSS_SCALE_GROWTH_STEPS == 2000


def test_loss_scale_halves_on_overflow_and_doubles_after_growth_steps():
    scale = train_lib.DynamicLossScale(initial_scale=8.0, growth_steps=3)
    trace = []
    for finite in [True, True, True, True, False, True, True, False, False]:
        scale.update(tf.constant(finite))
        trace.append((float(scale.scale.numpy()), int(scale.good_steps.numpy())))
    assert trace == [
        (8.0, 1),
        (8.0, 2),
        (16.0, 0),  # the third finite step in a row doubles
        (16.0, 1),
        (8.0, 0),  # a non-finite step halves and restarts the count
        (8.0, 1),
        (8.0, 2),
        (4.0, 0),
        (2.0, 0),
    ]
    assert float(scale.scale_loss(tf.constant(0.5))) == 1.0
    grads = scale.unscale([tf.constant([4.0, -6.0]), None])
    np.testing.assert_array_equal(grads[0].numpy(), [2.0, -3.0])
    assert grads[1] is None


def test_batch_norm_statistics_stay_float32_under_float16(policy):
    rng = np.random.default_rng(0)
    x = rng.normal(3.0, 2.0, (4, 5, 5, 6)).astype(np.float32)
    outputs, moving = {}, {}
    for value in ("float32", "float16"):
        policy(value)
        layer = efficientnet_model.BatchNormalization(momentum=0.5)
        out = layer(tf.constant(x), training=True)
        outputs[value] = out.numpy().astype(np.float32)
        moving[value] = (layer.moving_mean.numpy(), layer.moving_variance.numpy())
        if value == "float16":
            assert out.dtype == tf.float16
            assert layer.moving_mean.dtype == layer.moving_variance.dtype == "float32"
    np.testing.assert_allclose(outputs["float16"], outputs["float32"], atol=5e-3, rtol=5e-3)
    # Statistics of float16-rounded inputs: float16's relative precision, not worse.
    for ours, reference in zip(moving["float16"], moving["float32"], strict=True):
        np.testing.assert_allclose(ours, reference, rtol=2e-3)


def test_a_loss_scale_below_one_stops_training():
    """float16 that skips every step halves its scale forever: stop, name the way out."""
    state = types.SimpleNamespace(loss_scale=train_lib.DynamicLossScale())
    train_lib.check_loss_scale(state, 7)  # 2**15
    state.loss_scale.scale.assign(1.0)
    train_lib.check_loss_scale(state, 7)
    state.loss_scale.scale.assign(0.5)
    with pytest.raises(FloatingPointError, match=r"step 7.*--mixed_precision"):
        train_lib.check_loss_scale(state, 7)
    train_lib.check_loss_scale(types.SimpleNamespace(loss_scale=None), 7)  # float32, bfloat16


def test_teacher_targets_are_float32():
    logits = tf.constant([[2.0, 1.0, -1.0], [0.5, 3.0, 0.0]], tf.float16)
    soft = train_lib.unlabeled_targets(3, 0.1, 0.7, teacher_logits=logits)
    hard = train_lib.unlabeled_targets(3, 0.1, -1, teacher_logits=logits)
    assert soft.dtype == hard.dtype == tf.float32
    expected = tf.nn.softmax(tf.cast(logits, tf.float32) / 0.7).numpy()
    np.testing.assert_allclose(soft.numpy(), expected, rtol=1e-6)


# --- The training step ----------------------------------------------------------


@pytest.mark.slow
def test_float16_step_equals_float32_step(tmp_path, policy):
    keras.utils.set_random_seed(0)
    data = batch()
    policy("float32")
    config32 = tiny_config(tmp_path / "f32", "", override_params=dict(NO_NOISE))
    state32 = train_lib.TrainState(config32, tf.distribute.get_strategy())
    state32.restore_or_initialize()
    start = values(state32.model.weights)
    start_trainable = values(state32.model.trainable_weights)
    config16, state16 = float16_state(tmp_path / "f16", policy)
    assert state16.model.get_layer("stem_conv").compute_dtype == "float16"
    for var, value in zip(state16.model.weights, start, strict=True):
        var.assign(value)
    state16.restore_or_initialize()  # the EMA copies the same start
    metrics32 = run_steps(state32, config32, 2, data)
    metrics16 = run_steps(state16, config16, 2, data)

    assert state16.step == state32.step == 2
    assert float(state16.loss_scale.scale.numpy()) == 2.0**15
    assert int(state16.loss_scale.good_steps.numpy()) == 2
    assert metrics16["train/loss_scale"] == 2.0**15
    for name in ("train/loss", "lab/loss"):
        assert metrics16[name] == pytest.approx(metrics32[name], rel=2e-3), name
    # The weight updates agree to float16 precision (the update, not the
    # weights, is compared: it is what the step computes).
    delta32 = np.concatenate(
        [
            (w - s).ravel()
            for w, s in zip(values(state32.model.trainable_weights), start_trainable, strict=True)
        ]
    )
    delta16 = np.concatenate(
        [
            (w - s).ravel()
            for w, s in zip(values(state16.model.trainable_weights), start_trainable, strict=True)
        ]
    )
    assert np.linalg.norm(delta32) > 0
    assert np.linalg.norm(delta16 - delta32) <= 2e-2 * np.linalg.norm(delta32)
    # No single weight is off by more than 5% of the largest update.
    assert np.max(np.abs(delta16 - delta32)) <= 5e-2 * np.max(np.abs(delta32))
    # The weights and their EMA stay float32 variables.
    assert {w.dtype for w in state16.model.weights + state16.ema_model.weights} == {"float32"}
    for ema32, ema16 in zip(state32.ema_model.weights, state16.ema_model.weights, strict=True):
        np.testing.assert_allclose(ema16.numpy(), ema32.numpy(), rtol=2e-2, atol=2e-4)


@pytest.mark.slow
def test_overflow_skips_the_step_and_halves_the_scale(tmp_path, policy):
    data = batch()
    config, state = float16_state(tmp_path, policy)
    # (The first step's learning rate is 0: warmup.) The EMA now differs from the weights.
    run_steps(state, config, 2, data)
    assert state.step == 2
    before = {
        "weights": values(state.model.trainable_weights),
        "ema": values(state.ema_model.weights),
        "optimizer": values(state.optimizer.variables),
    }
    assert any(
        not np.array_equal(e, w)
        for e, w in zip(values(state.ema_model.trainable_weights), before["weights"], strict=True)
    )
    # A scale so large that the float16 backward pass overflows to inf.
    state.loss_scale.scale.assign(2.0**60)
    metrics = run_steps(state, config, 1, data)
    assert np.isfinite(metrics["train/loss"])  # the loss itself is fine
    assert state.step == 2
    assert float(state.loss_scale.scale.numpy()) == 2.0**59
    assert int(state.loss_scale.good_steps.numpy()) == 0
    for key, variables in [
        ("weights", state.model.trainable_weights),
        ("ema", state.ema_model.weights),
        ("optimizer", state.optimizer.variables),
    ]:
        for old, new in zip(before[key], values(variables), strict=True):
            np.testing.assert_array_equal(new, old, err_msg=key)
    # Back to a sane scale, training goes on.
    state.loss_scale.scale.assign(2.0**15)
    run_steps(state, config, 1, data)
    assert state.step == 3
    assert int(state.loss_scale.good_steps.numpy()) == 1


@pytest.mark.slow
def test_resume_keeps_the_scale(tmp_path, policy):
    config, state = float16_state(tmp_path, policy)
    state.loss_scale.scale.assign(1024.0)
    state.loss_scale.good_steps.assign(7)
    path = state.save()
    assert tf.train.load_variable(path, SCALE) == 1024.0
    _, resumed = float16_state(tmp_path, policy)
    assert float(resumed.loss_scale.scale.numpy()) == 1024.0
    assert int(resumed.loss_scale.good_steps.numpy()) == 7


@pytest.mark.slow
def test_float16_resumes_a_float32_checkpoint(tmp_path, policy):
    policy("float32")
    config = tiny_config(tmp_path, "", override_params=dict(NO_NOISE))
    state32 = train_lib.TrainState(config, tf.distribute.get_strategy())
    state32.restore_or_initialize()
    state32.save()
    _, state16 = float16_state(tmp_path, policy)
    assert float(state16.loss_scale.scale.numpy()) == 2.0**15
    for w16, w32 in zip(state16.model.weights, state32.model.weights, strict=True):
        np.testing.assert_array_equal(w16.numpy(), w32.numpy())


@pytest.mark.slow
@pytest.mark.e2e
def test_float16_under_mirrored_strategy():
    """2 logical CPUs: the float16 step equals one device's; an overflow skips on both."""
    script = os.path.join(ROOT, "tests", "mirrored_check.py")
    out = subprocess.run(
        [sys.executable, script, "float16"], capture_output=True, text=True, timeout=600
    )
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["replicas"] == 2
    assert result["steps"] == [21, 21]
    assert result["scales"] == [2.0**15, 2.0**15]
    assert result["loss_single"] == pytest.approx(result["loss_mirrored"], rel=2e-3)
    assert result["update_rel_diff"] < 2e-2
    assert result["overflow"] == {"step": 21, "scale": 2.0**59, "unchanged": True}


# --- The entry points on a float16-trained model --------------------------------


def main_py(*args):
    command = [sys.executable, os.path.join(ROOT, "main.py"), "--use_tpu=False"]
    command += ["--task_name=mnist", "--seed=0", *args]
    out = subprocess.run(command, capture_output=True, text=True, timeout=300, check=False)
    assert out.returncode == 0, out.stderr[-3000:]
    return out


@pytest.fixture(scope="module")
def float16_model_dir(tiny_data, tmp_path_factory):
    """main.py trains 2 float16 steps, then resumes to 4 (the scripts' --use_bfloat16=False)."""
    model_dir = str(tmp_path_factory.mktemp("float16") / "model")
    args = [
        "--mode=train",
        "--use_bfloat16=False",
        "--mixed_precision=float16",
        *(f"--{key}={value}" for key, value in TINY_OVERRIDES.items()),
        f"--label_data_dir={tiny_data}",
        f"--model_dir={model_dir}",
        "--train_batch_size=16",
        "--iterations_per_loop=2",
        "--save_checkpoints_steps=2",
    ]
    main_py(*args, "--train_steps=2")
    out = main_py(*args, "--train_steps=4")
    return model_dir, out


@pytest.mark.slow
def test_main_py_trains_and_resumes_float16(float16_model_dir):
    model_dir, out = float16_model_dir
    assert "Resuming from step 2" in out.stderr
    first, last = os.path.join(model_dir, "ckpt-2"), os.path.join(model_dir, "ckpt-4")
    assert tf.train.load_variable(first, GOOD_STEPS) == 2
    # 4, not 2: the resumed run continued the count it saved.
    assert tf.train.load_variable(last, GOOD_STEPS) == 4
    assert tf.train.load_variable(last, SCALE) == 2.0**15
    with open(os.path.join(model_dir, "FLAGS.json")) as f:
        assert json.load(f)["mixed_precision"] == "float16"


@pytest.mark.slow
@pytest.mark.e2e
def test_eval_predict_export_of_a_float16_model(float16_model_dir, tiny_data, tmp_path):
    model_dir, _ = float16_model_dir
    common = ["--use_bfloat16=False", "--mixed_precision=float16"]
    main_py("--mode=eval", *common, f"--model_dir={model_dir}", f"--label_data_dir={tiny_data}")
    with open(os.path.join(model_dir, "eval_results.json")) as f:
        results = json.load(f)
    assert results["test"]["num_images"] == 30 and results["test"]["global_step"] == 4

    output_dir = tmp_path / "predict"
    main_py(
        "--mode=predict",
        *common,
        f"--predict_ckpt_path={model_dir}",
        f"--label_data_dir={os.path.join(tiny_data, 'unlabeled')}",
        "--file_prefix=extra",
        "--num_shards=2",
        "--shard_id=0",
        f"--output_dir={output_dir}",
        f"--info_dir={tmp_path / 'info'}",
    )
    records = [
        tf.train.Example.FromString(r.numpy())
        for path in sorted(output_dir.glob("train-info-*"))
        for r in tf.data.TFRecordDataset(str(path))
    ]
    assert len(records) == 32
    for example in records:
        probs = np.array(example.features.feature["probabilities"].float_list.value)
        assert probs.shape == (NUM_CLASSES,) and np.all(np.isfinite(probs))
        assert probs.sum() == pytest.approx(1.0, abs=1e-5)

    export_dir = str(tmp_path / "export")
    main_py("--mode=export", *common, f"--model_dir={model_dir}", f"--export_dir={export_dir}")
    loaded = tf.saved_model.load(export_dir)
    images = tf.constant(batch(4)["images"])
    probs = loaded.signatures["serving_default"](images=images)["probabilities"].numpy()
    assert probs.shape == (4, NUM_CLASSES) and np.all(np.isfinite(probs))
