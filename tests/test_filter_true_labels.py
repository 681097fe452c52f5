"""Accuracy of the pseudo labels when the unlabeled records carry true labels (task 5).

The filter's final stats report it; loop_report.py shows it in results.json
and its table.
"""

import json
import os
import subprocess
import sys

import filter_helpers as fh
import numpy as np
import pytest

import atomic_files
import file_names
import loop_report
import tfrecords

# (predicted class, top-1 probability, true class or -1 = unknown).
HAND_SHARD = [
    (0, 0.9, 0),
    (0, 0.8, 1),
    (0, 0.4, 0),  # below --min_threshold=0.5
    (1, 0.9, 1),
    (1, 0.3, 2),  # below
    (2, 0.7, 2),
    (2, 0.6, -1),
    (3, 0.95, 3),
]


def write_hand_dataset(tmp_path, items):
    dirs = {name: str(tmp_path / name) for name in ("in", "pred", "info", "prelim", "out")}
    images = [
        tfrecords.encode_jpeg(np.full([8, 8, 3], 20 * i, np.uint8)) for i in range(len(items))
    ]
    tfrecords.write_tfrecord(
        os.path.join(dirs["in"], "extra-00000-of-00001"),
        (
            tfrecords.unlabeled_example(im, fh.NUM_CLASSES, true).SerializeToString()
            for im, (_, _, true) in zip(images, items, strict=True)
        ),
    )
    probs = np.array([fh.probs_for(label, top) for label, top, _ in items])
    fh.write_predictions(dirs, 0, 1, probs, 1)
    return dirs


def test_accuracy_by_hand(tmp_path):
    dirs = write_hand_dataset(tmp_path, HAND_SHARD)
    fh.run_both_passes(dirs, 1, 5, min_threshold=0.5, use_all=True)
    final = atomic_files.read_json(os.path.join(dirs["out"], "stats", "final_stats.json"))
    accuracy = final["pseudo_label_accuracy"]
    before, after = accuracy["before_filtering"], accuracy["after_balancing"]
    # All 7 predictions with a true class: 0 (2 of 3 right), 1 (1 of 2), 2 (1 of 1), 3 (1 of 1).
    assert (before["num_correct"], before["num_images"]) == (5, 7)
    assert before["accuracy"] == round(5 / 7, 6)
    assert {c: (v["num_correct"], v["num_images"]) for c, v in before["per_class"].items()} == {
        "0": (2, 3),
        "1": (1, 2),
        "2": (1, 1),
        "3": (1, 1),
    }
    assert before["per_class"]["0"]["accuracy"] == round(2 / 3, 6)
    # Kept once each (use_all, >= 0.5): 0 (1 of 2), 1 (1 of 1), 2 (1 of 1 known), 3 (1 of 1).
    assert (after["num_correct"], after["num_images"], after["accuracy"]) == (4, 5, 0.8)
    assert {c: (v["num_correct"], v["num_images"]) for c, v in after["per_class"].items()} == {
        "0": (1, 2),
        "1": (1, 1),
        "2": (1, 1),
        "3": (1, 1),
    }
    assert accuracy["num_images_without_true_label"] == 1
    assert accuracy["num_images_with_invalid_true_label"] == 0
    # Confusion matrices, [true class, pseudo label, count], by hand from HAND_SHARD.
    assert accuracy["confusion"]["before_filtering"] == [
        [0, 0, 2],
        [1, 0, 1],
        [1, 1, 1],
        [2, 1, 1],
        [2, 2, 1],
        [3, 3, 1],
    ]
    assert accuracy["confusion"]["after_balancing"] == [
        [0, 0, 1],
        [1, 0, 1],
        [1, 1, 1],
        [2, 2, 1],
        [3, 3, 1],
    ]


def test_accuracy_counts_copies_of_the_written_records(tmp_path):
    """After balancing, the accuracy is that of the output records, upsampled copies included."""
    dirs, truth = fh.make_dataset(tmp_path, 2, 40, num_workers=2, true_labels=0.7, seed=4)
    fh.run_both_passes(dirs, 2, 25, min_threshold=0.3)
    correct, total = np.zeros(fh.NUM_CLASSES), np.zeros(fh.NUM_CLASSES)
    confusion = np.zeros([fh.NUM_CLASSES, fh.NUM_CLASSES], np.int64)
    for shard in range(2):
        for record in fh.read_records(file_names.filtered_path(dirs["out"], 0, shard, 2)):
            feature = record.features.feature
            label = feature["label"].int64_list.value[0]
            true = truth[feature["image/encoded"].bytes_list.value[0]][2]
            total[label] += 1
            correct[label] += true == label
            confusion[true, label] += 1
    assert total.max() > 25, "data must exercise upsampling (several copies)"
    final = atomic_files.read_json(os.path.join(dirs["out"], "stats", "final_stats.json"))
    after = final["pseudo_label_accuracy"]["after_balancing"]
    assert after["num_images"] == final["total_cnt"] == total.sum()
    assert after["num_correct"] == correct.sum()
    for c in range(fh.NUM_CLASSES):
        assert after["per_class"][str(c)]["num_correct"] == correct[c]
    before = final["pseudo_label_accuracy"]["before_filtering"]
    predicted = [int(np.argmax(p)) for _, p, _ in truth.values()]
    true = [t for _, _, t in truth.values()]
    assert before["num_images"] == len(truth)
    assert before["num_correct"] == sum(p == t for p, t in zip(predicted, true, strict=True))
    # The confusion matrices, summed over the shards and filter tasks, equal the records'.
    matrices = final["pseudo_label_accuracy"]["confusion"]
    np.testing.assert_array_equal(
        loop_report.confusion_matrix(matrices["after_balancing"], fh.NUM_CLASSES), confusion
    )
    expected = np.zeros_like(confusion)
    np.add.at(expected, (true, predicted), 1)
    np.testing.assert_array_equal(
        loop_report.confusion_matrix(matrices["before_filtering"], fh.NUM_CLASSES), expected
    )


def test_unknown_and_invalid_true_labels(tmp_path):
    items = [(0, 0.9, -1), (1, 0.9, 1), (2, 0.9, 99 - 1)]  # stored 0, 2 and 99
    dirs = write_hand_dataset(tmp_path, items)
    fh.run_both_passes(dirs, 1, 1, use_all=True)
    final = atomic_files.read_json(os.path.join(dirs["out"], "stats", "final_stats.json"))
    accuracy = final["pseudo_label_accuracy"]
    assert accuracy["before_filtering"]["num_images"] == 1
    assert accuracy["num_images_without_true_label"] == 1
    assert accuracy["num_images_with_invalid_true_label"] == 1


# ---------------------------------------------------------------------------
# loop_report.py


def write_model_dir(path, test, dev, train):
    os.makedirs(path)
    results = {
        subset: {"top_1_accuracy": value, "global_step": 4, "num_images": 30}
        for subset, value in (("test", test), ("dev", dev), ("train", train))
    }
    atomic_files.write_json(os.path.join(path, "eval_results.json"), results)
    atomic_files.write_json(
        os.path.join(path, "model_params.txt"),
        {"model_name": "efficientnet-b0", "num_classes": fh.NUM_CLASSES, "num_params": 1234},
    )
    atomic_files.write_json(
        os.path.join(path, "FLAGS.json"), {"train_steps": 4, "unlabel_ratio": 2}
    )


def write_round(out, round_index, tmp_path, true_labels):
    """Round r's model and its filter outputs, written by the real filter."""
    pseudo = os.path.join(out, f"round{round_index}_pseudo")
    dirs, _ = fh.make_dataset(
        tmp_path / f"src{round_index}", 1, 30, num_workers=1, true_labels=true_labels
    )
    dirs.update(
        prelim=os.path.join(pseudo, "prelim_stats"), out=os.path.join(pseudo, "filter_data")
    )
    fh.run_both_passes(dirs, 1, 8)
    return atomic_files.read_json(os.path.join(dirs["out"], "stats", "final_stats.json"))


def run_report(out, rounds):
    return subprocess.run(
        [sys.executable, "loop_report.py", f"--output_dir={out}", f"--rounds={rounds}"],
        cwd=fh.REPO,
        capture_output=True,
        text=True,
        timeout=600,
    )


@pytest.fixture(scope="module")
def loop_output(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("loop")
    out = str(tmp_path / "out")
    write_model_dir(os.path.join(out, "round0_teacher"), 0.9, 0.91, 0.95)
    write_model_dir(os.path.join(out, "round1_student"), 0.93, 0.92, 0.96)
    write_model_dir(os.path.join(out, "round2_student"), 0.94, 0.93, 0.97)
    finals = [write_round(out, 1, tmp_path, 0.8), write_round(out, 2, tmp_path, None)]
    return out, finals


@pytest.mark.slow
@pytest.mark.e2e
def test_loop_report_shows_pseudo_label_accuracy(loop_output):
    out, (final1, final2) = loop_output
    result = run_report(out, 2)
    assert result.returncode == 0, result.stderr[-3000:]
    with open(os.path.join(out, "results.json")) as f:
        rounds = json.load(f)["rounds"]
    accuracy = final1["pseudo_label_accuracy"]
    assert rounds[1]["pseudo_label_accuracy_before"] == accuracy["before_filtering"]["accuracy"]
    assert rounds[1]["pseudo_label_accuracy_after"] == accuracy["after_balancing"]["accuracy"]
    per_class = rounds[1]["pseudo_label_accuracy_per_class_after"]
    assert len(per_class) == fh.NUM_CLASSES
    for c, value in enumerate(per_class):
        expected = accuracy["after_balancing"]["per_class"].get(str(c), {}).get("accuracy")
        assert value == expected
    assert "pseudo_label_accuracy" not in final2  # round 2's records had no true labels
    assert rounds[2]["pseudo_label_accuracy_before"] is None
    assert rounds[2]["pseudo_label_accuracy_per_class_before"] is None
    assert "pseudo_label_accuracy_before" not in rounds[0]
    # The printed table: the teacher row has no value, round 1 both, round 2 "-".
    # (after the "Wrote .../pseudo_labels.png" lines)
    lines = result.stdout.splitlines()
    lines = lines[next(i for i, line in enumerate(lines) if line.startswith("round")) :]
    assert "pseudo-label acc % (all / kept)" in lines[0]
    pair = " / ".join(
        f"{100 * accuracy[k]['accuracy']:.2f}" for k in ("before_filtering", "after_balancing")
    )
    assert lines[3].split()[:3] == ["1", "student", "1"] and lines[3].endswith(pair)
    assert lines[4].endswith(" -")
    assert os.path.getsize(os.path.join(out, "summary.png")) > 1000
    # Round 1's confusion matrices and its picture; the per-class table.
    confusion = accuracy["confusion"]
    assert rounds[1]["pseudo_label_confusion_before"] == confusion["before_filtering"]
    assert rounds[1]["pseudo_label_confusion_after"] == confusion["after_balancing"]
    assert rounds[2]["pseudo_label_confusion_before"] is None
    picture = os.path.join(out, "round1_pseudo", loop_report.PSEUDO_LABEL_ACCURACY_FILE)
    assert f"Wrote {picture}" in result.stdout
    assert not os.path.exists(picture.replace("round1", "round2"))
    table = result.stdout[result.stdout.index("round 1 pseudo labels per class:") :]
    row = table.splitlines()[3].split()  # header, column names, rule, class 0
    per_class_before = rounds[1]["pseudo_label_accuracy_per_class_before"]
    assert row[:3] == [
        "0",
        str(rounds[1]["pseudo_label_counts_before"][0]),
        str(rounds[1]["pseudo_label_counts_after"][0]),
    ]
    assert row[3] == f"{100 * per_class_before[0]:.2f}"


@pytest.mark.slow
@pytest.mark.e2e
def test_loop_report_names_a_missing_round(loop_output):
    out, _ = loop_output
    result = run_report(out, 3)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1] == (
        f"loop_report.py: error: {out}/round3_student/eval_results.json is missing: "
        "round 3 has not finished."
    )
