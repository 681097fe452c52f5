"""loop_report.py's pseudo-label pictures: which images are shown, and the PNG itself."""

import os

import numpy as np
import pytest

import loop_report
import utils


def fake_round(out, probs_by_class):
    """A round-1 pseudo folder: filtered records with the given confidences, and the stats."""
    root = loop_report.pseudo_dir(str(out), 1)
    records = []
    for label, probs in probs_by_class.items():
        for i, prob in enumerate(probs):
            image = np.full((8, 8, 3), (label * 40 + i) % 256, np.uint8)
            p = np.full(3, (1 - prob) / 2, np.float32)
            p[label] = prob
            records.append(
                utils.pseudo_labeled_example(utils.encode_jpeg(image), p).SerializeToString()
            )
    records.append(records[0])  # an upsampled copy: shown once
    utils.write_tfrecord(utils.filtered_path(os.path.join(root, "filter_data"), 0, 0, 1), records)
    counts = {str(c): [[0.5, len(p) + 1]] for c, p in probs_by_class.items()}
    utils.write_json(os.path.join(root, "prelim_stats", "total_counts.json"), counts)
    final = {"cat_count": {str(c): len(p) for c, p in probs_by_class.items()}, "total_cnt": 21}
    utils.write_json(os.path.join(root, "filter_data", "stats", "final_stats.json"), final)


def test_most_and_least_confident_per_class(tmp_path):
    probs = {0: [0.9 - 0.05 * i for i in range(10)], 1: [0.5, 0.95], 2: [0.7]}  # 0.9 .. 0.45
    fake_round(tmp_path, probs)
    examples = loop_report.pseudo_label_examples(str(tmp_path), 1, 3, per_row=3)
    top, near = examples[0]
    np.testing.assert_allclose([p for p, _ in top], [0.9, 0.85, 0.8], rtol=1e-6)
    np.testing.assert_allclose([p for p, _ in near], [0.55, 0.5, 0.45], rtol=1e-6)
    np.testing.assert_allclose([p for p, _ in examples[1][0]], [0.95, 0.5], rtol=1e-6)
    assert len(examples[2][0]) == len(examples[2][1]) == 1


def test_pseudo_labels_png_has_class_rows(tmp_path):
    pytest.importorskip("matplotlib")
    from PIL import Image

    fake_round(tmp_path, {0: [0.9, 0.8], 1: [0.7], 2: [0.6, 0.99]})
    path = str(tmp_path / "p.png")
    loop_report.draw_pseudo_labels(str(tmp_path), 1, ["cat", "dog", "bird"], path)
    image = Image.open(path)
    assert image.format == "PNG" and image.size[1] > image.size[0] * 0.5
