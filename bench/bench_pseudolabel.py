"""Throughput of pseudo labeling: prediction and filtering, each against a bound.

1. Prediction: `predict_label.predict_shard` (TFRecord read, JPEG decode,
   eval crop/resize, EfficientNet forward pass, softmax, prediction records
   written) on one shard of generated JPEGs, against
   `keras.applications.EfficientNetB0(weights=None).predict` on the same
   images already decoded and resized in memory (the model alone, no input
   pipeline). Both use the same batch size; the timed trials alternate so
   that load from other processes hits both alike; the median is reported.
   Goal: ours >= 0.9x Keras.
2. Filtering: `filter_unlabel_data.filter_shard` (pass 2 of one shard: reads
   the images and predictions, thresholds, balances, writes the kept records)
   on generated shards, against a plain copy of the shard's input records
   (read with `tf.data`, each record written unchanged): the bound of a pass
   that writes about what it reads. Goal: filter >= 0.9x the copy. Both record
   sizes of the published tasks are measured: 32x32 SVHN-like JPEGs with 10
   classes and ImageNet-like JPEGs with 1000 classes. Also shown: a plain
   `tf.data` read of the inputs and predictions, and the job's selection
   (`select_for_balancing`: reading every shard's pass-1 stats and writing
   the thresholds), which a job does once for all its shards, timed apart.

3. Reassign: `predict_label.predict_shard(reassign_label=True)` (read the
   filtered records, predict with a small-image model, rewrite each record
   with the new labels) on SVHN-like records, against a plain copy of them.
   Goal: reassign >= 0.8x the copy.

The last output line is one JSON object: `predict_vs_keras`,
`reassign_vs_copy`, `filter_vs_copy_small`, `filter_vs_copy_large` and the
raw figures (records or images per second).

Usage (from the repository root):

    .venv/bin/python bench/bench_pseudolabel.py                     # a few minutes on 2 cores
    .venv/bin/python bench/bench_pseudolabel.py --image_size 128    # quicker prediction part
"""

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from absl import logging  # noqa: E402

import atomic_files  # noqa: E402
import checkpoints  # noqa: E402
import file_names  # noqa: E402
import filter_stats  # noqa: E402
import filter_unlabel_data  # noqa: E402
import predict_label  # noqa: E402
import preprocessing  # noqa: E402
import tfrecords  # noqa: E402


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--image_size", type=int, default=224, help="model input size")
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--num_predict_images", type=int, default=128)
    parser.add_argument("--trials", type=int, default=5)
    parser.add_argument("--filter_small_records", type=int, default=100000, help="SVHN-like")
    parser.add_argument("--filter_large_records", type=int, default=8000, help="ImageNet-like")
    parser.add_argument("--reassign_records", type=int, default=20000, help="SVHN-like")
    parser.add_argument(
        "--reassign_width", type=float, default=0.25, help="small-image model width/depth"
    )
    parser.add_argument("--skip_predict", action="store_true")
    parser.add_argument("--skip_reassign", action="store_true")
    parser.add_argument("--skip_filter", action="store_true")
    return parser.parse_args(argv)


def smooth_image(rng, height, width):
    """A photo-like image (smooth gradients plus mild noise): realistic JPEG sizes."""
    y, x = np.mgrid[0:height, 0:width] / max(height, width)
    channels = [
        np.sin(rng.uniform(2, 12) * x + rng.uniform(0, 6)) * np.cos(rng.uniform(2, 12) * y)
        for _ in range(3)
    ]
    image = 127 + 100 * np.stack(channels, -1) + rng.normal(0, 12, (height, width, 3))
    return np.clip(image, 0, 255).astype(np.uint8)


def median_rate(count, seconds):
    return count / statistics.median(seconds)


# ---------------------------------------------------------------------------
# Prediction.


def bench_predict(args, work_dir):
    size, batch = args.image_size, args.batch_size
    rng = np.random.default_rng(0)
    # Stored images a bit larger than the input, as the eval crop expects.
    source = size + 32
    jpegs = [
        tfrecords.encode_jpeg(smooth_image(rng, source, source), quality=90)
        for _ in range(args.num_predict_images)
    ]
    data_dir = os.path.join(work_dir, "unlabeled")
    tfrecords.write_tfrecord(
        os.path.join(data_dir, "extra-00000-of-00001"),
        [tfrecords.unlabeled_example(j, 1000).SerializeToString() for j in jpegs],
    )
    decoded = np.stack(
        [
            preprocessing.preprocess_image(
                j, is_training=False, image_size=size, small_image=False
            ).numpy()
            for j in jpegs
        ]
    )
    strategy = tf.distribute.get_strategy()
    description = checkpoints.model_description(
        "efficientnet-b0", 1000, False, {}, size, task_name="imagenet"
    )
    # Untrained weights: the speed does not depend on them.
    ours = checkpoints.LoadedModel(checkpoints.create_model(description), description, "none")
    provenance = {"checkpoint": "none", "global_step": -1, "fingerprint": "none"}
    theirs = keras.applications.EfficientNetB0(weights=None, input_shape=(size, size, 3))
    out = os.path.join(work_dir, "pred")
    job = predict_label.ShardLayout(data_dir, "extra", 1, out, out).job(0)

    def run_ours():
        shutil.rmtree(out, ignore_errors=True)
        start = time.perf_counter()
        count = predict_label.predict_shard(
            ours, strategy, job, provenance=provenance, batch_size=batch
        )
        assert count == len(jpegs)
        return time.perf_counter() - start

    def run_keras():
        start = time.perf_counter()
        probs = theirs.predict(decoded, batch_size=batch, verbose=0)
        assert probs.shape == (len(jpegs), 1000)
        return time.perf_counter() - start

    print(
        f"prediction: EfficientNet-B0 {size}x{size}, batch {batch}, {len(jpegs)} JPEGs of "
        f"{source}x{source} (mean {np.mean([len(j) for j in jpegs]) / 1024:.0f} KB), "
        f"{args.trials} trials"
    )
    # The first call of each traces its functions.
    for name, fn in (("ours", run_ours), ("keras", run_keras)):
        print(f"  {name}: first call (tracing) {fn():.1f}s")
    seconds = {"ours": [], "keras": []}
    for _ in range(args.trials):
        seconds["ours"].append(run_ours())
        seconds["keras"].append(run_keras())
    rate = {k: median_rate(len(jpegs), v) for k, v in seconds.items()}
    ratio = rate["ours"] / rate["keras"]
    for name, values in seconds.items():
        print(f"  {name} per trial: " + " ".join(f"{len(jpegs) / t:.1f}" for t in values))
    print(
        f"  images/s: ours (whole pipeline) {rate['ours']:.1f}  keras predict (decoded "
        f"images in memory) {rate['keras']:.1f}  ratio {ratio:.3f} (goal >= 0.9)"
    )
    return {
        "predict_vs_keras": round(ratio, 4),
        "predict_images_per_s": {k: round(v, 2) for k, v in rate.items()},
    }


# ---------------------------------------------------------------------------
# Reassign.


def bench_reassign(args, work_dir):
    """`predict_shard(reassign_label=True)` on SVHN-like filtered records vs a plain copy."""
    rng = np.random.default_rng(2)
    jpegs = [tfrecords.encode_jpeg(smooth_image(rng, 32, 32), quality=95) for _ in range(64)]
    data_dir = os.path.join(work_dir, "filtered")
    src = file_names.task_shard_path(data_dir, "train", 0, 0, 1)
    probs = np.full(10, 0.05, np.float32)
    probs[3] = 0.55
    tfrecords.write_tfrecord(
        src,
        (
            tfrecords.pseudo_labeled_example(jpegs[i % len(jpegs)], probs).SerializeToString()
            for i in range(args.reassign_records)
        ),
    )
    width = args.reassign_width
    overrides = {"width_coefficient": width, "depth_coefficient": width}
    description = checkpoints.model_description(
        "efficientnet-b0", 10, True, overrides, 32, task_name="svhn"
    )
    loaded = checkpoints.LoadedModel(checkpoints.create_model(description), description, "none")
    strategy = tf.distribute.get_strategy()
    provenance = {"checkpoint": "none", "global_step": -1, "fingerprint": "none"}
    out = os.path.join(work_dir, "reassigned")
    job = predict_label.ShardLayout(data_dir, "train", 1, out, out, reassign_label=True).job(0)
    predict_fn = predict_label.make_loaded_predict_fn(loaded, strategy)

    def run_reassign():
        shutil.rmtree(out, ignore_errors=True)
        start = time.perf_counter()
        count = predict_label.predict_shard(
            loaded,
            strategy,
            job,
            provenance=provenance,
            batch_size=args.batch_size * 8,
            reassign_label=True,
            predict_fn=predict_fn,
        )
        assert count == args.reassign_records
        return time.perf_counter() - start

    run_reassign()  # warm-up (tracing, page cache)
    copy_output = os.path.join(work_dir, "reassign_copy")
    reassign_s, copy_s = [], []
    for _ in range(args.trials):
        reassign_s.append(run_reassign())
        copy_s.append(copy_seconds([src], copy_output))
    n = args.reassign_records
    for label, values in (("reassign", reassign_s), ("copy", copy_s)):
        print(f"    {label} per trial: " + " ".join(f"{n / t:.0f}" for t in values))
    rate = {"reassign": median_rate(n, reassign_s), "copy": median_rate(n, copy_s)}
    ratio = rate["reassign"] / rate["copy"]
    print(
        f"reassign: {n} SVHN-like records, small-image B0 width/depth {width}, batch "
        f"{args.batch_size * 8}: records/s reassign {rate['reassign']:.0f}  copy "
        f"{rate['copy']:.0f}  ratio {ratio:.3f} (goal >= 0.8)"
    )
    return {
        "reassign_vs_copy": round(ratio, 4),
        "reassign_records_per_s": {k: round(v, 1) for k, v in rate.items()},
    }


# ---------------------------------------------------------------------------
# Filtering.


def write_filter_inputs(root, num_records, num_classes, image_size, num_shards, rng):
    """Unlabeled shards, teacher-like predictions, info files and pass-1 stats."""
    jpegs = [
        tfrecords.encode_jpeg(smooth_image(rng, image_size, image_size), quality=95)
        for _ in range(min(num_records, 64))
    ]
    files = filter_unlabel_data.FilterFiles(
        input_dir=os.path.join(root, "unlabeled"),
        prediction_dir=os.path.join(root, "pred"),
        info_dir=os.path.join(root, "pred"),
        prelim_stats_dir=os.path.join(root, "prelim"),
        output_dir=os.path.join(root, "out"),
        num_shards=num_shards,
        file_prefix="extra",
    )
    bounds = np.linspace(0, num_records, num_shards + 1).astype(int)
    for shard in range(num_shards):
        n = bounds[shard + 1] - bounds[shard]
        records = (
            tfrecords.unlabeled_example(jpegs[i % len(jpegs)], num_classes).SerializeToString()
            for i in range(n)
        )
        tfrecords.write_tfrecord(files.input_file(shard), records)
        # Peaked softmax outputs, as a trained teacher gives.
        logits = rng.normal(0, 1, (n, num_classes)) + 6 * np.eye(num_classes)[
            rng.integers(num_classes, size=n)
        ] * rng.uniform(0.2, 1.5, (n, 1))
        probs = np.exp(logits - logits.max(1, keepdims=True))
        probs /= probs.sum(1, keepdims=True)
        tfrecords.write_tfrecord(
            files.prediction_file(shard, 0),
            (tfrecords.prediction_example(p).SerializeToString() for p in probs),
        )
        atomic_files.write_json(files.info_file(shard, 0), {"image_num": int(n)})
        prelim_stats = filter_unlabel_data.count_shard(files, shard, num_classes)
        filter_unlabel_data.write_prelim_stats(files, shard, prelim_stats)
    return files


def plain_read_seconds(files):
    """A plain tf.data read of `files`, batched; returns (records, seconds)."""
    start = time.perf_counter()
    count = 0
    for batch in tf.data.TFRecordDataset(files, buffer_size=8 << 20).batch(256).prefetch(2):
        count += int(batch.shape[0])
    return count, time.perf_counter() - start


def copy_seconds(files, output):
    """Reads `files` with tf.data and writes every record to `output` unchanged.

    The I/O bound of any pass that reads its inputs and writes as many bytes,
    as pass 2 does when about one copy of each image is kept.
    """
    start = time.perf_counter()
    with tf.io.TFRecordWriter(output) as writer:
        for batch in tf.data.TFRecordDataset(files, buffer_size=8 << 20).batch(256).prefetch(2):
            for record in batch.numpy():
                writer.write(record)
    seconds = time.perf_counter() - start
    os.remove(output)
    return seconds


def bench_filter_case(name, args, root, num_records, num_classes, image_size):
    num_shards = 2
    rng = np.random.default_rng(1)
    filter_files = write_filter_inputs(root, num_records, num_classes, image_size, num_shards, rng)
    # About one copy per image: the output is as large as the input.
    num_image = max(1, int(0.8 * num_records / num_classes))
    settings = filter_stats.BalancingSettings(num_image, min_threshold=0.3)
    shard = 0
    files = [filter_files.input_file(shard), filter_files.prediction_file(shard, 0)]
    num_input = tfrecords.count_records(files[0])
    mb = sum(os.path.getsize(f) for f in files) / 2**20

    def run_filter():
        shutil.rmtree(filter_files.output_dir, ignore_errors=True)
        # As one pass-2 job of one shard: the selection (once per job, whatever
        # its number of shards), then the shard.
        start = time.perf_counter()
        selection = filter_unlabel_data.select_for_balancing(filter_files, num_classes, settings)
        selected = time.perf_counter()
        stats = filter_unlabel_data.filter_shard(
            filter_files, shard, selection, num_samples_per_class=0
        )
        end = time.perf_counter()
        return end - selected, selected - start, stats["num_output_records"]

    copy_output = os.path.join(root, "copy")
    run_filter()  # warm-up (page cache, tracing)
    plain_read_seconds(files)
    filter_s, select_s, read_s, copy_s = [], [], [], []
    for _ in range(args.trials):
        seconds, selecting, written = run_filter()
        filter_s.append(seconds)
        select_s.append(selecting)
        read_s.append(plain_read_seconds(files)[1])
        copy_s.append(copy_seconds(files[:1], copy_output))
    for label, values in (("filter", filter_s), ("read", read_s), ("copy", copy_s)):
        print(f"    {label} per trial: " + " ".join(f"{num_input / t:.0f}" for t in values))
    rate_filter = median_rate(num_input, filter_s)
    rate_read = median_rate(num_input, read_s)
    rate_copy = median_rate(num_input, copy_s)
    select_seconds = statistics.median(select_s)
    ratio = rate_filter / rate_read
    with_selection = num_input / (num_input / rate_filter + select_seconds)
    print(
        f"  {name}: {num_input} images ({mb:.0f} MB incl. predictions, {num_classes} classes), "
        f"{written} written\n"
        f"    records/s: filter pass 2 {rate_filter:.0f}  plain read {rate_read:.0f}  "
        f"ratio {ratio:.3f}\n"
        f"    plain copy of the images (read + write) {rate_copy:.0f}  "
        f"ratio filter/copy {rate_filter / rate_copy:.3f} (goal >= 0.9)\n"
        f"    the job's selection (reading {num_shards} pass-1 stats, writing the thresholds), "
        f"once per job: {select_seconds:.3f} s; one job of this one shard "
        f"{with_selection:.0f} records/s, {with_selection / rate_copy:.3f} of the copy"
    )
    return {
        "filter_vs_read": round(ratio, 4),
        "filter_vs_copy": round(rate_filter / rate_copy, 4),
        "job_of_one_shard_vs_copy": round(with_selection / rate_copy, 4),
        "selection_seconds": round(select_seconds, 4),
        "records_per_s": {
            "filter": round(rate_filter, 1),
            "read": round(rate_read, 1),
            "copy": round(rate_copy, 1),
        },
    }


def bench_filter(args, work_dir):
    print(f"filtering (pass 2, one shard), {args.trials} trials:")
    result = {}
    cases = (
        ("small", "svhn-like 32x32", args.filter_small_records, 10, 32),
        ("large", "imagenet-like", args.filter_large_records, 1000, 400),
    )
    for key, name, num_records, num_classes, size in cases:
        if num_records:
            root = os.path.join(work_dir, name.split()[0])
            case = bench_filter_case(name, args, root, num_records, num_classes, size)
            result[f"filter_vs_copy_{key}"] = case.pop("filter_vs_copy")
            result[f"filter_{key}"] = case
    return result


def main(argv=None):
    args = parse_args(argv)
    logging.set_verbosity(logging.WARNING)
    print(f"TF {tf.__version__}, Keras {keras.__version__}, {os.cpu_count()} CPUs")
    result = {"bench": "bench_pseudolabel", "trials": args.trials, "image_size": args.image_size}
    with tempfile.TemporaryDirectory() as work_dir:
        if not args.skip_predict:
            result.update(bench_predict(args, work_dir))
        if not args.skip_reassign:
            result.update(bench_reassign(args, work_dir))
        if not args.skip_filter:
            result.update(bench_filter(args, work_dir))
    print(json.dumps(result, sort_keys=True))
    return result


if __name__ == "__main__":
    main()
