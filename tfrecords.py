"""tf.train.Example records: building, fast batch encoding, writing and counting."""

import collections
import sys

import numpy as np
import tensorflow as tf

import atomic_files


def bytes_feature(value):
    """A Feature holding the one bytes string `value`."""
    return tf.train.Feature(bytes_list=tf.train.BytesList(value=[value]))


def int64_feature(values):
    """A Feature holding an int or an array of ints as int64."""
    values = np.atleast_1d(values).astype(np.int64).tolist()
    return tf.train.Feature(int64_list=tf.train.Int64List(value=values))


def float_feature(values):
    """A Feature holding a float or an array of floats as float32."""
    values = np.atleast_1d(values).astype(np.float32).tolist()
    return tf.train.Feature(float_list=tf.train.FloatList(value=values))


def labeled_example(image_bytes, label):
    """A labeled record: `image/encoded` and the 1-based `image/class/label` (label + 1)."""
    return tf.train.Example(
        features=tf.train.Features(
            feature={
                "image/encoded": bytes_feature(image_bytes),
                "image/class/label": int64_feature(int(label) + 1),
            }
        )
    )


def unlabeled_example(image_bytes, num_classes, label=-1):
    """A raw unlabeled record: the labeled keys plus zero placeholders.

    Args:
      image_bytes: the encoded image.
      num_classes: length of the all-zero placeholder `probabilities`.
      label: the 0-based true class when it is known (SVHN's and MNIST's
        unlabeled images, as the published SVHN preprocessing kept it), stored
        as label + 1 in `image/class/label`; -1 (unknown) is stored as 0.
        Training never reads it; the filter measures pseudo-label accuracy.
    """
    return tf.train.Example(
        features=tf.train.Features(
            feature={
                "image/encoded": bytes_feature(image_bytes),
                "image/class/label": int64_feature(int(label) + 1 if label >= 0 else 0),
                "probabilities": float_feature(np.zeros([num_classes], np.float32)),
                "label": int64_feature(0),
                "prob": float_feature(0.0),
            }
        )
    )


def prediction_example(probabilities):
    """A prediction record: the full `probabilities` vector and its argmax `classes`."""
    probabilities = np.asarray(probabilities, np.float32)
    return tf.train.Example(
        features=tf.train.Features(
            feature={
                "probabilities": float_feature(probabilities),
                "classes": int64_feature(int(np.argmax(probabilities))),
            }
        )
    )


def pseudo_labeled_example(image_bytes, probabilities, label=None):
    """A filtered/reassigned record: image, 0-based `label`, top-1 `prob`, `probabilities`."""
    probabilities = np.asarray(probabilities, np.float32)
    if label is None:
        label = int(np.argmax(probabilities))
    return tf.train.Example(
        features=tf.train.Features(
            feature={
                "image/encoded": bytes_feature(image_bytes),
                "label": int64_feature(label),
                "prob": float_feature(probabilities[label]),
                "probabilities": float_feature(probabilities),
            }
        )
    )


# A pseudo-labeled record encoded by hand, in-graph for a whole batch, for the
# filter's pass 2: building a tf.train.Example takes ~0.1 ms for 1000
# probabilities (one Python float per value), and tf.io.encode_proto copies
# the image once per nesting level and handles floats one by one (~0.3 ms per
# record); joining precomputed pieces costs ~1.5 us per record. Wire format:
# Example{features(1): Features{feature(1): map entry{key(1), value(2):
# Feature{bytes_list(1) | float_list(2) | int64_list(3): List{value(1)}}}}},
# list values packed, keys in sorted order.
_FLOAT_LIST, _INT64_LIST = 0x12, 0x1A  # Feature field tags of float_list(2), int64_list(3)


def _varint(value):
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _feature_entry(key, kind, payload):
    """(parts, size) of one `Features.feature` map entry; `payload` is the list's value bytes."""
    list_header = b"\n" + _varint(len(payload))
    feature_size = len(list_header) + len(payload)
    feature_header = bytes([kind]) + _varint(feature_size)
    key_part = b"\n" + _varint(len(key)) + key
    value_header = b"\x12" + _varint(len(feature_header) + feature_size)
    entry_size = len(key_part) + len(value_header) + len(feature_header) + feature_size
    entry_header = b"\n" + _varint(entry_size)
    parts = [entry_header, key_part, value_header, feature_header, list_header, payload]
    return parts, len(entry_header) + entry_size


_MAX_VARINT_BYTES = 5  # values < 2**35: any TF string length


def _tf_row_bytes(rows, widths=None):
    """The raw bytes of each row of a numeric tensor [n, ...], as strings [n].

    Args:
      rows: tensor of a fixed-size dtype with a static row shape.
      widths: optional int32 [n]: keep only the first widths[i] bytes of row i.

    Returns:
      string tensor [n], bytes in host order (little-endian, as protobuf
      wants; PseudoLabeledEncoder refuses big-endian hosts).
    """
    row_bytes = rows.dtype.size * int(np.prod(rows.shape[1:]))
    n = tf.shape(rows)[0]
    # serialize_tensor writes a TensorProto whose last field is tensor_content,
    # the tensor's memory: row i sits at a fixed offset from the end.
    blob = tf.io.serialize_tensor(rows)
    start = tf.strings.length(blob) - n * row_bytes
    if widths is None:
        widths = tf.fill([n], row_bytes)
    return tf.strings.substr(blob, start + tf.range(n) * row_bytes, widths)


def _tf_varint_size(values):
    """Bytes of the protobuf varints of non-negative int64 values < 2**35."""
    thresholds = tf.constant([1 << (7 * i) for i in range(1, _MAX_VARINT_BYTES)], tf.int64)
    return 1 + tf.reduce_sum(tf.cast(values[..., None] >= thresholds, tf.int64), axis=-1)


def _tf_varints(values):
    """Protobuf varints of non-negative int64 values [n, k] < 2**35, as strings [n, k]."""
    flat = tf.reshape(values, [-1])
    shifts = tf.constant([7 * i for i in range(_MAX_VARINT_BYTES)], tf.int64)
    groups = tf.bitwise.bitwise_and(tf.bitwise.right_shift(flat[:, None], shifts), 0x7F)
    num_bytes = _tf_varint_size(flat)
    more = tf.range(_MAX_VARINT_BYTES, dtype=tf.int64)[None, :] < num_bytes[:, None] - 1
    data = tf.cast(tf.where(more, tf.bitwise.bitwise_or(groups, 0x80), groups), tf.uint8)
    strings = _tf_row_bytes(data, tf.cast(num_bytes, tf.int32))
    return tf.reshape(strings, tf.shape(values))


class PseudoLabeledEncoder:
    """Serializes batches of pseudo-labeled records in-graph.

    Calling it gives, for each row, a serialized tf.train.Example that parses
    to `pseudo_labeled_example(image, probabilities, label)`, its features in
    key order (tests/oracles.py builds the same bytes with protobuf).

    Args:
      num_classes: length of every probability vector.
    """

    def __init__(self, num_classes):
        if sys.byteorder != "little":
            raise NotImplementedError("PseudoLabeledEncoder copies floats in host byte order")
        self.num_classes = num_classes
        # Everything but the image entry's lengths is constant, or depends on
        # the label only: build those pieces once with the Python encoder
        # (`[:-1]`: all parts of an entry but its payload).
        self._label_entries = tf.constant(
            [
                b"".join(_feature_entry(b"label", _INT64_LIST, _varint(c))[0])
                for c in range(num_classes)
            ]
        )
        self._prob_prefix = b"".join(_feature_entry(b"prob", _FLOAT_LIST, bytes(4))[0][:-1])
        self._probs_prefix = b"".join(
            _feature_entry(b"probabilities", _FLOAT_LIST, bytes(4 * num_classes))[0][:-1]
        )
        self._encode = tf.function(
            self.encode_batch,
            input_signature=[
                tf.TensorSpec([None], tf.string),
                tf.TensorSpec([None, num_classes], tf.float32),
                tf.TensorSpec([None], tf.int64),
            ],
        )

    def __call__(self, images, probabilities, labels):
        """Serialized records [n] of images [n], probabilities [n, C] and 0-based labels [n]."""
        return self._encode(images, probabilities, tf.cast(labels, tf.int64))

    def encode_batch(self, images, probabilities, labels):
        """Like __call__, as plain TensorFlow ops: for use inside a tf.function or tf.data map.

        Args:
          images: string tensor [n].
          probabilities: float32 tensor [n, num_classes].
          labels: int64 tensor [n], in [0, num_classes).

        Returns:
          string tensor [n] of serialized tf.train.Example records.
        """
        key = b"\n\x0dimage/encoded"
        # Sizes of the image entry's nested messages, inside out: BytesList,
        # Feature, map entry; then the Features message. Each is preceded by
        # a one-byte tag and the varint of its size.
        image = tf.cast(tf.strings.length(images), tf.int64)
        bytes_list = 1 + _tf_varint_size(image) + image
        feature = 1 + _tf_varint_size(bytes_list) + bytes_list
        entry = len(key) + 1 + _tf_varint_size(feature) + feature
        label_entries = tf.gather(self._label_entries, labels)
        features = (
            1
            + _tf_varint_size(entry)
            + entry
            + tf.cast(tf.strings.length(label_entries), tf.int64)
            + len(self._prob_prefix)
            + 4
            + len(self._probs_prefix)
            + 4 * self.num_classes
        )
        varints = tf.unstack(
            _tf_varints(tf.stack([features, entry, feature, bytes_list, image], axis=1)), axis=1
        )
        top_prob = tf.gather(probabilities, labels, batch_dims=1)
        return tf.strings.join(
            [
                b"\n",
                varints[0],
                b"\n",
                varints[1],
                key,
                b"\x12",
                varints[2],
                b"\n",
                varints[3],
                b"\n",
                varints[4],
                images,
                label_entries,
                self._prob_prefix,
                _tf_row_bytes(top_prob),
                self._probs_prefix,
                _tf_row_bytes(probabilities),
            ]
        )


def encode_jpeg(image, quality=95):
    """Encodes a uint8 [H, W, C] array as JPEG bytes."""
    image = np.asarray(image, dtype=np.uint8)
    if image.ndim == 2:
        image = image[:, :, None]
    return tf.io.encode_jpeg(image, quality=quality).numpy()


def write_tfrecord(path, serialized_records):
    """Writes serialized records to `path` atomically; returns how many were written."""
    count = 0
    with atomic_files.atomic_output(path) as tmp:
        with tf.io.TFRecordWriter(tmp) as writer:
            for record in serialized_records:
                writer.write(record)
                count += 1
    return count


def write_tfrecord_batches(path, batches):
    """Like write_tfrecord, for an iterable of sequences of serialized records.

    Returns:
      The number of records written.
    """
    count = 0
    with atomic_files.atomic_output(path) as tmp:
        with tf.io.TFRecordWriter(tmp) as writer:
            write = writer.write
            for batch in batches:
                # One C-level loop per batch: a Python loop would add ~0.1 us per record.
                collections.deque(map(write, batch), maxlen=0)
                count += len(batch)
    return count


def count_records(path, num_parts=1, part=0):
    """Records of a TFRecord file, or of its records part, part + num_parts, part + 2 num_parts, ..."""
    dataset = tf.data.TFRecordDataset(path)
    if num_parts > 1:
        dataset = dataset.shard(num_parts, part)
    return int(dataset.reduce(np.int64(0), lambda n, _: n + 1).numpy())
