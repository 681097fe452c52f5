"""filter_stats without TensorFlow: thresholds, copy rates, the stats files' JSON, final counts."""

import os
import subprocess
import sys

import numpy as np
import oracles
import pytest

import filter_stats
from filter_stats import BalancingSettings, FilterError

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.slow
@pytest.mark.e2e
def test_the_module_imports_no_tensorflow():
    code = "import sys, filter_stats; sys.exit('tensorflow' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, timeout=600)
    assert result.returncode == 0


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
    settings = BalancingSettings(15, **kwargs)
    idx, total = filter_stats.select_thresholds(constructed_counts(), settings)
    np.testing.assert_allclose(filter_stats.THRESHOLDS[idx], expected_t)
    assert total.tolist() == expected_n


def test_select_thresholds_needs_an_eligible_threshold():
    with pytest.raises(FilterError, match="no threshold"):
        filter_stats.select_thresholds(
            constructed_counts(), BalancingSettings(15, min_threshold=0.5, max_prob=0.5)
        )


def test_copy_rates():
    total = np.array([20, 5, 30, 0])
    rates = filter_stats.copy_rates
    np.testing.assert_allclose(rates(total, BalancingSettings(15)), [0.75, 3.0, 0.5, 0.0])
    np.testing.assert_allclose(
        rates(total, BalancingSettings(15, upsample=False)), [0.75, 1.0, 0.5, 0.0]
    )
    np.testing.assert_allclose(rates(total, BalancingSettings(15, use_all=True)), [1, 1, 1, 1])


def test_selection_and_its_files_by_hand():
    settings = BalancingSettings(15, min_threshold=0.3)
    selection = filter_stats.make_selection(
        constructed_counts(), settings, stats_shards=2, num_filter_tasks=1
    )
    np.testing.assert_allclose(selection.rates, [15 / 20, 15 / 5, 15 / 30])
    assert filter_stats.threshold_json(selection) == {"0": [0.9, 20], "1": [0.3, 5], "2": [1.0, 30]}
    # Each class counts at most num_image: 15 + 5 + 15.
    assert filter_stats.num_image_across_cat_json(selection, 15) == {"num_image_across_cat": 35}
    assert filter_stats.selection_id(selection, 0) != filter_stats.selection_id(selection, 1)
    with pytest.raises(FilterError, match="no image would be kept"):
        filter_stats.make_selection(
            constructed_counts(),
            BalancingSettings(15, min_threshold=0.99, max_prob=0.995),
            stats_shards=2,
            num_filter_tasks=1,
        )


def test_prelim_stats_json_round_trip_and_errors():
    counts = constructed_counts()
    provenance = {"checkpoint": "/c/ckpt-1", "global_step": 1, "fingerprint": "ab", "use_ema": True}
    obj = filter_stats.prelim_stats_to_json(counts, provenance)
    assert sorted(obj) == ["0", "1", "2", "provenance"]
    assert obj["1"][80] == [0.8, 5]
    read, read_provenance = filter_stats.prelim_stats_from_json(obj, 3, "f.json")
    np.testing.assert_array_equal(read, counts)
    assert read_provenance == provenance
    with pytest.raises(
        FilterError, match=r"f.json: class '2' is not in \[0, --num_label_classes=2"
    ):
        filter_stats.prelim_stats_from_json(obj, 2, "f.json")
    with pytest.raises(FilterError, match="does not have the 101 bins"):
        shifted = [[t + 0.005, n] for t, n in obj["0"]]
        filter_stats.prelim_stats_from_json({"0": shifted}, 3, "f.json")
    with pytest.raises(FilterError, match="not a list of"):
        filter_stats.prelim_stats_from_json({"0": obj["0"][:100]}, 3, "f.json")
    cumulative = filter_stats.cumulative_counts(counts)
    assert cumulative[0, 0] == 170 and cumulative[0, 91] == 10 and cumulative[2, 100] == 30


def shard_stats(shard, after, before, true_before=None, true_after=None, num_input=10):
    counts = filter_stats.ShardCounts(3)
    counts.after = np.array(after)
    counts.before = np.array(before)
    if true_before is not None:
        counts.true_before = np.array(true_before)
        counts.true_after = np.array(true_after)
    obj = filter_stats.shard_stats_json(
        counts,
        num_input_images=num_input,
        output_file=f"train-0-{shard:05d}-of-00002",
        num_records=sum(after),
        num_bytes=100 + shard,
        provenance=None,
    )
    return filter_stats.read_shard_stats(obj, 3, f"stats_{shard}.json", shard)


def test_final_stats_by_hand():
    shards = [
        shard_stats(0, [3, 0, 1], [2, 0, 1], [[2, 0, 0], [1, 0, 0]], [[3, 0, 0], [2, 0, 0]]),
        shard_stats(1, [1, 4, 0], [1, 2, 3]),
    ]
    final = filter_stats.final_stats(shards, num_shards=2, num_filter_tasks=1, output_dir="out")
    assert final["cat_count"] == {"0": 4, "1": 4, "2": 1}
    assert final["cat_sorted_pairs"] == [["0", 4], ["1", 4], ["2", 1]]  # ties by class id
    assert final["total_cnt"] == 9
    assert final["files"] == {
        "train-0-00000-of-00002": {"num_records": 4, "num_bytes": 100},
        "train-0-00001-of-00002": {"num_records": 5, "num_bytes": 101},
    }
    assert final["provenance"] is None and final["total_replicas"] == 1
    accuracy = final["pseudo_label_accuracy"]
    assert accuracy["before_filtering"]["per_class"] == {
        "0": {"accuracy": 0.5, "num_correct": 1, "num_images": 2}
    }
    assert accuracy["after_balancing"]["accuracy"] == round(2 / 3, 6)
    assert accuracy["num_images_without_true_label"] == 20 - 2
    with pytest.raises(FilterError, match="no shard of out kept any image"):
        filter_stats.final_stats(
            [shard_stats(0, [0, 0, 0], [1, 0, 0])],
            num_shards=1,
            num_filter_tasks=1,
            output_dir="out",
        )
    with pytest.raises(FilterError, match="stats file s.json lacks or has a malformed"):
        filter_stats.read_shard_stats({"after_balancing": {}}, 3, "s.json", 4)


def test_record_uniforms_is_a_pure_function_of_the_key():
    # SplitMix64 from state 0 first gives 0xE220A8397B1DCDAF (its reference output).
    assert oracles.splitmix64(0) == 0xE220A8397B1DCDAF
    positions = np.array([0, 1, 7, 2**40])
    expected = [oracles.record_uniform(5, 3, int(p)) for p in positions]
    assert filter_stats.record_uniforms(5, 3, positions).tolist() == expected
    # The same record gets the same draw whatever else is drawn with it.
    assert filter_stats.record_uniforms(5, 3, [7])[0] == expected[2]
    # Seed and shard both change it; the draws look uniform.
    assert filter_stats.record_uniforms(6, 3, [0])[0] != expected[0]
    assert filter_stats.record_uniforms(5, 4, [0])[0] != expected[0]
    many = filter_stats.record_uniforms(0, 0, np.arange(100_000))
    assert 0.0 <= many.min() and many.max() < 1.0
    assert abs(many.mean() - 0.5) < 0.005
    assert np.histogram(many, bins=10, range=(0, 1))[0].min() > 9_700
