"""The core training path tested directly: the batches of make_train_dataset and compute_losses.

The batch format is checked against the eval preprocessing and against the
same preprocessing run eagerly (big_vision tests its ops both ways); the
losses against numbers computed by hand with NumPy.
"""

import dataclasses
import json
import math
import os
import subprocess
import sys
import types

import keras
import numpy as np
import pytest
import tensorflow as tf
from conftest import NUM_CLASSES, class_image, tiny_config

import data_input
import file_names
import preprocessing
import tfrecords
import train_lib

LABELED_BATCH = 4
UNLABEL_RATIO = 1.3  # ceil(4 x 1.3) = 6 unlabeled images per batch
SEED = 7
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _pseudo_labeled_files(out_dir, num_records=40):
    """Pseudo-labeled records whose probabilities[0] = (i + 1) / 1000 names record i."""
    rng = np.random.default_rng(3)
    images, probs = [], []
    for i in range(num_records):
        p = rng.dirichlet(np.ones(NUM_CLASSES)).astype(np.float32) * 0.9
        p[0] = (i + 1) / 1000.0
        images.append(tfrecords.encode_jpeg(class_image(i % NUM_CLASSES, rng)))
        probs.append(p)
    path = file_names.filtered_path(str(out_dir), 0, 0, 1)
    tfrecords.write_tfrecord(
        path,
        (
            tfrecords.pseudo_labeled_example(im, p).SerializeToString()
            for im, p in zip(images, probs, strict=True)
        ),
    )
    return [path], images, np.stack(probs)


def _record_index(probability0):
    return int(round(float(probability0) * 1000)) - 1


@pytest.fixture(scope="module")
def student_batch(tiny_data, tmp_path_factory):
    unlabel_files, images, probs = _pseudo_labeled_files(tmp_path_factory.mktemp("pseudo"))
    ds = data_input.make_train_dataset(
        None,
        label_files=data_input.labeled_files(tiny_data, "train"),
        per_replica_batch_size=LABELED_BATCH,
        image_size=32,
        small_image_model=True,
        num_classes=NUM_CLASSES,
        augment_name="v1",
        randaug_mag=10,
        random_flip=False,
        unlabel_files=unlabel_files,
        unlabel_ratio=UNLABEL_RATIO,
        teacher_image_size=32,
        seed=SEED,
    )
    batch = next(iter(ds))
    return {k: v.numpy() for k, v in batch.items()}, images, probs


@pytest.mark.slow
def test_batch_shapes_and_unlabeled_batch_size(student_batch):
    batch, _, _ = student_batch
    unl = math.ceil(LABELED_BATCH * UNLABEL_RATIO)
    assert unl == data_input.unlabeled_batch_size(LABELED_BATCH, UNLABEL_RATIO) == 6
    assert batch["images"].shape == (LABELED_BATCH + unl, 32, 32, 3)
    assert batch["images"].dtype == np.float32
    assert batch["labels"].shape == (LABELED_BATCH,)
    assert batch["unl_probs"].shape == (unl, NUM_CLASSES)
    assert batch["unl_labels"].shape == (unl,)
    assert batch["teacher_images"].shape == (unl, 32, 32, 3)
    assert set(batch) == {"images", "labels", "unl_probs", "unl_labels", "teacher_images"}
    assert ((batch["labels"] >= 0) & (batch["labels"] < NUM_CLASSES)).all()
    # Stored labels are the argmax of the stored probabilities.
    np.testing.assert_array_equal(batch["unl_labels"], batch["unl_probs"].argmax(-1))


@pytest.mark.slow
def test_teacher_view_is_the_eval_preprocessing_of_the_same_pixels(student_batch):
    batch, images, probs = student_batch
    for j, row in enumerate(batch["unl_probs"]):
        i = _record_index(row[0])
        np.testing.assert_allclose(row, probs[i], rtol=1e-6)
        clean = preprocessing.preprocess_image(
            tf.constant(images[i]), is_training=False, image_size=32, small_image=True
        )
        np.testing.assert_array_equal(batch["teacher_images"][j], clean.numpy())
    # The student's view of the same images is noised (RandAugment, Cutout, crop).
    student_views = batch["images"][LABELED_BATCH:]
    differs = [
        not np.array_equal(s, t)
        for s, t in zip(student_views, batch["teacher_images"], strict=True)
    ]
    assert sum(differs) >= len(differs) - 1


def test_seed_streams_never_collide_across_draws_and_pipelines():
    """Each (draw, input pipeline) has its own stream; pipeline 0 keeps the ids 0, 1, ..."""
    names = list(data_input.SEED_STREAMS)
    assert [data_input.stream_id(name) for name in names] == list(range(len(names)))
    ids = [data_input.stream_id(name, p) for p in range(4) for name in names]
    assert sorted(ids) == list(range(4 * len(names)))
    assert data_input.stream_id("labeled", 3) == 6 and data_input.stream_id("unlabeled", 3) == 7


@pytest.mark.slow
def test_student_view_in_tf_data_equals_the_eager_op(student_batch):
    """Element j of the unlabeled stream is preprocessed with seed fold_in([seed, 1], j)."""
    batch, images, _ = student_batch
    base = tf.constant([SEED, 1], tf.int64)
    for j, row in enumerate(batch["unl_probs"]):
        eager = preprocessing.preprocess_image(
            tf.constant(images[_record_index(row[0])]),
            is_training=True,
            image_size=32,
            small_image=True,
            augment_name="v1",
            randaug_mag=10,
            random_flip=False,
            seed=tf.random.experimental.stateless_fold_in(base, tf.constant(j, tf.int64)),
        )
        np.testing.assert_array_equal(batch["images"][LABELED_BATCH + j], eager.numpy())


def _log_softmax(x):
    x = x - x.max(-1, keepdims=True)
    return x - np.log(np.exp(x).sum(-1, keepdims=True))


def _logits_model(num_classes):
    """A network whose logits are the input pixels: logits[n] = image[n, 0, 0, :num_classes]."""
    return keras.Sequential([keras.layers.Reshape((num_classes,))])


def _state(model, decay_vars, teacher=None):
    description = {"mean_rgb": (0.0,) * 3, "stddev_rgb": (1.0,) * 3}
    return types.SimpleNamespace(
        model=model, description=description, teacher=teacher, decay_vars=decay_vars
    )


LAB_LOGITS = np.array([[2.0, 0.5, -1.0], [0.0, 1.0, 3.0]], np.float32)
UNL_LOGITS = np.array(
    [[1.0, 1.0, 0.0], [-2.0, 0.0, 2.0], [0.5, 0.2, 0.1], [3.0, -1.0, 0.0]], np.float32
)
LABELS = np.array([0, 1])
STORED = np.array([[0.7, 0.2, 0.1], [0.1, 0.1, 0.8], [0.3, 0.4, 0.3], [0.6, 0.3, 0.1]], np.float32)
DECAY_VALUES = (np.array([[1.0, 2.0], [3.0, 4.0]], np.float32), np.array([0.5], np.float32))


def _hand_losses(unl_targets, smoothing, ratio, weight_decay):
    c = LAB_LOGITS.shape[1]
    lab_targets = np.eye(c)[LABELS] * (1 - smoothing) + smoothing / c
    lab = -(lab_targets * _log_softmax(LAB_LOGITS)).sum(-1).mean()
    unl = -(unl_targets * _log_softmax(UNL_LOGITS)).sum(-1).mean()
    l2 = sum((v**2).sum() / 2 for v in DECAY_VALUES)  # (1 + 4 + 9 + 16) / 2 + 0.125
    assert l2 == pytest.approx(15.125)
    return lab, unl, lab + ratio * unl + weight_decay * l2


def _config(tmp_path, **kwargs):
    values = dict(
        num_label_classes=3,
        label_smoothing=0.1,
        unlabel_ratio=2.0,
        weight_decay=0.01,
    )
    values.update(kwargs)
    return tiny_config(tmp_path, "", **values)


def _batch(teacher=False):
    pixels = np.concatenate([LAB_LOGITS, UNL_LOGITS])[:, None, None, :]
    batch = {
        "images": tf.constant(pixels),
        "labels": tf.constant(LABELS, tf.int32),
        "unl_probs": tf.constant(STORED),
        "unl_labels": tf.constant(STORED.argmax(-1), tf.int32),
    }
    if teacher:
        batch["teacher_images"] = tf.constant(STORED[:, None, None, :] * 10)
    return batch


def test_compute_losses_from_stored_probabilities_by_hand(tmp_path):
    temp = 0.5
    config = _config(tmp_path, teacher_softmax_temp=temp)
    decay_vars = [tf.Variable(v) for v in DECAY_VALUES]
    state = _state(_logits_model(3), decay_vars)
    loss, metrics = train_lib.compute_losses(config, state, _batch(), training=True)
    targets = STORED ** (1 / temp)
    targets /= targets.sum(-1, keepdims=True)
    lab, unl, total = _hand_losses(targets, 0.1, 2.0, 0.01)
    assert float(metrics["lab/loss"]) == pytest.approx(lab, rel=1e-5)
    assert float(metrics["ext/loss"]) == pytest.approx(unl, rel=1e-5)
    assert float(metrics["train/data_loss"]) == pytest.approx(lab + 2.0 * unl, rel=1e-5)
    assert float(loss) == pytest.approx(total, rel=1e-5)
    assert float(metrics["train/loss"]) == pytest.approx(total, rel=1e-5)
    # Accuracies: labeled argmax [0, 2] vs labels [0, 1]; unlabeled argmax vs target argmax.
    assert float(metrics["lab/acc"]) == pytest.approx(0.5)
    unl_agree = (UNL_LOGITS.argmax(-1) == targets.argmax(-1)).mean()
    assert float(metrics["unl/acc_to_dump"]) == pytest.approx(unl_agree)
    assert set(metrics) == set(train_lib.metric_names(config))


def test_compute_losses_with_a_teacher_on_the_fly_hard_labels_by_hand(tmp_path):
    config = _config(tmp_path, teacher_softmax_temp=-1, unlabel_ratio=3.0, weight_decay=0.0)
    teacher = types.SimpleNamespace(
        model=_logits_model(3), mean_rgb=(1.0,) * 3, stddev_rgb=(2.0,) * 3
    )
    state = _state(_logits_model(3), [tf.Variable(v) for v in DECAY_VALUES], teacher)
    loss, metrics = train_lib.compute_losses(config, state, _batch(teacher=True))
    # The teacher sees (10 p - 1) / 2: same argmax as the stored probabilities.
    teacher_class = ((STORED * 10 - 1) / 2).argmax(-1)
    targets = np.eye(3)[teacher_class] * 0.9 + 0.1 / 3
    lab, unl, total = _hand_losses(targets, 0.1, 3.0, 0.0)
    assert float(metrics["ext/loss"]) == pytest.approx(unl, rel=1e-5)
    assert float(loss) == pytest.approx(total, rel=1e-5)


def test_labeled_only_losses_have_only_the_labeled_metrics(tmp_path):
    config = _config(tmp_path, unlabel_ratio=0, weight_decay=0.0)
    batch = {
        "images": tf.constant(LAB_LOGITS[:, None, None, :]),
        "labels": tf.constant(LABELS, tf.int32),
    }
    state = _state(_logits_model(3), [tf.Variable(v) for v in DECAY_VALUES])
    loss, metrics = train_lib.compute_losses(config, state, batch)
    lab, _, _ = _hand_losses(np.full_like(UNL_LOGITS, 1 / 3), 0.1, 0.0, 0.0)
    assert float(loss) == pytest.approx(lab, rel=1e-5)
    assert set(metrics) == set(train_lib.LABELED_METRICS)


# Fields main.py resolves from the task, the model table, the data or a draw;
# every other TrainConfig field must default to its flag's default.
RESOLVED_BY_MAIN = {"model_dir", "label_data_dir", "input_image_size", "num_train_images", "seed"}
RESOLVED_BY_TASK = {"eval_subsets", "random_flip", "override_params"}


def _main_flag_defaults():
    """{flag: default} of main.py's flags, read in a fresh process.

    A subprocess, because filter_unlabel_data.py (imported by other test
    modules) defines flags of the same names in this process's absl FLAGS.
    """
    code = (
        "import json; from absl import flags; import main; "
        "print(json.dumps({n: flags.FLAGS[n].default for n in flags.FLAGS}))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.splitlines()[-1])


@pytest.mark.slow
@pytest.mark.e2e
def test_train_config_defaults_equal_the_flag_defaults():
    defaults = _main_flag_defaults()
    checked = 0
    for field in dataclasses.fields(train_lib.TrainConfig):
        if field.name in RESOLVED_BY_MAIN | RESOLVED_BY_TASK:
            continue
        assert field.name in defaults, f"TrainConfig.{field.name} has no flag"
        assert defaults[field.name] == field.default, field.name
        checked += 1
    assert checked == len(dataclasses.fields(train_lib.TrainConfig)) - 8
    config = train_lib.TrainConfig(model_dir="m", label_data_dir="d")
    # The resolved defaults are ImageNet's and B0's, as main.py resolves them.
    assert config.input_image_size == 224 and config.eval_subsets == ("validation",)
    assert config.num_train_images == 1281167
