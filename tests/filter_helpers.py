"""Generated inputs of the filter and short ways to run it, for the tests/test_filter_*.py files.

A dataset is a dict of directories ("in", "pred", "info", "prelim", "out")
holding raw unlabeled shards `extra-%05d-of-%05d` and their predictions and
info files as predict_label.py writes them (docs/pseudo_labels.md,
"Prediction files").
"""

import hashlib
import os
import subprocess
import sys

import numpy as np
import tensorflow as tf

import atomic_files
import file_names
import filter_stats
import filter_unlabel_data as fud
import tfrecords

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


def input_file(dirs, shard, num_shards):
    """The raw unlabeled shard of a generated dataset."""
    return file_names.shard_path(dirs.get("in", ""), "extra", shard, num_shards)


def files_of(dirs, num_shards):
    """The fud.FilterFiles of a generated dataset."""
    return fud.FilterFiles(
        input_dir=dirs.get("in", ""),
        prediction_dir=dirs["pred"],
        info_dir=dirs["info"],
        prelim_stats_dir=dirs.get("prelim", ""),
        output_dir=dirs.get("out", ""),
        num_shards=num_shards,
        file_prefix="extra",
    )


def write_info(dirs, shard, num_shards, worker, image_num, provenance=TEACHER):
    """An info file as predict_label.py writes it; provenance None: the old {"image_num"} layout."""
    info = {"image_num": image_num}
    if provenance is not None:
        path = input_file(dirs, shard, num_shards)
        info["provenance"] = dict(provenance, input_file=path, input_records=image_num)
        if os.path.exists(path):
            info["provenance"]["input_bytes"] = os.path.getsize(path)
    atomic_files.write_json(file_names.info_path(dirs["info"], shard, num_shards, worker), info)


def write_predictions(dirs, shard, num_shards, probs, num_workers, provenance=TEACHER):
    """Writes prediction and info files as `num_workers` prediction workers would."""
    for worker in range(num_workers):
        part = probs[worker::num_workers]
        tfrecords.write_tfrecord(
            file_names.prediction_path(dirs["pred"], shard, num_shards, worker),
            (tfrecords.prediction_example(p).SerializeToString() for p in part),
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
            image = tfrecords.encode_jpeg(rng.integers(0, 256, [8, 8, 3]))
            label = rng.choice(NUM_CLASSES, p=class_weights)
            # Few distinct confidences, so that bins hold several images and a
            # class's count jumps past num_image; 0.3 and 1.0 are bin edges.
            top = rng.choice([0.3, 0.45, 0.6, 0.8, 0.95, 1.0])
            probs.append(probs_for(label, top))
            true = -1
            if true_labels is not None:
                true = label if rng.random() < true_labels else (label + 1) % NUM_CLASSES
            records.append(tfrecords.unlabeled_example(image, NUM_CLASSES, true))
            truth[image] = (shard, probs[-1]) if true_labels is None else (shard, probs[-1], true)
        tfrecords.write_tfrecord(
            input_file(dirs, shard, num_shards), (r.SerializeToString() for r in records)
        )
        write_predictions(dirs, shard, num_shards, probs, num_workers, provenance)
    assert len(truth) == num_shards * images_per_shard, "JPEGs must be unique to trace records"
    return dirs, truth


def read_records(path):
    return [tf.train.Example.FromString(r.numpy()) for r in tf.data.TFRecordDataset(path)]


def raw_records(path):
    return [r.numpy() for r in tf.data.TFRecordDataset(path)]


def _tasks(num_filter_tasks):
    return [-1] if num_filter_tasks == 1 else list(range(num_filter_tasks))


def run_pass1(dirs, num_shards, *, num_filter_tasks=1, shards=None):
    """Pass 1 as main() runs it, provenance included."""
    files = files_of(dirs, num_shards)
    for shard in range(num_shards) if shards is None else shards:
        for task in _tasks(num_filter_tasks):
            result = fud.count_shard(
                files, shard, NUM_CLASSES, filter_task=task, num_filter_tasks=num_filter_tasks
            )
            fud.write_prelim_stats(files, shard, result)


def select(dirs, num_shards, num_image, *, num_filter_tasks=1, **settings):
    """fud.select_for_balancing with the BalancingSettings of `num_image` and `settings`."""
    return fud.select_for_balancing(
        files_of(dirs, num_shards),
        NUM_CLASSES,
        filter_stats.BalancingSettings(num_image, **settings),
        num_filter_tasks=num_filter_tasks,
    )


def run_both_passes(dirs, num_shards, num_image, *, num_filter_tasks=1, seed=0, **settings):
    """Both passes as main() runs them, every shard and task; returns the pass-2 stats."""
    run_pass1(dirs, num_shards, num_filter_tasks=num_filter_tasks)
    selection = select(dirs, num_shards, num_image, num_filter_tasks=num_filter_tasks, **settings)
    files = files_of(dirs, num_shards)
    return [
        fud.filter_shard(files, shard, selection, filter_task=task, seed=seed)
        for shard in range(num_shards)
        for task in _tasks(num_filter_tasks)
    ]


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
    """The command-line flags of a generated dataset, plus `flags`."""
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
