"""Reference implementations the tests check the production code against.

Each is the plain, slow statement of what a fast in-graph computation must
give (docs/pseudo_labels.md, "Filtering and balancing"); no production code
calls them.
"""

import numpy as np
import tensorflow as tf

import filter_stats
import tfrecords


def top1(probabilities):
    """Predicted class (np.argmax: the first maximum) and its probability of a [n, C] array."""
    labels = np.argmax(probabilities, axis=1)
    return labels, probabilities[np.arange(len(labels)), labels]


def bin_index(top_prob):
    """Index i of the bin [t_i, t_{i+1}) holding each probability; >= 1.0 goes to bin 100."""
    thresholds = filter_stats.THRESHOLDS_F32
    return np.searchsorted(thresholds, np.asarray(top_prob, np.float32), side="right") - 1


def count_bins(labels, bins, num_classes):
    """Counts per (class, bin) as an int64 array [num_classes, NUM_BINS]."""
    num_bins = filter_stats.NUM_BINS
    flat = np.asarray(labels, np.int64) * num_bins + np.asarray(bins, np.int64)
    return np.bincount(flat, minlength=num_classes * num_bins).reshape(num_classes, num_bins)


def decide_copies(labels, top_prob, threshold_idx, rates, max_prob, uniforms):
    """Number of copies of each image in the output.

    An image passes if threshold <= prob <= max_prob for its class; it is then
    written floor(rate) times plus once more with probability frac(rate),
    decided by `uniforms` (one U[0, 1) draw per image).

    Returns:
      (copies, passed): int64 copies and the boolean pass mask.
    """
    top_prob = np.asarray(top_prob, np.float32)
    passed = (bin_index(top_prob) >= threshold_idx[labels]) & (top_prob <= np.float32(max_prob))
    rate = rates[labels]
    whole = np.floor(rate)
    copies = (whole + (uniforms < rate - whole)).astype(np.int64)
    return np.where(passed, copies, 0), passed


def _varint(value):
    # A packed one-value Int64List is its tag, its length and the value's varint.
    return tf.train.Int64List(value=[value]).SerializeToString()[2:]


def serialize_pseudo_labeled(image_bytes, probabilities, label=None):
    """The bytes tfrecords.PseudoLabeledEncoder must write for one record, built by protobuf.

    The features of `tfrecords.pseudo_labeled_example`, each serialized by
    protobuf as a one-entry Features message (which is one map entry) and
    joined in key order. Protobuf's own serialization of the whole Example
    parses the same but orders the map entries its own way.
    """
    features = tfrecords.pseudo_labeled_example(image_bytes, probabilities, label).features.feature
    entries = b"".join(
        tf.train.Features(feature={key: features[key]}).SerializeToString()
        for key in sorted(features)
    )
    return b"\n" + _varint(len(entries)) + entries


def splitmix64(x):
    """SplitMix64's output for state x, in Python integers (Steele et al., 2014)."""
    mask = 2**64 - 1
    z = (x + 0x9E3779B97F4A7C15) & mask
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & mask
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & mask
    return z ^ (z >> 31)


def record_uniform(seed, shard_id, position):
    """One record's draw, as filter_stats.record_uniforms must compute it."""
    key = splitmix64(splitmix64(seed) ^ shard_id)
    return (splitmix64(key ^ position) >> 11) / 2.0**53
