"""tf.train.Example builders, the in-graph encoder, TFRecord writing and counting."""

import numpy as np
import oracles
import pytest
import tensorflow as tf

import tfrecords


@pytest.mark.parametrize(
    "num_classes,image_size,label",
    [(10, 50, None), (10, 0, 9), (1000, 120_000, None), (1000, 300, 999), (200, 130, 128)],
)
def test_fast_pseudo_labeled_record_equals_the_example(num_classes, image_size, label):
    rng = np.random.default_rng(num_classes + image_size)
    image = rng.bytes(image_size)
    probs = rng.dirichlet(np.ones(num_classes)).astype(np.float32)
    encoded_label = int(np.argmax(probs)) if label is None else label
    fast = tfrecords.PseudoLabeledEncoder(num_classes)([image], probs[None], [encoded_label])[0]
    fast = fast.numpy()
    assert fast == oracles.serialize_pseudo_labeled(image, probs, label)
    reference = tfrecords.pseudo_labeled_example(image, probs, label)
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
    encoder = tfrecords.PseudoLabeledEncoder(num_classes)
    encoded = encoder(tf.constant(images, tf.string), probs, labels).numpy()
    expected = [
        oracles.serialize_pseudo_labeled(*args) for args in zip(images, probs, labels, strict=True)
    ]
    assert encoded.tolist() == expected
    empty = encoder(tf.constant([], tf.string), np.zeros([0, num_classes], np.float32), [])
    assert empty.shape == (0,)


def test_write_tfrecord_batches(tmp_path):
    path = str(tmp_path / "out")
    assert (
        tfrecords.write_tfrecord_batches(path, [[b"a", b"bc"], [], np.array([b"d"], object)]) == 3
    )
    assert [r.numpy() for r in tf.data.TFRecordDataset(path)] == [b"a", b"bc", b"d"]


def test_count_records(tmp_path):
    path = str(tmp_path / "records")
    tfrecords.write_tfrecord(path, [b"%d" % i for i in range(7)])
    assert tfrecords.count_records(path) == 7
    # Parts as prediction workers take them: records w, w + 3, ...
    assert [tfrecords.count_records(path, 3, part) for part in range(3)] == [3, 2, 2]
