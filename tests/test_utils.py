"""Record encoding helpers, file layouts and record counting of utils.py."""

import json
import os

import numpy as np
import oracles
import pytest
import tensorflow as tf

import utils


@pytest.mark.parametrize(
    "num_classes,image_size,label",
    [(10, 50, None), (10, 0, 9), (1000, 120_000, None), (1000, 300, 999), (200, 130, 128)],
)
def test_fast_pseudo_labeled_record_equals_the_example(num_classes, image_size, label):
    rng = np.random.default_rng(num_classes + image_size)
    image = rng.bytes(image_size)
    probs = rng.dirichlet(np.ones(num_classes)).astype(np.float32)
    encoded_label = int(np.argmax(probs)) if label is None else label
    fast = utils.PseudoLabeledEncoder(num_classes)([image], probs[None], [encoded_label])[0]
    fast = fast.numpy()
    assert fast == oracles.serialize_pseudo_labeled(image, probs, label)
    reference = utils.pseudo_labeled_example(image, probs, label)
    assert tf.train.Example.FromString(fast) == reference
    assert len(fast) == len(reference.SerializeToString())
    # And TensorFlow's parser reads it like the filter's consumers do.
    parsed = tf.io.parse_single_example(
        fast,
        {
            "image/encoded": tf.io.FixedLenFeature([], tf.string),
            "label": tf.io.FixedLenFeature([], tf.int64),
            "prob": tf.io.FixedLenFeature([], tf.float32),
            "probabilities": tf.io.FixedLenFeature([num_classes], tf.float32),
        },
    )
    expected_label = int(np.argmax(probs)) if label is None else label
    assert parsed["image/encoded"].numpy() == image
    assert parsed["label"].numpy() == expected_label
    assert parsed["prob"].numpy() == probs[expected_label]
    np.testing.assert_array_equal(parsed["probabilities"].numpy(), probs)


@pytest.mark.parametrize("num_classes", [10, 200, 1000])
def test_in_graph_encoder_equals_the_python_encoder(num_classes):
    rng = np.random.default_rng(num_classes)
    # Image sizes around the varint boundaries (1, 2 and 3 bytes), and none.
    sizes = [0, 1, 127, 128, 16383, 16384, 70_000]
    images = [rng.bytes(n) for n in sizes]
    probs = rng.dirichlet(np.ones(num_classes), size=len(sizes)).astype(np.float32)
    labels = np.array([0, num_classes - 1, 127 % num_classes, 128 % num_classes, 5, 9, 3])
    encoder = utils.PseudoLabeledEncoder(num_classes)
    encoded = encoder(tf.constant(images, tf.string), probs, labels).numpy()
    expected = [
        oracles.serialize_pseudo_labeled(*args) for args in zip(images, probs, labels, strict=True)
    ]
    assert encoded.tolist() == expected
    empty = encoder(tf.constant([], tf.string), np.zeros([0, num_classes], np.float32), [])
    assert empty.shape == (0,)


def test_write_tfrecord_batches(tmp_path):
    path = str(tmp_path / "out")
    assert utils.write_tfrecord_batches(path, [[b"a", b"bc"], [], np.array([b"d"], object)]) == 3
    assert [r.numpy() for r in tf.data.TFRecordDataset(path)] == [b"a", b"bc", b"d"]


def test_parse_shard_ids():
    assert utils.parse_shard_ids("3", 8) == [3]
    assert utils.parse_shard_ids("0,4, 7", 8) == [0, 4, 7]
    for bad in ("8", "", "1,x", "-1"):
        with pytest.raises(ValueError, match="--shard_id"):
            utils.parse_shard_ids(bad, 8)


def test_write_json_compact_and_indented(tmp_path):
    obj = {"b": [[0.5, 3]], "a": {"x": 1}}
    utils.write_json(str(tmp_path / "c.json"), obj, indent=None)
    utils.write_json(str(tmp_path / "i.json"), obj)
    compact = (tmp_path / "c.json").read_text()
    assert compact == '{"a": {"x": 1}, "b": [[0.5, 3]]}'
    assert "\n" in (tmp_path / "i.json").read_text()
    assert utils.read_json(str(tmp_path / "i.json")) == json.loads(compact) == obj


def test_shard_layouts():
    assert utils.shard_path("d", "extra", 3, 128) == os.path.join("d", "extra-00003-of-00128")
    assert utils.labeled_shard_path("d", "dev", 1, 64) == os.path.join("d", "dev-00001-of-00064")
    assert utils.unlabeled_shard_path("d", 2, 4) == os.path.join(
        "d", "unlabeled", "extra-00002-of-00004"
    )
    assert utils.task_shard_path("d", "train", 1, 5, 8) == os.path.join(
        "d", "train-1-00005-of-00008"
    )
    assert utils.filtered_path("o", 1, 5, 8) == os.path.join("o", "data", "train-1-00005-of-00008")
    assert utils.prelim_stats_path("p", 7, 1) == os.path.join("p", "prelim_stats_00007_1.json")
    assert utils.filter_stats_path("o", 7, 0) == os.path.join("o", "stats", "stats_00007_0.json")
    assert utils.final_stats_path("o") == os.path.join("o", "stats", "final_stats.json")
    assert utils.total_counts_path("p") == os.path.join("p", "total_counts.json")
    assert utils.total_counts_path("p", cumulative=True) == os.path.join(
        "p", "total_counts_sum.json"
    )
    assert utils.threshold_path("o") == os.path.join("o", "threshold.json")
    assert utils.num_image_across_cat_path("o") == os.path.join("o", "num_image_across_cat.json")


def test_count_records(tmp_path):
    path = str(tmp_path / "records")
    utils.write_tfrecord(path, [b"%d" % i for i in range(7)])
    assert utils.count_records(path) == 7
    # Parts as prediction workers take them: records w, w + 3, ...
    assert [utils.count_records(path, 3, part) for part in range(3)] == [3, 2, 2]


class FakeClock:
    """Stands in for utils' `time` module: time() returns what the test sets."""

    def __init__(self):
        self.now = 1000.0

    def time(self):
        return self.now

    def strftime(self, fmt):
        return "fake"


def test_progress_rate_and_eta_by_hand_and_after_a_restart(monkeypatch):
    clock = FakeClock()
    monkeypatch.setattr(utils, "time", clock)
    progress = utils.Progress(100, "steps", start=10, interval=0)
    clock.now += 40  # e.g. a first call that traced: 10 steps in 40 s
    progress.done = 20
    assert progress.rate() == pytest.approx(10 / 40)
    assert progress.eta_seconds() == pytest.approx(80 / (10 / 40))
    progress.restart_clock()
    assert progress.rate() == 0 and progress.eta_seconds() is None
    clock.now += 2
    progress.update(10)  # 10 more steps in 2 s
    assert progress.rate() == pytest.approx(5.0)
    assert progress.eta_seconds() == pytest.approx(70 / 5.0)
    assert progress.message() == "30/100 steps, 5.0 steps/s, ETA 0:00:14"
