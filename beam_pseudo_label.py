r"""Step 2 of Noisy Student (predict, filter, balance) as one Apache Beam pipeline.

The same result as predict.sh + filter_unlabel.sh on the same inputs,
checkpoint and settings: the same multiset of output records and the same
threshold.json (docs/scale.md). Our settings are absl flags; every other
argument goes to Beam's PipelineOptions, so e.g.

  python beam_pseudo_label.py --input_dir=... --file_prefix=extra \
    --predict_ckpt_path=... --output_dir=... --num_image=130 \
    --runner=DataflowRunner --project=... --region=... --temp_location=gs://...

runs on Dataflow (default: Beam's local runner).
"""

import os
import sys

import apache_beam as beam
import numpy as np
import tensorflow as tf
from absl import app, flags, logging
from apache_beam.ml.inference.base import (
    KeyedModelHandler,
    ModelHandler,
    PredictionResult,
    RunInference,
)
from apache_beam.options.pipeline_options import PipelineOptions

import atomic_files
import checkpoints
import file_names
import filter_pipeline
import filter_stats
import predict_label
import preprocessing
import tfrecords

FLAGS = flags.FLAGS
flags.DEFINE_enum(
    "mode",
    "filter",
    ["filter", "reassign"],
    "filter: predict, filter and "
    "balance raw records; reassign: relabel filtered records with a better model.",
)
flags.DEFINE_string(
    "input_dir", None, "Folder of the records to read: {input_dir}/{file_prefix}-*."
)
flags.DEFINE_string("file_prefix", "train", "File name prefix of the input records.")
flags.DEFINE_string("output_dir", None, "Writes {output_dir}/data/train-* and threshold.json.")
flags.DEFINE_string("predict_ckpt_path", None, "Teacher: a model_dir or checkpoint prefix.")
flags.DEFINE_bool("use_ema", True, "Predict with the moving-average weights.")
flags.DEFINE_string("task_name", "imagenet", "Task whose normalization applies to old checkpoints.")
flags.DEFINE_integer("num_image", 130, "Images per class to keep (after balancing).")
flags.DEFINE_float("min_threshold", 0.0, "Lowest confidence threshold considered.")
flags.DEFINE_float("max_prob", 2.0, "Images above this probability are dropped.")
flags.DEFINE_integer("num_label_classes", 1000, "Number of classes of the predictions.")
flags.DEFINE_bool("upsample", True, "Repeat the images of classes with too few images.")
flags.DEFINE_bool("use_top", True, "Stop lowering a class's threshold at num_image images.")
flags.DEFINE_bool("use_all", False, "Keep every image above min_threshold exactly once.")
flags.DEFINE_integer("seed", 0, "Seed of the per-record copy draws.")
flags.DEFINE_integer("num_output_shards", 1, "Output files of data/train-*.")
flags.DEFINE_integer("batch_size", 64, "Images per prediction batch.")
flags.DEFINE_bool("write_predictions", False, "Also write the raw predictions.")

# Under --output_dir, where --write_predictions puts the raw predictions (as
# the scripts' loop keeps predict.sh's output in round<r>_pseudo/predict_label).
PREDICTIONS_DIR = "predict_label"


class PipelineError(ValueError):
    """Bad input: the message names the flag or file."""


def list_shards(input_dir, file_prefix):
    """[(shard index, path)] of `{input_dir}/{file_prefix}-*`, the predict.sh layout."""
    pattern = file_names.shard_glob(input_dir, file_prefix)
    paths = sorted(tf.io.gfile.glob(pattern))
    if not paths:
        raise PipelineError(f"--input_dir/--file_prefix: no file matches {pattern}")
    shards = []
    for i, path in enumerate(paths):
        shard = file_names.shard_index(path)
        shards.append((i if shard is None else shard, path))
    return shards


def read_keyed_records(shard_and_path):
    """Yields ((shard, position), record) of one input file; a corrupt one is named."""
    shard, path = shard_and_path
    position = 0
    try:
        for record in tf.data.TFRecordDataset(path):
            yield (shard, position), record.numpy()
            position += 1
    except tf.errors.OpError as e:
        raise PipelineError(f"{path}: corrupt record {position}: {e.message}") from e


class _Teacher:
    """The loaded network and its prediction function (Beam shares it by weak reference)."""

    def __init__(self, loaded, predict_fn):
        self.loaded = loaded
        self.predict_fn = predict_fn


class TeacherHandler(ModelHandler):
    """Predicts raw records with a checkpoint loaded once per worker (checkpoints.load_model).

    Each batch is padded to `batch_size` rows, as predict_label.py pads its
    batches, so every image gets the probabilities prediction gives it.
    """

    def __init__(self, ckpt_path, *, use_ema, task_name, batch_size, num_classes):
        super().__init__()
        self._ckpt_path = ckpt_path
        self._use_ema = use_ema
        self._task_name = task_name
        self._batch_size = batch_size
        self._num_classes = num_classes

    def batch_elements_kwargs(self):
        return {"min_batch_size": 1, "max_batch_size": self._batch_size}

    def load_model(self):
        loaded = checkpoints.load_model(
            self._ckpt_path,
            what="--predict_ckpt_path",
            default_task_name=self._task_name,
            use_ema=self._use_ema,
        )
        num_classes = int(loaded.model.output_shape[-1])
        if num_classes != self._num_classes:
            raise PipelineError(
                f"--num_label_classes={self._num_classes}, but {loaded.prefix} predicts "
                f"{num_classes} classes"
            )
        # The scripts' own predict function (batch norms folded), so both
        # paths compute the same probabilities.
        predict_fn = predict_label.make_loaded_predict_fn(loaded, tf.distribute.get_strategy())
        return _Teacher(loaded, predict_fn)

    def run_inference(self, batch, model, inference_args=None):
        loaded, predict_fn = model.loaded, model.predict_fn
        n = len(batch)
        records = list(batch) + [batch[0]] * (self._batch_size - n)

        def parse(serialized):
            image_bytes = tf.io.parse_single_example(
                serialized, {"image/encoded": tf.io.FixedLenFeature([], tf.string)}
            )["image/encoded"]
            return preprocessing.preprocess_image(
                image_bytes,
                is_training=False,
                image_size=loaded.image_size,
                small_image=loaded.small_image_model,
            )

        images = tf.stack([parse(tf.constant(r)) for r in records])
        mask = tf.constant([1.0] * n + [0.0] * (self._batch_size - n))
        probs, _ = predict_fn({"images": images, "mask": mask})
        return [PredictionResult(r, p) for r, p in zip(batch, probs[0].numpy()[:n], strict=True)]


def _prediction_outputs(keyed, mode):
    """(key, (input record, output record)) of one predicted record.

    The output record is the prediction (predict.sh's format) or, with
    mode=reassign, the relabeled record (reassign.sh's format).
    """
    key, result = keyed
    record, probs = result.example, result.inference
    if mode == "reassign":
        image = tf.train.Example.FromString(record).features.feature["image/encoded"]
        out = tfrecords.pseudo_labeled_example(image.bytes_list.value[0], probs)
    else:
        out = tfrecords.prediction_example(probs)
    return key, (record, out.SerializeToString(deterministic=True))


def bin_counts(batch, num_classes):
    """Counts [num_classes, NUM_BINS] of a batch of (key, (record, prediction record))."""
    predictions = tf.constant([p for _, (_, p) in batch])
    probs = filter_pipeline.parse_predictions(predictions, num_classes)
    pseudo = filter_pipeline.label_and_bin(probs)
    return filter_pipeline.bin_counts(pseudo["labels"], pseudo["bins"], num_classes).numpy()


class Decide(beam.DoFn):
    """Pass 2 on a batch: the filter's own in-graph decisions, with keyed draws."""

    def __init__(self, seed):
        self._seed = seed
        self._decide = None
        self._selection = None

    def process(self, batch, selection):
        if self._selection is not selection:
            self._decide = filter_pipeline.BatchDecisions(selection, with_images=False)
            self._selection = selection
        uniforms = np.array(
            [filter_stats.record_uniforms(self._seed, s, [p])[0] for (s, p), _ in batch]
        )
        out = self._decide(
            tf.constant([r for _, (r, _) in batch]),
            tf.constant([p for _, (_, p) in batch]),
            tf.constant(uniforms, tf.float64),
        )
        out = {k: v.numpy() for k, v in out.items()}
        if not out["valid"]:
            raise PipelineError("negative or non-finite probabilities in a prediction batch")
        for record, copies in zip(out["records"], out["copies"], strict=True):
            for _ in range(int(copies)):
                yield record
        counts = filter_stats.ShardCounts(selection.num_label_classes)
        counts.add(out)
        yield beam.pvalue.TaggedOutput(COUNTS_TAG, counts)


COUNTS_TAG = "counts"


def write_pipeline_counts(counts, output_dir):
    """Writes the merged ShardCounts to `file_names.pipeline_counts_path`.

    The whole pipeline's pass-2 counts (the filter's before-balancing counts
    and true-label counts), in the format of a pass-2 stats file.
    """
    atomic_files.write_json(
        file_names.pipeline_counts_path(output_dir),
        filter_stats.shard_stats_json(
            counts,
            num_input_images=int(counts.seen_bins.sum()),
            output_file="",
            num_records=int(counts.after.sum()),
            num_bytes=0,
        ),
    )


def settings_from_flags():
    """The filter_stats.BalancingSettings of the flags."""
    return filter_stats.BalancingSettings(
        num_image=FLAGS.num_image,
        min_threshold=FLAGS.min_threshold,
        max_prob=FLAGS.max_prob,
        upsample=FLAGS.upsample,
        use_top=FLAGS.use_top,
        use_all=FLAGS.use_all,
    )


def select(total_counts, settings, num_shards, output_dir, provenance=None):
    """The Selection of the summed counts; writes threshold.json and total_counts.json.

    `provenance` (the teacher checkpoint, see `teacher_provenance`) goes into
    threshold.json as the scripts' filter records it.
    """
    counts = np.asarray(total_counts)
    selection = filter_stats.make_selection(
        counts,
        settings,
        stats_shards=num_shards,
        num_filter_tasks=1,
        provenance=provenance,
        source="--predict_ckpt_path",
    )
    atomic_files.write_json(
        file_names.threshold_path(output_dir), filter_stats.threshold_json(selection)
    )
    atomic_files.write_json(
        file_names.total_counts_path(output_dir),
        filter_stats.counts_to_json(counts, keep_empty=True),
    )
    return selection


def _write(records, directory, prefix, num_shards):
    """Writes `records` as the shards `file_names.shard_path(directory, prefix, ...)`."""
    return records | f"Write {prefix}" >> beam.io.WriteToTFRecord(
        os.path.join(directory, prefix),
        num_shards=num_shards,
        shard_name_template=file_names.BEAM_SHARD_TEMPLATE,
    )


def _write_filtered(records, output_dir, num_shards):
    """Writes the filtered or relabeled records where the filter writes its own."""
    return _write(
        records, file_names.filtered_dir(output_dir), file_names.FILTERED_PREFIX, num_shards
    )


def build_pipeline(pipeline, shards, handler, config):
    """Adds the stages to `pipeline`: read, predict, histogram, select, decide, write.

    Args:
      pipeline: a beam.Pipeline.
      shards: the [(shard, path)] of list_shards.
      handler: the TeacherHandler.
      config: a dict with mode, settings, seed, output_dir, num_output_shards,
        num_classes, batch_size, write_predictions and, optionally, provenance
        (the teacher's, for threshold.json).
    """
    predicted = (
        pipeline
        | "Shards" >> beam.Create(shards)
        | "Read" >> beam.FlatMap(read_keyed_records)
        | "Spread" >> beam.Reshuffle()
        | "Predict" >> RunInference(KeyedModelHandler(handler))
        | "Outputs" >> beam.Map(_prediction_outputs, config["mode"])
    )
    output_dir = config["output_dir"]
    if config["mode"] == "reassign":
        outputs = predicted | "Relabeled" >> beam.Map(lambda kv: kv[1][1])
        return _write_filtered(outputs, output_dir, config["num_output_shards"])
    if config["write_predictions"]:
        preds = predicted | "Predictions" >> beam.Map(lambda kv: kv[1][1])
        _write(
            preds,
            os.path.join(output_dir, PREDICTIONS_DIR),
            file_names.PREDICTION_PREFIX,
            config["num_output_shards"],
        )
    num_classes = config["num_classes"]
    batches = predicted | "Batch" >> beam.BatchElements(max_batch_size=config["batch_size"])
    total = (
        batches
        | "Bins" >> beam.Map(bin_counts, num_classes)
        | "Sum"
        >> beam.CombineGlobally(
            lambda counts: np.sum(
                [np.zeros([num_classes, filter_stats.NUM_BINS], np.int64), *counts], axis=0
            )
        )
    )
    selection = total | "Select" >> beam.Map(
        select, config["settings"], len(shards), output_dir, config.get("provenance")
    )
    decided = batches | "Decide" >> beam.ParDo(
        Decide(config["seed"]), beam.pvalue.AsSingleton(selection)
    ).with_outputs(COUNTS_TAG, main="records")
    (
        decided[COUNTS_TAG]
        | "Counts" >> beam.CombineGlobally(filter_stats.sum_counts, num_classes)
        | "Write counts" >> beam.Map(write_pipeline_counts, output_dir)
    )
    return _write_filtered(decided.records, output_dir, config["num_output_shards"])


def write_final_stats(output_dir, num_classes, provenance=None):
    """stats/final_stats.json of the written data files, as filter_stats.final_stats builds it.

    Each data file's counts are the labels of its records (copies counted).
    The pipeline balanced before the split into files, so its whole-pipeline
    counts (`file_names.pipeline_counts_path`: images above the thresholds, true-label
    counts and confusion matrices, images read) go with the first file: the
    final stats sum over the files, and get the script path's totals.
    `provenance` (the teacher's) is recorded as the scripts' final stats do.
    """
    pipeline_counts = None
    counts_path = file_names.pipeline_counts_path(output_dir)
    if tf.io.gfile.exists(counts_path):
        pipeline_counts = filter_stats.read_shard_stats(
            atomic_files.read_json(counts_path), num_classes, counts_path, 0
        )
    shard_stats = []
    pattern = file_names.shard_glob(file_names.filtered_dir(output_dir), file_names.FILTERED_PREFIX)
    for i, path in enumerate(sorted(tf.io.gfile.glob(pattern))):
        counts = filter_stats.ShardCounts(num_classes)
        for record in tf.data.TFRecordDataset(path):
            label = tf.train.Example.FromString(record.numpy()).features.feature["label"]
            counts.after[label.int64_list.value[0]] += 1
        num_input_images = 0
        if pipeline_counts is None:
            counts.before[:] = counts.after
        elif i == 0:
            file_after, counts = counts.after, pipeline_counts.counts
            counts.after = file_after
            num_input_images = pipeline_counts.num_input_images
        shard_stats.append(
            filter_stats.ShardStats(
                path,
                i,
                counts,
                os.path.basename(path),
                tf.io.gfile.stat(path).length,
                int(counts.after.sum()),
                num_input_images,
                provenance,
            )
        )
    final = filter_stats.final_stats(
        shard_stats, num_shards=len(shard_stats), num_filter_tasks=1, output_dir=output_dir
    )
    atomic_files.write_json(file_names.final_stats_path(output_dir), final)


def teacher_provenance(prefix, use_ema):
    """The teacher's provenance as the filter keeps it from predict.sh's info files.

    The same code as the script path (`checkpoints.checkpoint_provenance`,
    which `LoadedModel.provenance` extends, read back by
    `filter_stats.parse_provenance`), so both threshold.json files name the
    checkpoint, its step and fingerprint, and the EMA choice alike.
    """
    return filter_stats.parse_provenance(
        checkpoints.checkpoint_provenance(prefix, use_ema), "--predict_ckpt_path"
    )


def check_flags():
    """(input shards, teacher checkpoint prefix); raises PipelineError on bad flags.

    Runs before anything is written.
    """
    for name in ("input_dir", "output_dir", "predict_ckpt_path"):
        if not getattr(FLAGS, name):
            raise PipelineError(f"--{name} is required")
    shards = list_shards(FLAGS.input_dir, FLAGS.file_prefix)
    if not tf.io.gfile.exists(FLAGS.predict_ckpt_path) and not tf.io.gfile.glob(
        FLAGS.predict_ckpt_path + "*"
    ):
        raise PipelineError(f"--predict_ckpt_path: no checkpoint at {FLAGS.predict_ckpt_path}")
    prefix = checkpoints.resolve_checkpoint(FLAGS.predict_ckpt_path, "--predict_ckpt_path")
    # A checkpoint of this project says its class count; a published one is
    # checked when a worker loads it.
    description = checkpoints.read_model_description(prefix) or {}
    num_classes = description.get("num_classes")
    if num_classes is not None and int(num_classes) != FLAGS.num_label_classes:
        raise PipelineError(
            f"--num_label_classes={FLAGS.num_label_classes}, but {prefix} predicts "
            f"{num_classes} classes (its model_params.txt)"
        )
    return shards, prefix


def main(argv):
    try:
        shards, prefix = check_flags()
    except (PipelineError, FileNotFoundError, ValueError) as e:
        sys.exit(f"beam_pseudo_label.py: error: {e}")
    handler = TeacherHandler(
        FLAGS.predict_ckpt_path,
        use_ema=FLAGS.use_ema,
        task_name=FLAGS.task_name,
        batch_size=FLAGS.batch_size,
        num_classes=FLAGS.num_label_classes,
    )
    config = dict(
        mode=FLAGS.mode,
        settings=settings_from_flags(),
        seed=FLAGS.seed,
        output_dir=FLAGS.output_dir,
        num_output_shards=FLAGS.num_output_shards,
        num_classes=FLAGS.num_label_classes,
        batch_size=FLAGS.batch_size,
        write_predictions=FLAGS.write_predictions,
        provenance=teacher_provenance(prefix, FLAGS.use_ema),
    )
    tf.io.gfile.makedirs(FLAGS.output_dir)
    logging.info("%d input shards, %s", len(shards), FLAGS.mode)
    try:
        with beam.Pipeline(options=PipelineOptions(argv[1:])) as pipeline:
            build_pipeline(pipeline, shards, handler, config)
        if FLAGS.mode == "filter":
            write_final_stats(FLAGS.output_dir, FLAGS.num_label_classes, config["provenance"])
    except Exception as e:  # noqa: BLE001 - the runner wraps the worker's error
        message = str(e).strip().splitlines()
        named = [line for line in message if "Error:" in line and "beam" not in line.lower()]
        sys.exit(f"beam_pseudo_label.py: error: {(named or message or [repr(e)])[-1]}")


if __name__ == "__main__":
    app.run(main, flags_parser=lambda argv: FLAGS(argv, known_only=True))
