"""The file name of every layout, and --shard_id parsing."""

import os

import pytest

import file_names


def test_parse_shard_ids():
    assert file_names.parse_shard_ids("3", 8) == [3]
    assert file_names.parse_shard_ids("0,4, 7", 8) == [0, 4, 7]
    for bad in ("8", "", "1,x", "-1"):
        with pytest.raises(ValueError, match="--shard_id"):
            file_names.parse_shard_ids(bad, 8)


def test_shard_layouts():
    assert file_names.shard_path("d", "extra", 3, 128) == os.path.join("d", "extra-00003-of-00128")
    assert file_names.labeled_shard_path("d", "dev", 1, 64) == os.path.join(
        "d", "dev-00001-of-00064"
    )
    assert file_names.unlabeled_shard_path("d", 2, 4) == os.path.join(
        "d", "unlabeled", "extra-00002-of-00004"
    )
    assert file_names.task_shard_path("d", "train", 1, 5, 8) == os.path.join(
        "d", "train-1-00005-of-00008"
    )
    assert file_names.filtered_path("o", 1, 5, 8) == os.path.join(
        "o", "data", "train-1-00005-of-00008"
    )
    assert file_names.prelim_stats_path("p", 7, 1) == os.path.join("p", "prelim_stats_00007_1.json")
    assert file_names.filter_stats_path("o", 7, 0) == os.path.join(
        "o", "stats", "stats_00007_0.json"
    )
    assert file_names.final_stats_path("o") == os.path.join("o", "stats", "final_stats.json")
    assert file_names.total_counts_path("p") == os.path.join("p", "total_counts.json")
    assert file_names.total_counts_path("p", cumulative=True) == os.path.join(
        "p", "total_counts_sum.json"
    )
    assert file_names.threshold_path("o") == os.path.join("o", "threshold.json")
    assert file_names.num_image_across_cat_path("o") == os.path.join(
        "o", "num_image_across_cat.json"
    )


def test_shard_globs_and_numbers():
    assert file_names.shard_glob("d", "train") == os.path.join("d", "train-*")
    assert file_names.shard_index(file_names.shard_path("d", "extra", 7, 128)) == 7
    assert file_names.shard_index(os.path.join("d", "extra")) is None
    assert file_names.filtered_dir("o") == os.path.join("o", "data")
    assert file_names.pipeline_counts_path("o") == os.path.join(
        "o", "stats", "pipeline_counts.json"
    )
    assert file_names.prediction_path("o", 1, 4, 2) == os.path.join(
        "o", "train-info-00001-of-00004-00002"
    )
