"""Sharded prediction: order, count, workers, skipping finished shards, reassign."""

import os

import numpy as np
import pytest
import tensorflow as tf
from conftest import NUM_CLASSES, class_image

import atomic_files
import data_input
import file_names
import predict_label
import preprocessing
import task_info
import tfrecords
import train_lib

pytestmark = pytest.mark.slow

STRATEGY = tf.distribute.get_strategy()


@pytest.fixture(scope="module")
def unlabeled_shards(tmp_path_factory):
    """2 shards of 13 and 7 raw unlabeled images (13 is not a multiple of the batch of 4)."""
    data_dir = str(tmp_path_factory.mktemp("unl"))
    rng = np.random.default_rng(3)
    for shard, n in enumerate([13, 7]):
        records = [
            tfrecords.unlabeled_example(
                tfrecords.encode_jpeg(class_image(int(rng.integers(10)), rng)), NUM_CLASSES
            ).SerializeToString()
            for _ in range(n)
        ]
        tfrecords.write_tfrecord(os.path.join(data_dir, f"extra-{shard:05d}-of-00002"), records)
    return data_dir


def read_predictions(path):
    out = []
    for record in tf.data.TFRecordDataset(path):
        ex = tf.train.Example.FromString(record.numpy())
        probs = np.array(ex.features.feature["probabilities"].float_list.value)
        cls = ex.features.feature["classes"].int64_list.value[0]
        out.append((probs, cls))
    return out


def reference_probabilities(model, path):
    """Probabilities computed one image at a time, in file order."""
    info = task_info.get_task_info("mnist")
    probs = []
    for record in tf.data.TFRecordDataset(path):
        image_bytes = tf.io.parse_single_example(
            record, {"image/encoded": tf.io.FixedLenFeature([], tf.string)}
        )["image/encoded"]
        image = preprocessing.preprocess_image(
            image_bytes, is_training=False, image_size=32, small_image=True
        )
        image = preprocessing.normalize_image(image[None], info.mean_rgb, info.stddev_rgb)
        probs.append(tf.nn.softmax(model(image, training=False))[0].numpy())
    return np.array(probs)


def predict(teacher, unl_dir, out, **kwargs):
    config = teacher[0]
    pred_config = train_lib.TrainConfig(**{**config.__dict__, "label_data_dir": unl_dir})
    pred_config.eval_batch_size = 4
    args = dict(
        predict_ckpt_path=config.model_dir,
        output_dir=str(out / "pred"),
        info_dir=str(out / "info"),
        num_shards=2,
        shard_id="0,1",
        file_prefix="extra",
    )
    args.update(kwargs)
    return predict_label.run_prediction(pred_config, STRATEGY, **args)


def test_prediction_keeps_order_and_count(teacher, unlabeled_shards, tmp_path):
    counts = predict(teacher, unlabeled_shards, tmp_path)
    assert counts == {0: 13, 1: 7}
    model = teacher[1].ema_model
    for shard, n in [(0, 13), (1, 7)]:
        preds = read_predictions(file_names.prediction_path(str(tmp_path / "pred"), shard, 2, 0))
        assert len(preds) == n
        ref = reference_probabilities(
            model, os.path.join(unlabeled_shards, f"extra-{shard:05d}-of-00002")
        )
        got = np.array([p for p, _ in preds])
        np.testing.assert_allclose(got, ref, atol=1e-5)
        assert [c for _, c in preds] == list(np.argmax(ref, -1))
        info = atomic_files.read_json(file_names.info_path(str(tmp_path / "info"), shard, 2, 0))
        assert info["image_num"] == n and info["provenance"]["input_records"] == n


def test_two_workers_cover_shard_exactly_once(teacher, unlabeled_shards, tmp_path):
    for worker in (0, 1):
        predict(
            teacher,
            unlabeled_shards,
            tmp_path,
            shard_id="0",
            num_prediction_workers=2,
            prediction_worker=worker,
        )
    parts = [
        read_predictions(file_names.prediction_path(str(tmp_path / "pred"), 0, 2, w))
        for w in (0, 1)
    ]
    assert [len(p) for p in parts] == [7, 6]
    ref = reference_probabilities(
        teacher[1].ema_model, os.path.join(unlabeled_shards, "extra-00000-of-00002")
    )
    np.testing.assert_allclose(np.array([p for p, _ in parts[0]]), ref[0::2], atol=1e-5)
    np.testing.assert_allclose(np.array([p for p, _ in parts[1]]), ref[1::2], atol=1e-5)


def test_rerun_skips_finished_and_completes_killed(teacher, unlabeled_shards, tmp_path):
    predict(teacher, unlabeled_shards, tmp_path)
    pred0 = file_names.prediction_path(str(tmp_path / "pred"), 0, 2, 0)
    pred1 = file_names.prediction_path(str(tmp_path / "pred"), 1, 2, 0)
    before = open(pred0, "rb").read()
    mtime = os.path.getmtime(pred0)
    # Simulate a run killed while writing shard 1: its output is a leftover
    # temporary file and its info file is missing.
    os.rename(pred1, pred1 + ".tmp999")
    os.remove(file_names.info_path(str(tmp_path / "info"), 1, 2, 0))
    counts = predict(teacher, unlabeled_shards, tmp_path)
    assert counts == {0: None, 1: 7}
    assert os.path.getmtime(pred0) == mtime and open(pred0, "rb").read() == before
    assert len(read_predictions(pred1)) == 7
    files = data_input.list_files(str(tmp_path / "pred"), "train-info")
    assert [os.path.basename(f) for f in files] == [
        "train-info-00000-of-00002-00000",
        "train-info-00001-of-00002-00000",
    ]


def test_reassign_relabels_keeping_images(teacher, tmp_path):
    rng = np.random.default_rng(5)
    filtered = tmp_path / "filtered"
    images = [tfrecords.encode_jpeg(class_image(i % 10, rng)) for i in range(9)]
    wrong = np.full([NUM_CLASSES], 0.0, np.float32)
    wrong[0] = 1.0
    records = [tfrecords.pseudo_labeled_example(b, wrong).SerializeToString() for b in images]
    tfrecords.write_tfrecord(str(filtered / "train-0-00001-of-00002"), records)
    out = tmp_path / "reassigned"
    predict(
        teacher,
        str(filtered),
        out,
        shard_id="1",
        file_prefix="train",
        reassign_label=True,
        output_dir=str(out),
    )
    path = out / "train-0-00001-of-00002"
    ref = reference_probabilities(teacher[1].ema_model, str(filtered / "train-0-00001-of-00002"))
    got = []
    for i, record in enumerate(tf.data.TFRecordDataset(str(path))):
        ex = tf.train.Example.FromString(record.numpy()).features.feature
        assert ex["image/encoded"].bytes_list.value[0] == images[i]
        probs = np.array(ex["probabilities"].float_list.value)
        assert ex["label"].int64_list.value[0] == int(np.argmax(probs))
        assert ex["prob"].float_list.value[0] == pytest.approx(probs.max())
        got.append(probs)
    np.testing.assert_allclose(np.array(got), ref, atol=1e-5)


def test_bad_shard_ids_and_missing_checkpoint(teacher, unlabeled_shards, tmp_path):
    with pytest.raises(ValueError, match="--shard_id"):
        predict(teacher, unlabeled_shards, tmp_path, shard_id="2")
    with pytest.raises(FileNotFoundError, match="--predict_ckpt_path"):
        predict(teacher, unlabeled_shards, tmp_path, predict_ckpt_path=str(tmp_path))


def test_prediction_traces_once_across_shards(teacher, unlabeled_shards, tmp_path, monkeypatch):
    """One predict function for all shards of a run, traced once: the batches have one
    shape (13 and 7 images in batches of 4: both shards end with a padded batch)."""
    made = []
    original = predict_label.make_loaded_predict_fn

    def recording(*args, **kwargs):
        made.append(original(*args, **kwargs))
        return made[-1]

    monkeypatch.setattr(predict_label, "make_loaded_predict_fn", recording)
    assert predict(teacher, unlabeled_shards, tmp_path) == {0: 13, 1: 7}
    assert len(made) == 1
    assert made[0].experimental_get_tracing_count() == 1
