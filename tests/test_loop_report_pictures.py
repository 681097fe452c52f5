"""loop_report.py's pseudo-label pictures: which images are shown, and the PNG itself."""

import os

import numpy as np

import atomic_files
import file_names
import loop_report
import tfrecords


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
                tfrecords.pseudo_labeled_example(
                    tfrecords.encode_jpeg(image), p
                ).SerializeToString()
            )
    records.append(records[0])  # an upsampled copy: shown once
    tfrecords.write_tfrecord(
        file_names.filtered_path(os.path.join(root, "filter_data"), 0, 0, 1), records
    )
    counts = {str(c): [[0.5, len(p) + 1]] for c, p in probs_by_class.items()}
    atomic_files.write_json(os.path.join(root, "prelim_stats", "total_counts.json"), counts)
    final = {"cat_count": {str(c): len(p) for c, p in probs_by_class.items()}, "total_cnt": 21}
    atomic_files.write_json(os.path.join(root, "filter_data", "stats", "final_stats.json"), final)


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
    from PIL import Image

    fake_round(tmp_path, {0: [0.9, 0.8], 1: [0.7], 2: [0.6, 0.99]})
    path = str(tmp_path / "p.png")
    loop_report.draw_pseudo_labels(str(tmp_path), 1, ["cat", "dog", "bird"], path)
    image = Image.open(path)
    assert image.format == "PNG" and image.size[1] > image.size[0] * 0.5


def student_round_results(confusion=None):
    """results.json of a teacher and one student round of 3 classes."""
    student = {
        "round": 1,
        "role": "student",
        "test_top_1": 0.93,
        "pseudo_label_counts_before": [50, 30, 20],
        "pseudo_label_counts_after": [25, 25, 25],
        "pseudo_label_accuracy_before": 0.8,
        "pseudo_label_accuracy_after": 0.9,
        "pseudo_label_accuracy_per_class_before": [0.9, 0.7, None],
        "pseudo_label_accuracy_per_class_after": [1.0, 0.8, None],
        "pseudo_label_confusion_before": confusion,
        "pseudo_label_confusion_after": confusion,
    }
    teacher = {"round": 0, "role": "teacher", "test_top_1": 0.9, "model_name": "b0"}
    return {"rounds": [teacher, student], "wall_seconds": 60.0}


def test_summary_figure_names_the_classes_and_rounds():
    fig = loop_report.summary_figure(student_round_results(), ["cat", "dog", "bird"])
    accuracy, histogram = fig.axes[:2]
    assert [t.get_text() for t in accuracy.get_xticklabels()] == ["teacher", "student 1"]
    assert [round(b.get_height(), 6) for b in accuracy.patches] == [90.0, 93.0]
    assert [t.get_text() for t in histogram.get_xticklabels()] == ["cat", "dog", "bird"]
    heights = [b.get_height() for b in histogram.patches]
    assert heights == [50, 30, 20, 25, 25, 25]  # before, then after balancing
    assert "80.00 / 90.00" in histogram.get_title()


def test_summary_figure_shows_train_accuracy_beside_test():
    """An underfit teacher shows at a glance: its train bar beside its test bar."""
    results = student_round_results()
    results["rounds"][0]["train_top_1"] = 0.75
    results["rounds"][1]["train_top_1"] = 0.99
    accuracy = loop_report.summary_figure(results, ["cat", "dog", "bird"]).axes[0]
    assert [round(b.get_height(), 6) for b in accuracy.patches] == [75.0, 99.0, 90.0, 93.0]
    # Each round's pair of bars sits on its tick, train left of test.
    x = [b.get_x() + b.get_width() / 2 for b in accuracy.patches]
    assert x[0] < 0 < x[2] and x[1] < 1 < x[3]
    assert [t.get_text() for t in accuracy.get_legend().get_texts()] == ["train", "test"]
    assert [t.get_text() for t in accuracy.get_xticklabels()] == ["teacher", "student 1"]


def test_pseudo_label_accuracy_figure_shows_the_confusion_matrix():
    confusion = [[0, 0, 3], [1, 0, 1], [1, 1, 3], [2, 2, 2]]
    fig = loop_report.pseudo_label_accuracy_figure(
        student_round_results(confusion)["rounds"][1], ["cat", "dog", "bird"]
    )
    bars, before = fig.axes[:2]
    assert [t.get_text() for t in bars.get_xticklabels()] == ["cat", "dog", "bird"]
    heights = [b.get_height() for b in bars.patches]
    np.testing.assert_allclose(heights, [90, 70, np.nan, 100, 80, np.nan])
    # Rows: true classes as fractions of their images; the counts are written in the cells.
    shown = before.images[0].get_array()
    np.testing.assert_allclose(shown, [[1, 0, 0], [0.25, 0.75, 0], [0, 0, 1]])
    assert sorted(t.get_text() for t in before.texts) == ["1", "2", "3", "3"]
    assert [t.get_text() for t in before.get_yticklabels()] == ["cat", "dog", "bird"]
    np.testing.assert_array_equal(
        loop_report.confusion_matrix(confusion, 3), [[3, 0, 0], [1, 3, 0], [0, 0, 2]]
    )
