"""Record encoding helpers of utils.py."""

import json

import numpy as np
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
    fast = utils.serialize_pseudo_labeled(image, probs, label)
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


def test_write_json_compact_and_indented(tmp_path):
    obj = {"b": [[0.5, 3]], "a": {"x": 1}}
    utils.write_json(str(tmp_path / "c.json"), obj, indent=None)
    utils.write_json(str(tmp_path / "i.json"), obj)
    compact = (tmp_path / "c.json").read_text()
    assert compact == '{"a": {"x": 1}, "b": [[0.5, 3]]}'
    assert "\n" in (tmp_path / "i.json").read_text()
    assert utils.read_json(str(tmp_path / "i.json")) == json.loads(compact) == obj
