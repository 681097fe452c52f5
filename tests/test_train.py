"""Training, evaluation, resume, noisy-student losses and the math of docs/method.md, "Training"."""

import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
from conftest import NUM_CLASSES, ROOT, TINY_OVERRIDES, tiny_config
from test_progress_log import FakeClock

import progress_log
import train_lib

STRATEGY = tf.distribute.get_strategy()


def eval_batches(config, subset="train", batch_size=64):
    import data_input

    ds = data_input.make_eval_dataset(
        data_input.labeled_files(config.label_data_dir, subset),
        batch_size=batch_size,
        image_size=32,
        small_image_model=True,
    )
    return ds.map(lambda b: {"images": b["images"], "labels": b["labels"]})


# ---------------------------------------------------------------------------
# Formulas.


def test_learning_rate_warmup_and_decay():
    config = tiny_config(
        "/unused", "/unused", num_train_images=1000, train_batch_size=100, base_learning_rate=0.016
    )
    lr = train_lib.create_learning_rate_fn(config)
    scaled = 0.016 * 100 / 256
    # steps_per_epoch = 10: warmup for 50 steps, then 0.97 every 2.4 epochs = 24 steps.
    assert float(lr(0)) == pytest.approx(0.0)
    assert float(lr(25)) == pytest.approx(scaled * 25 / 50)
    assert float(lr(49)) == pytest.approx(scaled * 49 / 50)
    assert float(lr(50)) == pytest.approx(scaled * 0.97**2)  # floor(50 / 24) = 2
    assert float(lr(72)) == pytest.approx(scaled * 0.97**3)
    assert float(lr(1000)) == pytest.approx(scaled * 0.97 ** math.floor(1000 / 24), rel=1e-5)


def test_learning_rate_train_ratio_and_final_base_lr():
    config = tiny_config(
        "/unused", "/unused", num_train_images=1000, train_batch_size=100, train_ratio=2.0
    )
    assert train_lib.create_learning_rate_fn(config).decay_epochs == pytest.approx(4.8)
    config = tiny_config(
        "/unused",
        "/unused",
        num_train_images=1000,
        train_batch_size=100,
        train_steps=1050,
        base_learning_rate=0.016,
        final_base_lr=0.0002,
    )
    lr = train_lib.create_learning_rate_fn(config)
    # 105 epochs - 5 warmup = 100 epochs over log(0.0002/0.016)/log(0.97) = 143.86 decays.
    decay_epochs = 100 / (math.log(0.0002 / 0.016) / math.log(0.97))
    assert lr.decay_epochs == pytest.approx(decay_epochs)
    # The decay counts from step 0 (as published), so the base LR reaches
    # final_base_lr, up to the staircase, after total_epochs = 100 epochs.
    base_at_100_epochs = float(lr(1000)) * 256 / 100
    assert 0.0002 <= base_at_100_epochs <= 0.0002 / 0.97
    assert float(lr(1050)) * 256 / 100 == pytest.approx(
        0.016 * 0.97 ** math.floor(105 / decay_epochs), rel=1e-5
    )


def test_learning_rate_train_last_step_num_shifts_schedule():
    config = tiny_config(
        "/unused",
        "/unused",
        num_train_images=1000,
        train_batch_size=100,
        train_steps=200,
        train_last_step_num=50,
    )
    lr = train_lib.create_learning_rate_fn(config)
    full = train_lib.create_learning_rate_fn(
        tiny_config("/u", "/u", num_train_images=1000, train_batch_size=100, train_steps=200)
    )
    assert config.max_steps == 50
    assert float(lr(0)) == pytest.approx(float(full(150)))


def test_ema_decay_formula():
    for step, expected in [(0, 0.1), (1, 2 / 11), (90, 91 / 100), (10**6, 0.9999)]:
        assert float(train_lib.ema_decay(step, 0.9999)) == pytest.approx(expected, rel=1e-6)


def test_update_ema_moves_every_weight_toward_the_model_by_hand():
    import keras

    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    ema_model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    model.set_weights([np.array([[1.0], [-2.0]], np.float32), np.array([4.0], np.float32)])
    ema_model.set_weights([np.array([[3.0], [0.0]], np.float32), np.array([-1.0], np.float32)])
    train_lib.update_ema(ema_model, model, tf.constant(0.75))
    # 0.75 * ema + 0.25 * model
    np.testing.assert_allclose(ema_model.weights[0].numpy(), [[2.5], [-0.5]], rtol=1e-6)
    np.testing.assert_allclose(ema_model.weights[1].numpy(), [0.25], rtol=1e-6)
    np.testing.assert_allclose(model.weights[1].numpy(), [4.0])


def test_unlabeled_targets_hard_and_soft():
    logits = tf.constant([[2.0, 1.0, 0.0], [0.0, 0.0, 3.0]])
    hard = train_lib.unlabeled_targets(3, 0.1, -1, teacher_logits=logits).numpy()
    np.testing.assert_allclose(
        hard, [[0.9 + 0.1 / 3, 0.1 / 3, 0.1 / 3], [0.1 / 3, 0.1 / 3, 0.9 + 0.1 / 3]], rtol=1e-6
    )
    soft = train_lib.unlabeled_targets(3, 0.1, 2.0, teacher_logits=logits).numpy()
    e = np.exp(np.array([[1.0, 0.5, 0.0], [0.0, 0.0, 1.5]]))
    np.testing.assert_allclose(soft, e / e.sum(1, keepdims=True), rtol=1e-6)
    probs = tf.constant([[0.6, 0.3, 0.1]])
    stored = train_lib.unlabeled_targets(3, 0.1, 0.5, stored_probs=probs).numpy()
    p2 = np.array([0.36, 0.09, 0.01])
    np.testing.assert_allclose(stored, [p2 / p2.sum()], rtol=1e-5)
    stored_hard = train_lib.unlabeled_targets(
        3, 0.0, -1, stored_probs=probs, stored_labels=tf.constant([2])
    ).numpy()
    np.testing.assert_allclose(stored_hard, [[0, 0, 1]])
    # Cross-entropy against the targets, by hand.
    ce = train_lib.cross_entropy(tf.constant(soft), logits).numpy()
    logp = logits.numpy() - np.log(np.exp(logits.numpy()).sum(1, keepdims=True))
    np.testing.assert_allclose(ce, -(soft * logp).sum(1), rtol=1e-6)


@pytest.mark.slow
def test_weight_decay_skips_batch_norm(tiny_data, tmp_path):
    import keras

    config = tiny_config(tmp_path, tiny_data)
    state = train_lib.TrainState(config, STRATEGY)
    decay_vars = state.decay_vars
    bn_weights = {
        id(w)
        for layer in state.model._flatten_layers()
        if isinstance(layer, keras.layers.BatchNormalization)
        for w in layer.weights
    }
    assert bn_weights and not bn_weights & {id(v) for v in decay_vars}
    assert len(decay_vars) + len(
        [v for v in state.model.trainable_variables if id(v) in bn_weights]
    ) == len(state.model.trainable_variables)
    expected = sum(float(np.sum(np.square(v.numpy()))) / 2 for v in decay_vars)
    assert float(train_lib.l2_regularization(decay_vars)) == pytest.approx(expected, rel=1e-5)


# ---------------------------------------------------------------------------
# Training runs.


@pytest.mark.slow
def test_teacher_trains_and_evaluates_every_image(teacher):
    config, state, results, losses = teacher
    assert [step for step, _ in state.history] == [10, 20, 30, 40]
    assert losses[-1] < 0.8 * losses[0], losses
    assert state.step == 40
    with open(os.path.join(config.model_dir, "eval_results.json")) as f:
        saved = json.load(f)
    assert saved["dev"]["num_images"] == 23  # not a multiple of the eval batch of 8
    assert saved["test"]["num_images"] == 30
    assert saved["dev"]["global_step"] == 40
    assert 0.0 <= saved["dev"]["top_1_accuracy"] <= saved["dev"]["top_5_accuracy"] <= 1.0
    assert results == {k: saved[k] for k in results}
    assert os.path.exists(os.path.join(config.model_dir, "model_params.txt"))
    assert os.path.exists(os.path.join(config.model_dir, "FLAGS.json"))
    assert tf.train.latest_checkpoint(config.model_dir).endswith("ckpt-40")


@pytest.mark.slow
def test_eval_counts_match_hand_computed_accuracy(teacher):
    """Top-1 from the eval loop equals argmax accuracy computed image by image."""
    config, state, results, _ = teacher
    import data_input
    import preprocessing
    import task_info

    info = task_info.get_task_info("mnist")
    correct = 0
    total = 0
    ds = data_input.make_eval_dataset(
        data_input.labeled_files(config.label_data_dir, "dev"),
        batch_size=5,
        image_size=32,
        small_image_model=True,
    )
    for batch in ds:
        n = int(batch["mask"].numpy().sum())
        logits = state.ema_model(
            preprocessing.normalize_image(batch["images"][:n], info.mean_rgb, info.stddev_rgb),
            training=False,
        )
        correct += int(np.sum(np.argmax(logits.numpy(), -1) == batch["labels"].numpy()[:n]))
        total += n
    assert total == 23
    assert results["dev"]["top_1_accuracy"] == pytest.approx(correct / total)


@pytest.mark.slow
def test_resume_continues_from_last_step(tiny_data, tmp_path, caplog):
    config = tiny_config(
        tmp_path, tiny_data, train_steps=6, iterations_per_loop=3, save_checkpoints_steps=3
    )
    state = train_lib.train(config, STRATEGY)
    assert state.step == 6
    first_weights = [w.numpy() for w in state.model.weights]
    config2 = tiny_config(
        tmp_path, tiny_data, train_steps=9, iterations_per_loop=3, save_checkpoints_steps=3
    )
    state2 = train_lib.TrainState(config2, STRATEGY)
    with caplog.at_level("INFO"):
        state2.restore_or_initialize()
    assert state2.step == 6
    assert any("Resuming from step 6" in r.getMessage() for r in caplog.records)
    for a, b in zip(first_weights, state2.model.weights, strict=True):
        np.testing.assert_array_equal(a, b.numpy())
    train_lib.train(config2, STRATEGY, state=state2)
    assert state2.step == 9
    names = sorted(os.listdir(tmp_path))
    assert "ckpt-9.index" in names and "ckpt-6.index" in names and "ckpt-3.index" in names


def time_the_training_calls(monkeypatch):
    """Each call of the training loop takes 1 s of a fake clock; the first (tracing) 100 s."""
    clock = FakeClock()
    monkeypatch.setattr(progress_log, "time", clock)
    real_make_train_loop = train_lib.make_train_loop

    def make_timed_loop(config, state):
        loop = real_make_train_loop(config, state)
        calls = []

        def timed(iterator, num_steps):
            calls.append(num_steps)
            clock.now += 100.0 if len(calls) == 1 else 1.0
            return loop(iterator, num_steps)

        return timed

    monkeypatch.setattr(train_lib, "make_train_loop", make_timed_loop)


def logged_steps(caplog):
    return [r.getMessage() for r in caplog.records if "images/s" in r.getMessage()]


@pytest.mark.slow
def test_logged_rate_leaves_out_the_first_call_that_traces(
    tiny_data, tmp_path, monkeypatch, caplog
):
    """The images/s and ETA of training exclude the loop's first call (tracing, compiling)."""
    time_the_training_calls(monkeypatch)
    config = tiny_config(tmp_path, tiny_data, train_steps=30, train_batch_size=16)
    with caplog.at_level("INFO"):
        train_lib.train(config, STRATEGY)
    lines = logged_steps(caplog)
    # 10 steps per call of 16 images: 1.6 images/s with the 100 s call, then 160.
    assert [line.split(": ", 1)[0] for line in lines] == ["step 10/30", "step 20/30", "step 30/30"]
    assert lines[0].endswith("1.6 images/s, ETA 0:03:20")
    assert lines[1].endswith("160.0 images/s, ETA 0:00:01")
    assert lines[2].endswith("160.0 images/s, ETA 0:00:00")


@pytest.mark.slow
def test_progress_counts_to_the_end_of_training_between_evaluations(
    tiny_data, tmp_path, monkeypatch, caplog
):
    """A call that stops at an evaluation logs steps and ETA of the whole run."""
    time_the_training_calls(monkeypatch)
    config = tiny_config(tmp_path, tiny_data, train_steps=30, train_batch_size=16)
    with caplog.at_level("INFO"):
        train_lib.train(config, STRATEGY, until_step=20)
    lines = logged_steps(caplog)
    assert [line.split(": ", 1)[0] for line in lines] == ["step 10/30", "step 20/30"]
    # 10 steps left at 10 steps/s.
    assert lines[1].endswith("160.0 images/s, ETA 0:00:01")


@pytest.mark.slow
def test_student_with_on_the_fly_teacher(teacher, tiny_data, tmp_path):
    t_config, t_state, _, _ = teacher
    config = tiny_config(
        tmp_path,
        tiny_data,
        train_steps=4,
        iterations_per_loop=2,
        unlabel_data_dir=os.path.join(tiny_data, "unlabeled"),
        unlabel_ratio=2,
        teacher_model_name="efficientnet-b0",
        teacher_model_path=t_config.model_dir,
        teacher_softmax_temp=1.0,
        augment_name="v1",
        randaug_mag=5,
        override_params=dict(TINY_OVERRIDES, stochastic_depth_rate=0.2, dropout_rate=0.2),
    )
    state = train_lib.TrainState(config, STRATEGY)
    state.restore_or_initialize()
    teacher_before = [w.numpy().copy() for w in state.teacher.model.weights]
    for a, b in zip(t_state.ema_model.weights, state.teacher.model.weights, strict=True):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    train_lib.train(config, STRATEGY, state=state)
    assert state.step == 4
    for a, b in zip(teacher_before, state.teacher.model.weights, strict=True):
        np.testing.assert_array_equal(a, b.numpy())
    assert not state.teacher.model.trainable_weights


@pytest.mark.slow
def test_student_from_stored_probabilities(tiny_data, tmp_path):
    import file_names
    import tfrecords

    unl_dir = tmp_path / "pseudo"
    rng = np.random.default_rng(1)
    from conftest import class_image

    records, stored = [], []
    for i in range(30):
        probs = rng.dirichlet(np.ones(NUM_CLASSES)).astype(np.float32)
        stored.append(probs)
        records.append(
            tfrecords.pseudo_labeled_example(
                tfrecords.encode_jpeg(class_image(i % 10, rng)), probs
            ).SerializeToString()
        )
    tfrecords.write_tfrecord(file_names.filtered_path(str(unl_dir), 0, 0, 1), records)
    config = tiny_config(
        tmp_path / "student",
        tiny_data,
        train_steps=2,
        iterations_per_loop=2,
        unlabel_data_dir=str(unl_dir / "data"),
        unlabel_ratio=1,
        teacher_softmax_temp=0.5,
    )
    state = train_lib.train(config, STRATEGY)
    assert state.step == 2
    # The batches the student trained on carry the stored probabilities of
    # the records they hold, and its targets are p^(1/T) renormalized.
    written = np.stack(stored)
    dataset = train_lib.make_distributed_train_dataset(
        config, STRATEGY, *train_lib.training_files(config)
    )
    batch = next(iter(dataset))
    assert batch["unl_probs"].shape == (16, NUM_CLASSES)
    for row in batch["unl_probs"].numpy():
        assert np.isclose(written, row, rtol=1e-6).all(axis=1).any()
    targets = train_lib.unlabeled_targets(
        NUM_CLASSES, config.label_smoothing, 0.5, stored_probs=batch["unl_probs"]
    ).numpy()
    squared = batch["unl_probs"].numpy() ** 2
    np.testing.assert_allclose(targets, squared / squared.sum(-1, keepdims=True), rtol=1e-5)
    assert state.history and "ext/loss" in state.history[-1][1]


@pytest.mark.slow
@pytest.mark.e2e
def test_mirrored_strategy_matches_single_device():
    """Two logical CPUs with synchronized BN give the loss and update of one device."""
    script = os.path.join(ROOT, "tests", "mirrored_check.py")
    out = subprocess.run(
        [sys.executable, script], capture_output=True, text=True, timeout=600, cwd=ROOT
    )
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["replicas"] == 2
    assert result["loss_single"] == pytest.approx(result["loss_mirrored"], rel=1e-4)
    assert result["max_weight_diff"] < 1e-4


# ---------------------------------------------------------------------------
# Failing loudly from the command line.


def run_main(*args):
    return subprocess.run(
        [
            sys.executable,
            os.path.join(ROOT, "main.py"),
            "--use_tpu=False",
            "--use_bfloat16=False",
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
    )


@pytest.mark.slow
@pytest.mark.e2e
def test_main_fails_loudly(tiny_data, tmp_path, teacher):
    t_config = teacher[0]
    empty = tmp_path / "empty"
    empty.mkdir()
    common = ["--task_name=mnist", "--mode=train", "--train_steps=1", "--train_batch_size=8"]
    cases = [
        ([*common, f"--label_data_dir={tiny_data}"], "--model_dir is required"),
        ([*common, f"--label_data_dir={empty}", f"--model_dir={tmp_path}/a"], "No labeled files"),
        (
            [
                *common,
                f"--label_data_dir={tiny_data}",
                f"--model_dir={tmp_path}/b",
                "--teacher_model_name=efficientnet-b0",
                f"--teacher_model_path={empty}",
                "--unlabel_ratio=1",
                f"--unlabel_data_dir={tiny_data}/unlabeled",
            ],
            "no checkpoint in directory",
        ),
        (
            [
                *common,
                f"--label_data_dir={tiny_data}",
                f"--model_dir={tmp_path}/c",
                "--unlabel_ratio=1",
                f"--unlabel_data_dir={empty}",
            ],
            "has no train-* or extra-* files",
        ),
        (
            [
                *common,
                f"--label_data_dir={tiny_data}",
                f"--model_dir={tmp_path}/d",
                "--unlabel_ratio=1",
            ],
            "--unlabel_ratio > 0 needs --unlabel_data_dir",
        ),
    ]
    wrong_classes = tmp_path / "wrong_classes"
    import tfrecords

    records = [
        tfrecords.pseudo_labeled_example(b"x", np.full([5], 0.2, np.float32)).SerializeToString()
    ]
    tfrecords.write_tfrecord(os.path.join(wrong_classes, "train-00000-of-00001"), records)
    cases.append(
        (
            [
                *common,
                f"--label_data_dir={tiny_data}",
                f"--model_dir={tmp_path}/e",
                "--unlabel_ratio=1",
                f"--unlabel_data_dir={wrong_classes}",
                "--width_coefficient=0.1",
                "--depth_coefficient=0.1",
            ],
            "have 5 probabilities, but --num_label_classes=10",
        )
    )
    del t_config
    for args, message in cases:
        out = run_main(*args)
        assert out.returncode != 0, args
        assert message in out.stderr + out.stdout, (message, out.stderr[-2000:])


@pytest.mark.slow
def test_train_and_evaluate_alternates(tiny_data, tmp_path):
    config = tiny_config(
        tmp_path,
        tiny_data,
        train_steps=6,
        steps_per_eval=3,
        iterations_per_loop=3,
        eval_subsets=("dev",),
    )
    state, results = train_lib.train_and_evaluate(config, STRATEGY)
    assert [step for step, _ in state.history] == [3, 6]
    assert results["dev"]["global_step"] == 6 and results["dev"]["num_images"] == 23
    events = tf.io.gfile.glob(os.path.join(str(tmp_path), "eval", "events.*"))
    steps = set()
    for path in events:
        for event in tf.compat.v1.train.summary_iterator(path):
            if any(v.tag == "dev/top_1_accuracy" for v in event.summary.value):
                steps.add(event.step)
    assert steps == {3, 6}


@pytest.mark.slow
def test_fix_layer_num_freezes_stem_and_first_blocks_in_training(tiny_data, tmp_path):
    """--fix_layer_num=1: stem and block 0 keep their weights; the rest trains."""
    config = tiny_config(tmp_path, tiny_data, train_steps=2, iterations_per_loop=2)
    config.fix_layer_num = 1
    state = train_lib.TrainState(config, STRATEGY)
    state.restore_or_initialize()
    frozen_layers = [
        layer
        for layer in state.model.layers
        if layer.weights and (layer.name.startswith("stem_") or layer.name.startswith("block1a_"))
    ]
    assert frozen_layers and not any(layer.trainable for layer in frozen_layers)
    frozen = {w.path: w.numpy().copy() for layer in frozen_layers for w in layer.weights}
    trainable_ids = {id(v) for v in state.model.trainable_variables}
    assert not any(id(w) in trainable_ids for layer in frozen_layers for w in layer.weights)
    head = state.model.get_layer("predictions").kernel.numpy().copy()
    train_lib.train(config, STRATEGY, state=state)
    for layer in frozen_layers:
        for w in layer.weights:
            np.testing.assert_array_equal(w.numpy(), frozen[w.path])
    assert not np.array_equal(head, state.model.get_layer("predictions").kernel.numpy())
    # Weight decay covers only what trains.
    assert {id(v) for v in state.decay_vars} <= trainable_ids
