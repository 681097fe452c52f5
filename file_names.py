"""File names of every on-disk layout, defined once so writers and readers agree.

docs/method.md ("Record formats") and docs/pseudo_labels.md describe the
layouts; each has one function here.
"""

import os
import re

# Next to every checkpoint (model_dir): the network it holds (a
# `checkpoints.model_description`), the flags of its run, and its evaluation.
MODEL_PARAMS_FILE = "model_params.txt"
FLAGS_FILE = "FLAGS.json"
EVAL_RESULTS_FILE = "eval_results.json"
# File prefixes of the predictions (`prediction_path`) and of the filtered
# records (`filtered_path`).
PREDICTION_PREFIX = "train-info"
FILTERED_PREFIX = "train"
# `shard_path`'s numbering, in the notation of Beam's WriteToTFRecord.
BEAM_SHARD_TEMPLATE = "-SSSSS-of-NNNNN"
_SHARD_SUFFIX = re.compile(r"-(\d{5})-of-(\d{5})$")
_STATS_DIR = "stats"


def shard_path(data_dir, prefix, shard, num_shards):
    """`{data_dir}/{prefix}-%05d-of-%05d`: the shard naming of every TFRecord set."""
    return os.path.join(data_dir, f"{prefix}-{shard:05d}-of-{num_shards:05d}")


def shard_glob(data_dir, prefix):
    """`{data_dir}/{prefix}-*`: a glob pattern matching every shard of a set."""
    return os.path.join(data_dir, f"{prefix}-*")


def shard_index(path):
    """The shard number of a `shard_path`-named file, or None for another name."""
    match = _SHARD_SUFFIX.search(path)
    return int(match.group(1)) if match else None


def labeled_shard_path(data_dir, subset, shard, num_shards):
    """`{data_dir}/{subset}-%05d-of-%05d`."""
    return shard_path(data_dir, subset, shard, num_shards)


def unlabeled_shard_path(data_dir, shard, num_shards, prefix="extra"):
    """`{data_dir}/unlabeled/{prefix}-%05d-of-%05d`."""
    return shard_path(os.path.join(data_dir, "unlabeled"), prefix, shard, num_shards)


def task_shard_path(data_dir, prefix, task, shard, num_shards):
    """`{data_dir}/{prefix}-{task}-%05d-of-%05d`: one filter task's part of a shard.

    The filter writes these (`filtered_path`); reassign reads and rewrites them.
    """
    return shard_path(data_dir, f"{prefix}-{task:d}", shard, num_shards)


def prediction_path(output_dir, shard, num_shards, worker):
    """`{output_dir}/train-info-%05d-of-%05d-%05d`: one record per input image."""
    return os.path.join(
        output_dir, f"{PREDICTION_PREFIX}-{shard:05d}-of-{num_shards:05d}-{worker:05d}"
    )


def info_path(info_dir, shard, num_shards, worker):
    """`{info_dir}/info-%05d-of-%05d-%05d.txt`: JSON {"image_num": N} of one worker's part."""
    return os.path.join(info_dir, f"info-{shard:05d}-of-{num_shards:05d}-{worker:05d}.txt")


def filtered_dir(output_dir):
    """`{output_dir}/data`: the filter's output records, the students' unlabeled data."""
    return os.path.join(output_dir, "data")


def filtered_path(output_dir, task, shard, num_shards):
    """`{output_dir}/data/train-%d-%05d-of-%05d`: filtered and balanced records."""
    return task_shard_path(filtered_dir(output_dir), FILTERED_PREFIX, task, shard, num_shards)


def prelim_stats_path(prelim_stats_dir, shard, task):
    """`{prelim_stats_dir}/prelim_stats_%05d_%d.json`: the filter's pass-1 bins of a shard and task."""
    return os.path.join(prelim_stats_dir, f"prelim_stats_{shard:05d}_{task:d}.json")


def total_counts_path(prelim_stats_dir, cumulative=False):
    """`{prelim_stats_dir}/total_counts.json`, or with `cumulative` `total_counts_sum.json`.

    The pass-1 bins summed over all shards; cumulative: per class, the images
    at or above each bin.
    """
    name = "total_counts_sum.json" if cumulative else "total_counts.json"
    return os.path.join(prelim_stats_dir, name)


def threshold_path(output_dir):
    """`{output_dir}/threshold.json`: the filter's threshold and image count per class."""
    return os.path.join(output_dir, "threshold.json")


def num_image_across_cat_path(output_dir):
    """`{output_dir}/num_image_across_cat.json`: the images kept over all classes, capped per class."""
    return os.path.join(output_dir, "num_image_across_cat.json")


def filter_stats_path(output_dir, shard, task):
    """`{output_dir}/stats/stats_%05d_%d.json`: what pass 2 of the filter kept of a shard and task."""
    return os.path.join(output_dir, _STATS_DIR, f"stats_{shard:05d}_{task:d}.json")


def final_stats_path(output_dir):
    """`{output_dir}/stats/final_stats.json`: the filter's totals, once every shard is done."""
    return os.path.join(output_dir, _STATS_DIR, "final_stats.json")


def pipeline_counts_path(output_dir):
    """`{output_dir}/stats/pipeline_counts.json`: the Beam pipeline's pass-2 counts."""
    return os.path.join(output_dir, _STATS_DIR, "pipeline_counts.json")


def parse_shard_ids(shard_id, num_shards):
    """'3' or '0,4,8' -> [3] or [0, 4, 8]; ValueError naming --shard_id when out of range."""
    try:
        ids = [int(s) for s in str(shard_id).split(",") if s.strip() != ""]
    except ValueError as e:
        raise ValueError(f"--shard_id={shard_id!r}: expected an id or a comma list.") from e
    bad = [i for i in ids if not 0 <= i < num_shards]
    if not ids or bad:
        raise ValueError(f"--shard_id={shard_id!r}: ids must lie in [0, {num_shards}).")
    return ids


def glob_escape(path):
    """`path` with glob metacharacters escaped, for tf.io.gfile.glob."""
    return "".join(f"[{c}]" if c in "*?[" else c for c in path)
