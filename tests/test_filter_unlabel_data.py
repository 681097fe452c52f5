"""Tests of filter_unlabel_data: binning, threshold selection, balancing, files."""

import hashlib
import math
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
from absl.testing import flagsaver

import filter_unlabel_data as fud
import utils

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NUM_CLASSES = 4


def probs_for(label, top, num_classes=NUM_CLASSES):
    """A probability vector whose argmax is `label` with probability `top` (> 1 / num_classes)."""
    vector = np.full([num_classes], (1.0 - top) / (num_classes - 1), np.float32)
    vector[label] = top
    return vector


def checkpoint(name, step=100, use_ema=True):
    """The provenance that predict_label.py records for checkpoint `name` at `step`."""
    return {
        "checkpoint": f"/ckpt/{name}/ckpt-{step}",
        "global_step": step,
        "fingerprint": hashlib.sha256(f"{name}-{step}".encode()).hexdigest(),
        "use_ema": use_ema,
        "model": {"model_name": "efficientnet-b0", "num_classes": NUM_CLASSES},
    }


TEACHER = checkpoint("teacher")


def write_info(dirs, shard, num_shards, worker, image_num, provenance=TEACHER):
    """An info file as predict_label.py writes it; provenance None: the old {"image_num"} layout."""
    info = {"image_num": image_num}
    if provenance is not None:
        input_file = fud.input_path(dirs.get("in", ""), "extra", shard, num_shards)
        info["provenance"] = dict(provenance, input_file=input_file, input_records=image_num)
        if os.path.exists(input_file):
            info["provenance"]["input_bytes"] = os.path.getsize(input_file)
    utils.write_json(utils.info_path(dirs["info"], shard, num_shards, worker), info)


def write_predictions(dirs, shard, num_shards, probs, num_workers, provenance=TEACHER):
    """Writes prediction and info files as `num_workers` prediction workers would."""
    for worker in range(num_workers):
        part = probs[worker::num_workers]
        utils.write_tfrecord(
            utils.prediction_path(dirs["pred"], shard, num_shards, worker),
            (utils.prediction_example(p).SerializeToString() for p in part),
        )
        write_info(dirs, shard, num_shards, worker, len(part), provenance)


def make_dataset(
    tmp_path,
    num_shards,
    images_per_shard,
    num_workers,
    seed=0,
    class_weights=None,
    provenance=TEACHER,
    true_labels=None,
):
    """Raw unlabeled shards and their predictions.

    Args:
      true_labels: None: the records' image/class/label is 0 (unknown); a
        float p: the true class is the predicted one with probability p,
        else another, stored as class + 1 as proc_svhn.py does.

    Returns:
      (dirs, truth): truth maps each JPEG to (shard, probabilities), plus
      its true class (or -1) when `true_labels` is set.
    """
    rng = np.random.default_rng(seed)
    dirs = {name: str(tmp_path / name) for name in ("in", "pred", "info", "prelim", "out")}
    class_weights = class_weights or [0.55, 0.3, 0.1, 0.05]
    truth = {}
    for shard in range(num_shards):
        records, probs = [], []
        for _ in range(images_per_shard):
            image = utils.encode_jpeg(rng.integers(0, 256, [8, 8, 3]))
            label = rng.choice(NUM_CLASSES, p=class_weights)
            # Few distinct confidences, so that bins hold several images and a
            # class's count jumps past num_image; 0.3 and 1.0 are bin edges.
            top = rng.choice([0.3, 0.45, 0.6, 0.8, 0.95, 1.0])
            probs.append(probs_for(label, top))
            true = -1
            if true_labels is not None:
                true = label if rng.random() < true_labels else (label + 1) % NUM_CLASSES
            records.append(utils.unlabeled_example(image, NUM_CLASSES, true))
            truth[image] = (shard, probs[-1]) if true_labels is None else (shard, probs[-1], true)
        utils.write_tfrecord(
            fud.input_path(dirs["in"], "extra", shard, num_shards),
            (r.SerializeToString() for r in records),
        )
        write_predictions(dirs, shard, num_shards, probs, num_workers, provenance)
    assert len(truth) == num_shards * images_per_shard, "JPEGs must be unique to trace records"
    return dirs, truth


def read_records(path):
    return [tf.train.Example.FromString(r.numpy()) for r in tf.data.TFRecordDataset(path)]


def run_pass1(dirs, num_shards, *, total_replicas=1, shards=None):
    """Pass 1 as main() runs it, provenance included."""
    tasks = [-1] if total_replicas == 1 else list(range(total_replicas))
    for shard in range(num_shards) if shards is None else shards:
        for task in tasks:
            result = fud.count_shard(
                dirs["pred"],
                dirs["info"],
                shard,
                num_shards,
                NUM_CLASSES,
                task=task,
                total_replicas=total_replicas,
            )
            fud.write_prelim_stats(
                dirs["prelim"], shard, result.task_id, result.counts, result.provenance
            )


def run_both_passes(dirs, num_shards, num_image, *, total_replicas=1, **kwargs):
    tasks = [-1] if total_replicas == 1 else list(range(total_replicas))
    run_pass1(dirs, num_shards, total_replicas=total_replicas)
    stats = []
    for shard in range(num_shards):
        for task in tasks:
            stats.append(
                fud.filter_shard(
                    dirs["in"],
                    dirs["pred"],
                    dirs["info"],
                    dirs["prelim"],
                    dirs["out"],
                    shard,
                    num_shards,
                    NUM_CLASSES,
                    num_image,
                    task=task,
                    total_replicas=total_replicas,
                    file_prefix="extra",
                    **kwargs,
                )
            )
    return stats


def check_record(example, truth):
    """Checks keys and pseudo-label of one output record; returns (image, shard, label, prob)."""
    feature = example.features.feature
    assert set(feature) == {"image/encoded", "label", "prob", "probabilities"}
    image = feature["image/encoded"].bytes_list.value[0]
    probs = np.array(feature["probabilities"].float_list.value, np.float32)
    label = feature["label"].int64_list.value[0]
    prob = feature["prob"].float_list.value[0]
    assert image in truth, "output image is not one of the inputs"
    shard, true_probs = truth[image][:2]
    np.testing.assert_array_equal(probs, true_probs)
    assert label == np.argmax(probs)
    assert prob == probs[label]
    return image, shard, label, prob


# ---------------------------------------------------------------------------
# Binning and pass 1.


def test_bin_index_edges():
    probs = [0.0, 0.0099, 0.01, 0.29, 0.3, np.float32(0.3), 0.555, 0.999, 1.0, 1.0000001]
    assert fud.bin_index(probs).tolist() == [0, 0, 1, 29, 30, 30, 55, 99, 100, 100]


@pytest.mark.parametrize("num_workers", [1, 2])
def test_prelim_stats_match_hand_counts(tmp_path, num_workers):
    dirs = {"pred": str(tmp_path / "pred"), "info": str(tmp_path / "info")}
    probs = [
        [0.3, 0.25, 0.25, 0.2],  # class 0, bin 30 (exact edge)
        [0.3, 0.2, 0.25, 0.25],  # class 0, bin 30
        [0.35, 0.3, 0.2, 0.15],  # class 0, bin 35
        [0.0, 1.0, 0.0, 0.0],  # class 1, bin 100 (exact edge)
        [0.0005, 0.999, 0.0005, 0.0],  # class 1, bin 99
        [0.1, 0.2, 0.2, 0.5],  # class 3, bin 50
        [0.26, 0.25, 0.25, 0.24],  # class 0, bin 26
    ]
    write_predictions(dirs, 3, 8, np.array(probs, np.float32), num_workers)
    task_id, counts = fud.compute_prelim_stats(dirs["pred"], dirs["info"], 3, 8, NUM_CLASSES)
    assert task_id == 0
    expected = np.zeros([NUM_CLASSES, 101], np.int64)
    for c, b, n in [(0, 30, 2), (0, 35, 1), (0, 26, 1), (1, 100, 1), (1, 99, 1), (3, 50, 1)]:
        expected[c, b] = n
    np.testing.assert_array_equal(counts, expected)

    path = fud.write_prelim_stats(str(tmp_path / "prelim"), 3, task_id, counts)
    assert path.endswith("prelim_stats_00003_0.json")
    saved = utils.read_json(path)
    assert sorted(saved) == ["0", "1", "3"]  # classes without images are left out
    assert [t for t, _ in saved["0"]] == [i / 100 for i in range(101)]
    assert saved["0"][30] == [0.3, 2] and saved["1"][100] == [1.0, 1]


def test_prelim_stats_errors_name_the_file(tmp_path):
    dirs = {"pred": str(tmp_path / "pred"), "info": str(tmp_path / "info")}
    write_predictions(dirs, 0, 1, np.array([probs_for(0, 0.5)] * 3), 1)
    info = utils.info_path(dirs["info"], 0, 1, 0)
    utils.write_json(info, {"image_num": 4})
    with pytest.raises(fud.FilterError, match="image_num=4") as error:
        fud.compute_prelim_stats(dirs["pred"], dirs["info"], 0, 1, NUM_CLASSES)
    assert info in str(error.value)

    utils.write_json(info, {"image_num": 3})
    with pytest.raises(
        fud.FilterError, match="has 4 probabilities, expected --num_label_classes=5"
    ):
        fud.compute_prelim_stats(dirs["pred"], dirs["info"], 0, 1, 5)


# ---------------------------------------------------------------------------
# Tasks and workers.


def test_task_workers_split_prediction_workers():
    assert fud.task_workers(-1, 1, 4) == (0, [0, 1, 2, 3])
    assert fud.task_workers(1, 2, 4) == (1, [2, 3])
    assert fud.task_workers(0, 2, 2) == (0, [0])
    with pytest.raises(fud.FilterError, match="single task"):
        fud.task_workers(-1, 2, 2)
    with pytest.raises(fud.FilterError, match="split evenly"):
        fud.task_workers(0, 2, 3)
    with pytest.raises(fud.FilterError, match="not in"):
        fud.task_workers(2, 2, 2)


def test_discover_label_replicas(tmp_path):
    info_dir = str(tmp_path)
    for worker in (0, 1, 2):
        utils.write_json(utils.info_path(info_dir, 5, 8, worker), {"image_num": 1})
    utils.write_json(utils.info_path(info_dir, 6, 8, 0), {"image_num": 1})
    utils.write_json(utils.info_path(info_dir, 6, 8, 2), {"image_num": 1})
    assert fud.discover_label_replicas(info_dir, 5, 8) == 3
    with pytest.raises(fud.FilterError, match=r"workers \[0, 2\]"):
        fud.discover_label_replicas(info_dir, 6, 8)
    with pytest.raises(fud.FilterError, match="no prediction info file"):
        fud.discover_label_replicas(info_dir, 7, 8)


# ---------------------------------------------------------------------------
# Thresholds and balancing.


def constructed_counts():
    counts = np.zeros([3, 101], np.int64)
    counts[0, [95, 90, 50, 10]] = [10, 10, 50, 100]
    counts[1, [80, 20]] = [5, 3]
    counts[2, 100] = 30
    return counts


@pytest.mark.parametrize(
    "kwargs, expected_t, expected_n",
    [
        # Class 0 reaches 15 at 0.90 (10 + 10); class 1 never reaches it and
        # stops at min_threshold, leaving out its 3 images at 0.20; class 2
        # reaches it in the top bin.
        (dict(min_threshold=0.3), [0.90, 0.30, 1.00], [20, 5, 30]),
        # Only t < 0.9 counts: class 0 starts at its 0.50 bin, class 2 has none.
        (dict(min_threshold=0.3, max_prob=0.9), [0.50, 0.30, 0.30], [50, 5, 0]),
        (dict(min_threshold=0.0), [0.90, 0.00, 1.00], [20, 8, 30]),
        (dict(min_threshold=0.3, use_all=True), [0.30, 0.30, 0.30], [70, 5, 30]),
        (dict(min_threshold=0.3, use_top=False), [0.30, 0.30, 0.30], [70, 5, 30]),
    ],
)
def test_select_thresholds_hand_computed(kwargs, expected_t, expected_n):
    idx, total = fud.select_thresholds(constructed_counts(), 15, **kwargs)
    np.testing.assert_allclose(fud.THRESHOLDS[idx], expected_t)
    assert total.tolist() == expected_n


def test_select_thresholds_needs_an_eligible_threshold():
    with pytest.raises(fud.FilterError, match="no threshold"):
        fud.select_thresholds(constructed_counts(), 15, min_threshold=0.5, max_prob=0.5)


def test_copy_rates():
    total = np.array([20, 5, 30, 0])
    np.testing.assert_allclose(fud.copy_rates(total, 15), [0.75, 3.0, 0.5, 0.0])
    np.testing.assert_allclose(fud.copy_rates(total, 15, upsample=False), [0.75, 1.0, 0.5, 0.0])
    np.testing.assert_allclose(fud.copy_rates(total, 15, use_all=True), [1, 1, 1, 1])


def test_decide_copies_up_and_downsampling():
    rng = np.random.default_rng(1)
    # Class 0: 1000 images for 2600 wanted -> 2 or 3 copies each.
    # Class 1: 10000 images for 3000 wanted -> each kept with probability 0.3.
    labels = np.repeat([0, 1], [1000, 10000])
    top = np.full(len(labels), 0.8, np.float32)
    idx, total = fud.select_thresholds(fud.count_bins(labels, fud.bin_index(top), 2), 2600)
    assert total.tolist() == [1000, 10000]
    rates = fud.copy_rates(total, 2600)
    copies, passed = fud.decide_copies(labels, top, idx, rates, 2.0, rng.random(len(labels)))
    assert passed.all()
    up, down = copies[:1000], copies[1000:]
    assert set(np.unique(up)) == {2, 3}
    assert abs(up.sum() - 2600) <= 4 * math.sqrt(1000 * 0.6 * 0.4)
    assert set(np.unique(down)) == {0, 1}
    rate = 2600 / 10000
    assert abs(down.sum() - 2600) <= 4 * math.sqrt(10000 * rate * (1 - rate))


def test_decide_copies_respects_threshold_and_max_prob():
    labels = np.zeros(5, np.int64)
    top = np.array([0.29, 0.3, 0.6, 0.9, 0.95], np.float32)
    threshold_idx = np.array([30])
    copies, passed = fud.decide_copies(
        labels, top, threshold_idx, np.array([1.0]), 0.9, np.zeros(5)
    )
    assert passed.tolist() == [False, True, True, True, False]
    assert copies.tolist() == [0, 1, 1, 1, 0]


def test_in_graph_decisions_match_numpy(tmp_path):
    """The pass-2 graph labels, bins and copies images exactly as top1, count_bins and decide_copies."""
    rng = np.random.default_rng(5)
    num_classes, n = NUM_CLASSES, 600
    probs = rng.dirichlet(np.full(num_classes, 0.3), size=n).astype(np.float32)
    probs[:40] = probs_for(2, 0.3)  # exact bin edge
    probs[40:60] = 0.25  # ties: np.argmax takes the first class
    probs[60:80] = [0.4, 0.1, 0.4, 0.1]
    probs[80:90] = [1.0, 0.0, 0.0, 0.0]
    threshold_idx = np.array([30, 50, 20, 0])
    rates = np.array([2.4, 0.5, 1.0, 0.25])
    max_prob = 0.95
    uniforms = rng.random(n)
    selection = fud.Selection(threshold_idx, rates, max_prob, num_classes, 1, 1)
    images = [b"img%d" % i for i in range(n)]
    # True classes: unknown (-1), the pseudo label, another class, and out of range.
    true = rng.integers(-1, num_classes, n)
    true[:100] = np.argmax(probs[:100], axis=1)
    true[100:110] = num_classes + 3
    inputs = [
        utils.unlabeled_example(im, num_classes, t).SerializeToString()
        for im, t in zip(images, true, strict=True)
    ]
    del inputs[110:]
    # Records without the key count as unknown, as label 0 does.
    inputs += [
        tf.train.Example(
            features=tf.train.Features(feature={"image/encoded": utils.bytes_feature(im)})
        ).SerializeToString()
        for im in images[110:120]
    ]
    inputs += [
        utils.unlabeled_example(im, num_classes, t).SerializeToString()
        for im, t in zip(images[120:], true[120:], strict=True)
    ]
    true[110:120] = -1
    preds = [utils.prediction_example(p).SerializeToString() for p in probs]
    out = fud._decide_fn(selection, with_images=True)(
        tf.constant(inputs), tf.constant(preds), tf.constant(uniforms)
    )
    out = {k: v.numpy() for k, v in out.items()}

    labels, top_prob = fud.top1(probs)
    copies, passed = fud.decide_copies(labels, top_prob, threshold_idx, rates, max_prob, uniforms)
    kept = np.flatnonzero(copies)
    assert labels[40] == 0 and labels[60] == 0
    assert set(np.unique(copies)) == {0, 1, 2, 3}, "data must exercise every case"
    assert out["valid"] and out["size"] == n
    np.testing.assert_array_equal(out["kept"], kept)
    np.testing.assert_array_equal(out["copies"], copies[kept])
    np.testing.assert_array_equal(out["labels"], labels[kept])
    np.testing.assert_array_equal(out["top_prob"], top_prob[kept])
    assert out["images"].tolist() == [images[i] for i in kept]
    assert out["records"].tolist() == [
        utils.serialize_pseudo_labeled(images[i], probs[i], labels[i]) for i in kept
    ]
    bins = fud.count_bins(labels, fud.bin_index(top_prob), num_classes)
    np.testing.assert_array_equal(out["seen_bins"], bins)
    np.testing.assert_array_equal(out["before"], np.bincount(labels[passed], minlength=4))
    np.testing.assert_array_equal(out["after"], np.bincount(labels, copies, minlength=4))
    assert out["image_bytes"] == sum(len(images[i]) for i in kept)
    known = (true >= 0) & (true < num_classes)
    correct = known & (true == labels)
    for key, weights in (("true_before", np.ones(n, np.int64)), ("true_after", copies)):
        np.testing.assert_array_equal(
            out[key],
            [
                np.bincount(labels, weights * known, minlength=4),
                np.bincount(labels, weights * correct, minlength=4),
            ],
        )
    assert out["true_invalid"] == 10
    assert correct.sum() > 100 and (known & ~correct).any(), "data must exercise both cases"

    bad = probs.copy()
    bad[7, 1] = np.nan
    out = fud._decide_fn(selection, with_images=False)(
        tf.constant(inputs),
        tf.constant([utils.prediction_example(p).SerializeToString() for p in bad]),
        tf.constant(uniforms),
    )
    assert not out["valid"].numpy()


# ---------------------------------------------------------------------------
# End to end.


def reference_selection(top_probs, num_image, min_threshold):
    """Threshold and N per class by a direct walk over the images (max_prob 2, use_top)."""
    selected = {}
    for c, probs in top_probs.items():
        probs = np.array(probs, np.float32)
        for i in range(100, -1, -1):
            t = i / 100
            n = int(np.sum(probs >= np.float32(t)))
            if t >= min_threshold and (n >= num_image or t == min_threshold):
                selected[c] = (t, n)
                break
    return selected


def test_end_to_end_balanced_two_prediction_workers(tmp_path):
    num_shards, num_image, min_threshold = 3, 20, 0.3
    dirs, truth = make_dataset(tmp_path, num_shards, 40, num_workers=2)
    stats = run_both_passes(dirs, num_shards, num_image, min_threshold=min_threshold)

    top_probs = {c: [] for c in range(NUM_CLASSES)}
    for _, probs in truth.values():
        top_probs[int(np.argmax(probs))].append(probs.max())
    selected = reference_selection(top_probs, num_image, min_threshold)
    threshold = utils.read_json(os.path.join(dirs["out"], "threshold.json"))
    assert threshold.pop("provenance") == fud._parse_provenance(TEACHER, "")
    assert {int(c): tuple(v) for c, v in threshold.items()} == selected
    assert any(n < num_image for _, n in selected.values()), "data must exercise upsampling"
    assert any(n > num_image for _, n in selected.values()), "data must exercise downsampling"
    assert utils.read_json(os.path.join(dirs["out"], "num_image_across_cat.json")) == {
        "num_image_across_cat": sum(min(n, num_image) for _, n in selected.values())
    }

    copies = {}
    per_class = np.zeros(NUM_CLASSES, np.int64)
    for shard in range(num_shards):
        records = read_records(utils.filtered_path(dirs["out"], 0, shard, num_shards))
        shard_counts = np.zeros(NUM_CLASSES, np.int64)
        for example in records:
            image, source_shard, label, prob = check_record(example, truth)
            assert source_shard == shard
            assert prob >= np.float32(selected[label][0])
            copies[image] = copies.get(image, 0) + 1
            shard_counts[label] += 1
        assert stats[shard]["after_balancing"] == {
            str(c): int(n) for c, n in enumerate(shard_counts) if n
        }
        assert stats[shard]["num_output_records"] == len(records)
        per_class += shard_counts

    for label, (t, n) in selected.items():
        rate = num_image / n
        allowed = {math.floor(rate), math.ceil(rate)}
        kept = [
            im for im, (_, p) in truth.items() if np.argmax(p) == label and p.max() >= np.float32(t)
        ]
        assert len(kept) == n
        assert {copies.get(im, 0) for im in kept} <= allowed
        frac = rate - math.floor(rate)
        assert abs(per_class[label] - num_image) <= 4 * math.sqrt(n * frac * (1 - frac)) + 1e-9
    # Before balancing, the shards together keep exactly the N images counted
    # under each class's threshold.
    kept_before = np.zeros(NUM_CLASSES, np.int64)
    for shard_stats in stats:
        for c, n in shard_stats["before_balancing"].items():
            kept_before[int(c)] += n
    assert kept_before.tolist() == [selected[c][1] for c in range(NUM_CLASSES)]

    final = utils.read_json(os.path.join(dirs["out"], "stats", "final_stats.json"))
    assert final["total_cnt"] == int(per_class.sum())
    assert final["cat_count"] == {str(c): int(n) for c, n in enumerate(per_class)}
    # Every output file, listed with its real size and record count.
    assert final["num_shards"] == num_shards and final["total_replicas"] == 1
    expected_files = {}
    for shard in range(num_shards):
        path = utils.filtered_path(dirs["out"], 0, shard, num_shards)
        expected_files[os.path.basename(path)] = {
            "num_records": len(read_records(path)),
            "num_bytes": os.path.getsize(path),
        }
    assert final["files"] == expected_files
    assert sum(f["num_records"] for f in final["files"].values()) == final["total_cnt"]
    assert final["provenance"]["checkpoint"] == TEACHER["checkpoint"]
    assert "pseudo_label_accuracy" not in final  # the records carry no true labels
    total_sum = utils.read_json(os.path.join(dirs["prelim"], "total_counts_sum.json"))
    assert total_sum["0"][0][1] == len(top_probs[0])  # everything has prob >= 0.00
    samples = os.listdir(os.path.join(dirs["out"], "samples"))
    assert samples and all(s in {"0", "1", "2", "3"} for s in samples)


def test_end_to_end_use_all_with_two_filter_tasks(tmp_path):
    num_shards, min_threshold = 2, 0.5
    dirs, truth = make_dataset(tmp_path, num_shards, 30, num_workers=2, seed=3)
    run_both_passes(
        dirs, num_shards, 5, total_replicas=2, min_threshold=min_threshold, use_all=True
    )
    for shard in range(num_shards):
        for task in (0, 1):
            assert os.path.exists(fud.prelim_stats_path(dirs["prelim"], shard, task))
    seen = []
    for shard in range(num_shards):
        for task in (0, 1):
            for example in read_records(utils.filtered_path(dirs["out"], task, shard, num_shards)):
                seen.append(check_record(example, truth)[0])
    expected = [im for im, (_, p) in truth.items() if p.max() >= np.float32(min_threshold)]
    assert sorted(seen) == sorted(expected)  # every confident image exactly once


def test_pass_two_is_deterministic(tmp_path):
    dirs, _ = make_dataset(tmp_path, 2, 30, num_workers=1)
    run_both_passes(dirs, 2, 12)

    first = snapshot(dirs["out"])
    assert "data/train-0-00001-of-00002" in first and "stats/final_stats.json" in first
    run_both_passes(dirs, 2, 12)  # re-run over the existing outputs
    dirs_copy = dict(dirs, out=str(tmp_path / "out2"))
    run_both_passes(dirs_copy, 2, 12)
    assert snapshot(dirs["out"]) == first
    assert snapshot(dirs_copy["out"]) == first
    # Another seed samples differently.
    dirs_seed = dict(dirs, out=str(tmp_path / "out3"))
    run_both_passes(dirs_seed, 2, 12, seed=1)
    assert (
        snapshot(dirs_seed["out"])["data/train-0-00000-of-00002"]
        != first["data/train-0-00000-of-00002"]
    )


# ---------------------------------------------------------------------------
# Errors.


def test_missing_shard_stats_are_listed(tmp_path):
    dirs, _ = make_dataset(tmp_path, 4, 3, num_workers=1)
    counts = np.zeros([NUM_CLASSES, 101], np.int64)
    fud.write_prelim_stats(dirs["prelim"], 0, 0, counts)
    fud.write_prelim_stats(dirs["prelim"], 2, 0, counts)
    with pytest.raises(fud.FilterError, match=r"2 of 4 shards .* shard ids 1, 3"):
        fud.load_total_counts(dirs["prelim"], 4, 1, NUM_CLASSES)
    # Only the first 2 shards are needed with only_use_num_shards... and shard 1 is missing.
    with pytest.raises(fud.FilterError, match="shard ids 1$"):
        fud.load_total_counts(dirs["prelim"], 2, 1, NUM_CLASSES)

    result = subprocess.run(
        [
            sys.executable,
            "filter_unlabel_data.py",
            f"--input_dir={dirs['in']}",
            f"--prediction_dir={dirs['pred']}",
            f"--info_dir={dirs['info']}",
            f"--prelim_stats_dir={dirs['prelim']}",
            f"--output_dir={dirs['out']}",
            "--file_prefix=extra",
            "--num_shards=4",
            "--shard_id=0",
            f"--num_label_classes={NUM_CLASSES}",
            "--only_get_stats=0",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", CUDA_VISIBLE_DEVICES=""),
        timeout=120,
    )
    assert result.returncode != 0
    assert "shard ids 1, 3" in result.stderr
    assert not os.path.exists(os.path.join(dirs["out"], "data"))


def run_script(args, script="filter_unlabel_data.py"):
    """Runs a filter entry point as a subprocess in the repository."""
    return subprocess.run(
        [sys.executable, script, *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", CUDA_VISIBLE_DEVICES=""),
        timeout=300,
    )


def cli_args(dirs, num_shards, **flags):
    args = {
        "input_dir": dirs["in"],
        "prediction_dir": dirs["pred"],
        "info_dir": dirs["info"],
        "prelim_stats_dir": dirs["prelim"],
        "output_dir": dirs["out"],
        "file_prefix": "extra",
        "num_shards": num_shards,
        "num_label_classes": NUM_CLASSES,
    }
    args.update(flags)
    return [f"--{k}={v}" for k, v in args.items()]


def snapshot(root):
    """{relative path: bytes} of every file under root."""
    files = {}
    for parent, _, names in os.walk(root):
        for name in names:
            with open(os.path.join(parent, name), "rb") as f:
                files[os.path.relpath(os.path.join(parent, name), root)] = f.read()
    return files


def test_scripts_run_both_passes(tmp_path):
    """filter_unlabel_data.py (both passes) and its published name filter_unlabel.py exit 0."""
    dirs, truth = make_dataset(tmp_path, 2, 10, num_workers=1)
    pass1 = run_script(cli_args(dirs, 2, shard_id="0,1", only_get_stats=1))
    assert pass1.returncode == 0, pass1.stderr[-3000:]
    for shard in range(2):
        saved = utils.read_json(fud.prelim_stats_path(dirs["prelim"], shard, 0))
        assert saved["provenance"]["fingerprint"] == TEACHER["fingerprint"]
    pass2 = run_script(cli_args(dirs, 2, shard_id="0,1", num_image=3))
    assert pass2.returncode == 0, pass2.stderr[-3000:]
    records = read_records(utils.filtered_path(dirs["out"], 0, 0, 2))
    assert records and all(check_record(r, truth) for r in records)
    final = utils.read_json(os.path.join(dirs["out"], "stats", "final_stats.json"))
    assert sorted(final["files"]) == ["train-0-00000-of-00002", "train-0-00001-of-00002"]

    # The published script name: same flags, same files.
    alias = dict(dirs, out=str(tmp_path / "out_alias"))
    result = run_script(cli_args(alias, 2, shard_id="1,0", num_image=3), "filter_unlabel.py")
    assert result.returncode == 0, result.stderr[-3000:]
    assert snapshot(alias["out"]) == snapshot(dirs["out"])


def test_main_runs_both_passes(tmp_path):
    dirs, truth = make_dataset(tmp_path, 1, 10, num_workers=1)
    common = ["filter_unlabel_data.py", *cli_args(dirs, 1, num_image=3)]
    for argv in (common + ["--only_get_stats=1"], common):
        with flagsaver.flagsaver():
            fud.FLAGS(argv)
            fud.main([argv[0]])
    assert os.path.exists(fud.prelim_stats_path(dirs["prelim"], 0, 0))
    records = read_records(utils.filtered_path(dirs["out"], 0, 0, 1))
    assert records and all(check_record(r, truth) for r in records)
    with flagsaver.flagsaver():
        fud.FLAGS(common + ["--data_type=sstable"])
        with pytest.raises(SystemExit, match="only 'tfrecord'"):
            fud.main([argv[0]])


def test_one_call_handles_a_list_of_shards(tmp_path):
    """--shard_id=a,b,c gives the files of one call per shard; a broken shard spares the others."""
    dirs, _ = make_dataset(tmp_path, 3, 20, num_workers=1)
    run_both_passes(dirs, 3, 8)
    common = [
        "filter_unlabel_data.py",
        f"--input_dir={dirs['in']}",
        f"--prediction_dir={dirs['pred']}",
        f"--info_dir={dirs['info']}",
        f"--prelim_stats_dir={tmp_path / 'prelim_list'}",
        f"--output_dir={tmp_path / 'out_list'}",
        "--file_prefix=extra",
        "--num_shards=3",
        f"--num_label_classes={NUM_CLASSES}",
        "--num_image=8",
    ]
    for argv in (
        common + ["--only_get_stats=1", "--shard_id=2,0,1"],
        common + ["--shard_id=1,2,0"],
    ):
        with flagsaver.flagsaver():
            fud.FLAGS(argv)
            fud.main([argv[0]])
    for shard in range(3):
        for path in (
            fud.prelim_stats_path("{}", shard, 0),
            os.path.join("{}", "data", f"train-0-{shard:05d}-of-00003"),
            fud.stats_path("{}", shard, 0),
        ):
            single = path.format(dirs["prelim"] if "prelim" in path else dirs["out"])
            listed = path.format(tmp_path / ("prelim_list" if "prelim" in path else "out_list"))
            with open(single, "rb") as a, open(listed, "rb") as b:
                assert a.read() == b.read(), path
    assert os.path.exists(tmp_path / "out_list" / "stats" / "final_stats.json")

    os.remove(fud.input_path(dirs["in"], "extra", 1, 3))
    os.remove(fud.stats_path(str(tmp_path / "out_list"), 2, 0))
    with flagsaver.flagsaver():
        fud.FLAGS(common + ["--shard_id=1,2"])
        with pytest.raises(SystemExit, match=r"1 of 2 shards failed, shard ids 1:\n  shard 1: "):
            fud.main(["filter_unlabel_data.py"])
    assert os.path.exists(fud.stats_path(str(tmp_path / "out_list"), 2, 0))
    with flagsaver.flagsaver():
        fud.FLAGS(common + ["--shard_id=0,3"])
        with pytest.raises(SystemExit, match=r"--shard_id='0,3': ids must lie in \[0, 3\)"):
            fud.main(["filter_unlabel_data.py"])


def test_pass_two_count_mismatches_name_the_file(tmp_path):
    # Old info files (no input size to compare with): the counts tell.
    dirs, _ = make_dataset(tmp_path, 1, 6, num_workers=2, provenance=None)
    run_both_passes(dirs, 1, 3)
    input_file = fud.input_path(dirs["in"], "extra", 0, 1)
    output_file = utils.filtered_path(dirs["out"], 0, 0, 1)
    os.remove(output_file)
    # One more input record: worker 0 now has 4 inputs for 3 predictions.
    records = [r.numpy() for r in tf.data.TFRecordDataset(input_file)]
    utils.write_tfrecord(input_file, records + records[:1])
    with pytest.raises(fud.FilterError, match="has 3 predictions but .* has 4 records") as error:
        run_both_passes(dirs, 1, 3)
    assert input_file in str(error.value)
    assert not os.path.exists(output_file)  # no partial output

    # Changed predictions after pass 1 are caught rather than balanced wrongly.
    utils.write_tfrecord(input_file, records)
    write_predictions(dirs, 0, 1, [probs_for(1, 0.9)] * 6, 2)
    with pytest.raises(fud.FilterError, match="differ from .*prelim_stats_00000_0.json"):
        fud.filter_shard(
            dirs["in"],
            dirs["pred"],
            dirs["info"],
            dirs["prelim"],
            dirs["out"],
            0,
            1,
            NUM_CLASSES,
            3,
            file_prefix="extra",
        )
    with pytest.raises(fud.FilterError, match="only 'tfrecord'"):
        fud.filter_shard(
            dirs["in"],
            dirs["pred"],
            dirs["info"],
            dirs["prelim"],
            dirs["out"],
            0,
            1,
            NUM_CLASSES,
            3,
            file_prefix="extra",
            data_type="sstable",
        )
