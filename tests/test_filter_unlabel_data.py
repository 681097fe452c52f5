"""Tests of the filter: binning, threshold selection, balancing, files.

filter_stats (NumPy), filter_pipeline (TensorFlow) and the entry point
filter_unlabel_data; filter_stats alone is also tested without TensorFlow in
test_filter_stats.py.
"""

import math
import os
import subprocess
import sys

import filter_helpers as fh
import numpy as np
import oracles
import pytest
import tensorflow as tf
from absl.testing import flagsaver
from conftest import snapshot

import atomic_files
import file_names
import filter_pipeline
import filter_stats
import filter_unlabel_data as fud
import tfrecords
from filter_stats import BalancingSettings

# ---------------------------------------------------------------------------
# Binning and pass 1.


def test_bin_index_edges():
    probs = [0.0, 0.0099, 0.01, 0.29, 0.3, np.float32(0.3), 0.555, 0.999, 1.0, 1.0000001]
    expected = [0, 0, 1, 29, 30, 30, 55, 99, 100, 100]
    # One probability per row: each is its row's maximum.
    rows = np.array(probs, np.float32)[:, None]
    assert filter_pipeline.label_and_bin(tf.constant(rows))["bins"].numpy().tolist() == expected
    assert oracles.bin_index(probs).tolist() == expected


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
    fh.write_predictions(dirs, 3, 8, np.array(probs, np.float32), num_workers)
    files = fh.files_of(dict(dirs, prelim=str(tmp_path / "prelim")), 8)
    result = fud.count_shard(files, 3, fh.NUM_CLASSES)
    task_id, counts = result.task_id, result.counts
    assert task_id == 0
    expected = np.zeros([fh.NUM_CLASSES, 101], np.int64)
    for c, b, n in [(0, 30, 2), (0, 35, 1), (0, 26, 1), (1, 100, 1), (1, 99, 1), (3, 50, 1)]:
        expected[c, b] = n
    np.testing.assert_array_equal(counts, expected)

    path = fud.write_prelim_stats(files, 3, result._replace(provenance=None))
    assert path.endswith("prelim_stats_00003_0.json")
    saved = atomic_files.read_json(path)
    assert sorted(saved) == ["0", "1", "3"]  # classes without images are left out
    assert [t for t, _ in saved["0"]] == [i / 100 for i in range(101)]
    assert saved["0"][30] == [0.3, 2] and saved["1"][100] == [1.0, 1]


def test_prelim_stats_errors_name_the_file(tmp_path):
    dirs = {"pred": str(tmp_path / "pred"), "info": str(tmp_path / "info")}
    fh.write_predictions(dirs, 0, 1, np.array([fh.probs_for(0, 0.5)] * 3), 1)
    info = file_names.info_path(dirs["info"], 0, 1, 0)
    atomic_files.write_json(info, {"image_num": 4})
    with pytest.raises(fud.FilterError, match="image_num=4") as error:
        fud.count_shard(fh.files_of(dirs, 1), 0, fh.NUM_CLASSES)
    assert info in str(error.value)

    atomic_files.write_json(info, {"image_num": 3})
    with pytest.raises(
        fud.FilterError, match="has 4 probabilities, expected --num_label_classes=5"
    ):
        fud.count_shard(fh.files_of(dirs, 1), 0, 5)


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


def test_discover_num_prediction_workers(tmp_path):
    info_dir = str(tmp_path)
    for worker in (0, 1, 2):
        atomic_files.write_json(file_names.info_path(info_dir, 5, 8, worker), {"image_num": 1})
    atomic_files.write_json(file_names.info_path(info_dir, 6, 8, 0), {"image_num": 1})
    atomic_files.write_json(file_names.info_path(info_dir, 6, 8, 2), {"image_num": 1})
    files = fud.FilterFiles(info_dir=info_dir, num_shards=8)
    assert fud.discover_num_prediction_workers(files, 5) == 3
    with pytest.raises(fud.FilterError, match=r"workers \[0, 2\]"):
        fud.discover_num_prediction_workers(files, 6)
    with pytest.raises(fud.FilterError, match="no prediction info file"):
        fud.discover_num_prediction_workers(files, 7)


# ---------------------------------------------------------------------------
# Thresholds and balancing.


def test_decide_copies_up_and_downsampling():
    rng = np.random.default_rng(1)
    # Class 0: 1000 images for 2600 wanted -> 2 or 3 copies each.
    # Class 1: 10000 images for 3000 wanted -> each kept with probability 0.3.
    labels = np.repeat([0, 1], [1000, 10000])
    top = np.full(len(labels), 0.8, np.float32)
    settings = BalancingSettings(2600)
    counts = oracles.count_bins(labels, oracles.bin_index(top), 2)
    idx, total = filter_stats.select_thresholds(counts, settings)
    assert total.tolist() == [1000, 10000]
    rates = filter_stats.copy_rates(total, settings)
    copies, passed = oracles.decide_copies(labels, top, idx, rates, 2.0, rng.random(len(labels)))
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
    copies, passed = oracles.decide_copies(
        labels, top, threshold_idx, np.array([1.0]), 0.9, np.zeros(5)
    )
    assert passed.tolist() == [False, True, True, True, False]
    assert copies.tolist() == [0, 1, 1, 1, 0]


def decision_inputs(rng, probs):
    """Raw unlabeled records of `probs`' images, and their true classes (-1: unknown)."""
    n, num_classes = probs.shape
    images = [b"img%d" % i for i in range(n)]
    # True classes: unknown (-1), the pseudo label, another class, and out of range.
    true = rng.integers(-1, num_classes, n)
    true[:100] = np.argmax(probs[:100], axis=1)
    true[100:110] = num_classes + 3
    inputs = [
        tfrecords.unlabeled_example(im, num_classes, t).SerializeToString()
        for im, t in zip(images, true, strict=True)
    ]
    # Records without the key count as unknown, as label 0 does.
    inputs[110:120] = [
        tf.train.Example(
            features=tf.train.Features(feature={"image/encoded": tfrecords.bytes_feature(im)})
        ).SerializeToString()
        for im in images[110:120]
    ]
    true[110:120] = -1
    return images, inputs, true


def test_in_graph_decisions_match_numpy(tmp_path):
    """BatchDecisions labels, bins and copies images exactly as the oracles do."""
    rng = np.random.default_rng(5)
    num_classes, n = fh.NUM_CLASSES, 600
    probs = rng.dirichlet(np.full(num_classes, 0.3), size=n).astype(np.float32)
    probs[:40] = fh.probs_for(2, 0.3)  # exact bin edge
    probs[40:60] = 0.25  # ties: np.argmax takes the first class
    probs[60:80] = [0.4, 0.1, 0.4, 0.1]
    probs[80:90] = [1.0, 0.0, 0.0, 0.0]
    threshold_idx = np.array([30, 50, 20, 0])
    rates = np.array([2.4, 0.5, 1.0, 0.25])
    max_prob = 0.95
    uniforms = rng.random(n)
    selection = filter_stats.Selection(
        threshold_idx=threshold_idx,
        total_image=np.zeros(num_classes, np.int64),  # only written to threshold.json
        rates=rates,
        max_prob=max_prob,
        num_label_classes=num_classes,
        stats_shards=1,
        num_filter_tasks=1,
    )
    images, inputs, true = decision_inputs(rng, probs)
    preds = [tfrecords.prediction_example(p).SerializeToString() for p in probs]
    out = filter_pipeline.BatchDecisions(selection, with_images=True)(
        tf.constant(inputs), tf.constant(preds), tf.constant(uniforms)
    )
    out = {k: v.numpy() for k, v in out.items()}

    labels, top_prob = oracles.top1(probs)
    copies, passed = oracles.decide_copies(
        labels, top_prob, threshold_idx, rates, max_prob, uniforms
    )
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
        oracles.serialize_pseudo_labeled(images[i], probs[i], labels[i]) for i in kept
    ]
    bins = oracles.count_bins(labels, oracles.bin_index(top_prob), num_classes)
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
    # The confusion entries of the known images, keyed true * K + pseudo label.
    np.testing.assert_array_equal(out["true_pairs"], (true * num_classes + labels)[known])
    np.testing.assert_array_equal(out["true_pair_copies"], copies[known])
    assert correct.sum() > 100 and (known & ~correct).any(), "data must exercise both cases"

    bad = probs.copy()
    bad[7, 1] = np.nan
    out = filter_pipeline.BatchDecisions(selection, with_images=False)(
        tf.constant(inputs),
        tf.constant([tfrecords.prediction_example(p).SerializeToString() for p in bad]),
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
    dirs, truth = fh.make_dataset(tmp_path, num_shards, 40, num_workers=2)
    stats = fh.run_both_passes(dirs, num_shards, num_image, min_threshold=min_threshold)

    top_probs = {c: [] for c in range(fh.NUM_CLASSES)}
    for _, probs in truth.values():
        top_probs[int(np.argmax(probs))].append(probs.max())
    selected = reference_selection(top_probs, num_image, min_threshold)
    threshold = atomic_files.read_json(os.path.join(dirs["out"], "threshold.json"))
    assert threshold.pop("provenance") == filter_stats.parse_provenance(fh.TEACHER, "")
    assert {int(c): tuple(v) for c, v in threshold.items()} == selected
    assert any(n < num_image for _, n in selected.values()), "data must exercise upsampling"
    assert any(n > num_image for _, n in selected.values()), "data must exercise downsampling"
    assert atomic_files.read_json(os.path.join(dirs["out"], "num_image_across_cat.json")) == {
        "num_image_across_cat": sum(min(n, num_image) for _, n in selected.values())
    }

    copies = {}
    per_class = np.zeros(fh.NUM_CLASSES, np.int64)
    for shard in range(num_shards):
        records = fh.read_records(file_names.filtered_path(dirs["out"], 0, shard, num_shards))
        shard_counts = np.zeros(fh.NUM_CLASSES, np.int64)
        for example in records:
            image, source_shard, label, prob = fh.check_record(example, truth)
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
    kept_before = np.zeros(fh.NUM_CLASSES, np.int64)
    for shard_stats in stats:
        for c, n in shard_stats["before_balancing"].items():
            kept_before[int(c)] += n
    assert kept_before.tolist() == [selected[c][1] for c in range(fh.NUM_CLASSES)]

    final = atomic_files.read_json(os.path.join(dirs["out"], "stats", "final_stats.json"))
    assert final["total_cnt"] == int(per_class.sum())
    assert final["cat_count"] == {str(c): int(n) for c, n in enumerate(per_class)}
    # Every output file, listed with its real size and record count.
    assert final["num_shards"] == num_shards and final["total_replicas"] == 1
    expected_files = {}
    for shard in range(num_shards):
        path = file_names.filtered_path(dirs["out"], 0, shard, num_shards)
        expected_files[os.path.basename(path)] = {
            "num_records": len(fh.read_records(path)),
            "num_bytes": os.path.getsize(path),
        }
    assert final["files"] == expected_files
    assert sum(f["num_records"] for f in final["files"].values()) == final["total_cnt"]
    assert final["provenance"]["checkpoint"] == fh.TEACHER["checkpoint"]
    assert "pseudo_label_accuracy" not in final  # the records carry no true labels
    total_sum = atomic_files.read_json(os.path.join(dirs["prelim"], "total_counts_sum.json"))
    assert total_sum["0"][0][1] == len(top_probs[0])  # everything has prob >= 0.00
    samples = os.listdir(os.path.join(dirs["out"], "samples"))
    assert samples and all(s in {"0", "1", "2", "3"} for s in samples)


def test_end_to_end_use_all_with_two_filter_tasks(tmp_path):
    num_shards, min_threshold = 2, 0.5
    dirs, truth = fh.make_dataset(tmp_path, num_shards, 30, num_workers=2, seed=3)
    fh.run_both_passes(
        dirs, num_shards, 5, num_filter_tasks=2, min_threshold=min_threshold, use_all=True
    )
    for shard in range(num_shards):
        for task in (0, 1):
            assert os.path.exists(file_names.prelim_stats_path(dirs["prelim"], shard, task))
    seen = []
    for shard in range(num_shards):
        for task in (0, 1):
            for example in fh.read_records(
                file_names.filtered_path(dirs["out"], task, shard, num_shards)
            ):
                seen.append(fh.check_record(example, truth)[0])
    expected = [im for im, (_, p) in truth.items() if p.max() >= np.float32(min_threshold)]
    assert sorted(seen) == sorted(expected)  # every confident image exactly once


def test_pass_two_is_deterministic(tmp_path):
    dirs, _ = fh.make_dataset(tmp_path, 2, 30, num_workers=1)
    fh.run_both_passes(dirs, 2, 12)

    first = snapshot(dirs["out"])
    assert "data/train-0-00001-of-00002" in first and "stats/final_stats.json" in first
    fh.run_both_passes(dirs, 2, 12)  # re-run over the existing outputs
    dirs_copy = dict(dirs, out=str(tmp_path / "out2"))
    fh.run_both_passes(dirs_copy, 2, 12)
    assert snapshot(dirs["out"]) == first
    assert snapshot(dirs_copy["out"]) == first
    # Another seed samples differently.
    dirs_seed = dict(dirs, out=str(tmp_path / "out3"))
    fh.run_both_passes(dirs_seed, 2, 12, seed=1)
    assert (
        snapshot(dirs_seed["out"])["data/train-0-00000-of-00002"]
        != first["data/train-0-00000-of-00002"]
    )


# ---------------------------------------------------------------------------
# Errors.


@pytest.mark.slow
@pytest.mark.e2e
def test_missing_shard_stats_are_listed(tmp_path):
    dirs, _ = fh.make_dataset(tmp_path, 4, 3, num_workers=1)
    counts = np.zeros([fh.NUM_CLASSES, 101], np.int64)
    files = fh.files_of(dirs, 4)
    fud.write_prelim_stats(files, 0, fud.PrelimStats(0, counts, None))
    fud.write_prelim_stats(files, 2, fud.PrelimStats(0, counts, None))
    with pytest.raises(fud.FilterError, match=r"2 of 4 shards .* shard ids 1, 3"):
        fud.load_prelim_stats(dirs["prelim"], 4, 1, fh.NUM_CLASSES)
    # Only the first 2 shards are needed with only_use_num_shards... and shard 1 is missing.
    with pytest.raises(fud.FilterError, match="shard ids 1$"):
        fud.load_prelim_stats(dirs["prelim"], 2, 1, fh.NUM_CLASSES)

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
            f"--num_label_classes={fh.NUM_CLASSES}",
            "--only_get_stats=0",
        ],
        cwd=fh.REPO,
        capture_output=True,
        text=True,
        env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", CUDA_VISIBLE_DEVICES=""),
        timeout=600,
    )
    assert result.returncode != 0
    assert "shard ids 1, 3" in result.stderr
    assert not os.path.exists(os.path.join(dirs["out"], "data"))


@pytest.mark.slow
@pytest.mark.e2e
def test_scripts_run_both_passes(tmp_path):
    """filter_unlabel_data.py (both passes) and its published name filter_unlabel.py exit 0."""
    dirs, truth = fh.make_dataset(tmp_path, 2, 10, num_workers=1)
    pass1 = fh.run_script(fh.cli_args(dirs, 2, shard_id="0,1", only_get_stats=1))
    assert pass1.returncode == 0, pass1.stderr[-3000:]
    for shard in range(2):
        saved = atomic_files.read_json(file_names.prelim_stats_path(dirs["prelim"], shard, 0))
        assert saved["provenance"]["fingerprint"] == fh.TEACHER["fingerprint"]
    pass2 = fh.run_script(fh.cli_args(dirs, 2, shard_id="0,1", num_image=3))
    assert pass2.returncode == 0, pass2.stderr[-3000:]
    records = fh.read_records(file_names.filtered_path(dirs["out"], 0, 0, 2))
    assert records and all(fh.check_record(r, truth) for r in records)
    final = atomic_files.read_json(os.path.join(dirs["out"], "stats", "final_stats.json"))
    assert sorted(final["files"]) == ["train-0-00000-of-00002", "train-0-00001-of-00002"]

    # The published script name: same flags, same files.
    alias = dict(dirs, out=str(tmp_path / "out_alias"))
    result = fh.run_script(fh.cli_args(alias, 2, shard_id="1,0", num_image=3), "filter_unlabel.py")
    assert result.returncode == 0, result.stderr[-3000:]
    assert snapshot(alias["out"]) == snapshot(dirs["out"])


def test_main_runs_both_passes(tmp_path):
    dirs, truth = fh.make_dataset(tmp_path, 1, 10, num_workers=1)
    common = ["filter_unlabel_data.py", *fh.cli_args(dirs, 1, num_image=3)]
    for argv in (common + ["--only_get_stats=1"], common):
        with flagsaver.flagsaver():
            fud.FLAGS(argv)
            fud.main([argv[0]])
    assert os.path.exists(file_names.prelim_stats_path(dirs["prelim"], 0, 0))
    records = fh.read_records(file_names.filtered_path(dirs["out"], 0, 0, 1))
    assert records and all(fh.check_record(r, truth) for r in records)
    with flagsaver.flagsaver():
        fud.FLAGS(common + ["--data_type=sstable"])
        with pytest.raises(SystemExit, match="only 'tfrecord'"):
            fud.main([argv[0]])


def test_one_call_handles_a_list_of_shards(tmp_path):
    """--shard_id=a,b,c gives the files of one call per shard; a broken shard spares the others."""
    dirs, _ = fh.make_dataset(tmp_path, 3, 20, num_workers=1)
    fh.run_both_passes(dirs, 3, 8)
    common = [
        "filter_unlabel_data.py",
        f"--input_dir={dirs['in']}",
        f"--prediction_dir={dirs['pred']}",
        f"--info_dir={dirs['info']}",
        f"--prelim_stats_dir={tmp_path / 'prelim_list'}",
        f"--output_dir={tmp_path / 'out_list'}",
        "--file_prefix=extra",
        "--num_shards=3",
        f"--num_label_classes={fh.NUM_CLASSES}",
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
            file_names.prelim_stats_path("{}", shard, 0),
            os.path.join("{}", "data", f"train-0-{shard:05d}-of-00003"),
            file_names.filter_stats_path("{}", shard, 0),
        ):
            single = path.format(dirs["prelim"] if "prelim" in path else dirs["out"])
            listed = path.format(tmp_path / ("prelim_list" if "prelim" in path else "out_list"))
            with open(single, "rb") as a, open(listed, "rb") as b:
                assert a.read() == b.read(), path
    assert os.path.exists(tmp_path / "out_list" / "stats" / "final_stats.json")

    os.remove(fh.input_file(dirs, 1, 3))
    os.remove(file_names.filter_stats_path(str(tmp_path / "out_list"), 2, 0))
    with flagsaver.flagsaver():
        fud.FLAGS(common + ["--shard_id=1,2"])
        with pytest.raises(SystemExit, match=r"1 of 2 shards failed, shard ids 1:\n  shard 1: "):
            fud.main(["filter_unlabel_data.py"])
    assert os.path.exists(file_names.filter_stats_path(str(tmp_path / "out_list"), 2, 0))
    with flagsaver.flagsaver():
        fud.FLAGS(common + ["--shard_id=0,3"])
        with pytest.raises(SystemExit, match=r"--shard_id='0,3': ids must lie in \[0, 3\)"):
            fud.main(["filter_unlabel_data.py"])


def test_pass_two_count_mismatches_name_the_file(tmp_path):
    # Old info files (no input size to compare with): the counts tell.
    dirs, _ = fh.make_dataset(tmp_path, 1, 6, num_workers=2, provenance=None)
    fh.run_both_passes(dirs, 1, 3)
    input_file = fh.input_file(dirs, 0, 1)
    output_file = file_names.filtered_path(dirs["out"], 0, 0, 1)
    os.remove(output_file)
    # One more input record: worker 0 now has 4 inputs for 3 predictions.
    records = [r.numpy() for r in tf.data.TFRecordDataset(input_file)]
    tfrecords.write_tfrecord(input_file, records + records[:1])
    with pytest.raises(fud.FilterError, match="has 3 predictions but .* has 4 records") as error:
        fh.run_both_passes(dirs, 1, 3)
    assert input_file in str(error.value)
    assert not os.path.exists(output_file)  # no partial output

    # Changed predictions after pass 1 are caught rather than balanced wrongly.
    tfrecords.write_tfrecord(input_file, records)
    fh.write_predictions(dirs, 0, 1, [fh.probs_for(1, 0.9)] * 6, 2)
    with pytest.raises(fud.FilterError, match="differ from .*prelim_stats_00000_0.json"):
        fud.filter_shard(fh.files_of(dirs, 1), 0, fh.select(dirs, 1, 3))
    with pytest.raises(fud.FilterError, match="only 'tfrecord'"):
        fud.check_data_type("sstable")


@pytest.mark.parametrize("image_num", [2, 4])
def test_pass_two_names_an_info_file_whose_image_num_is_wrong(tmp_path, image_num):
    # 3 inputs and predictions per worker; the info file of worker 1 says otherwise.
    dirs, _ = fh.make_dataset(tmp_path, 1, 6, num_workers=2, provenance=None)
    fh.run_pass1(dirs, 1)
    selection = fh.select(dirs, 1, 3)
    fh.write_info(dirs, 0, 1, 1, image_num, provenance=None)
    with pytest.raises(fud.FilterError, match=f"info file says image_num={image_num}"):
        fud.filter_shard(fh.files_of(dirs, 1), 0, selection)
    assert not os.path.exists(file_names.filtered_path(dirs["out"], 0, 0, 1))


def test_both_passes_trace_once_across_shards_and_workers(tmp_path, monkeypatch):
    # Tracing (and a tf.data map's per-pipeline instantiation) once cost as much
    # as filtering 10,000 small images, for every shard and worker.
    traced = []
    real_decide, real_count = filter_pipeline._decide_batch, filter_pipeline._count_batch

    def decide(encoder, with_images, *args):
        traced.append(("decide", with_images))
        return real_decide(encoder, with_images, *args)

    def count(num_classes, records):
        traced.append(("count", num_classes))
        return real_count(num_classes, records)

    monkeypatch.setattr(filter_pipeline, "_decide_batch", decide)
    monkeypatch.setattr(filter_pipeline, "_count_batch", count)
    filter_pipeline._decide_function.cache_clear()
    filter_pipeline._count_function.cache_clear()
    try:
        dirs, _ = fh.make_dataset(tmp_path, 3, 24, num_workers=2)
        fh.run_both_passes(dirs, 3, 4)
        fh.run_both_passes(dirs, 3, 5, seed=1)
    finally:
        filter_pipeline._decide_function.cache_clear()
        filter_pipeline._count_function.cache_clear()
    # One trace per kind: pass 1's counts; pass 2 with samples (shard 0) and without.
    assert sorted(traced) == [("count", fh.NUM_CLASSES), ("decide", False), ("decide", True)]
