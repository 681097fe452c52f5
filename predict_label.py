r"""Pseudo labels: predict a teacher's probabilities on unlabeled shards.

Called by `python main.py --mode=predict`. One process handles one or more
shards (`--shard_id=3` or `--shard_id=0,4,8`); `--total_replicas` workers can
split one shard (worker w takes records w, w + n, w + 2n, ...). All devices of
the process (a TPU host, several GPUs) share a shard through the strategy;
the last batch is padded and masked, so every input image gets exactly one
prediction, in input order.

Outputs, each written under a temporary name and renamed when complete:
  {output_dir}/train-info-%05d-of-%05d-%05d   probabilities, classes
  {info_dir}/info-%05d-of-%05d-%05d.txt       {"image_num": N, "provenance": ...}
With `--reassign_label`, already-filtered records
`{label_data_dir}/{file_prefix}-{worker_id}-%05d-of-%05d` are rewritten under
`--output_dir` with the new model's `label`, `prob` and `probabilities`, and
`{output_dir}/provenance/<file name>.json` says what made them.

The provenance records the checkpoint (prefix, step, fingerprint of its
contents), the model description and the input file (path, size, records).
A shard whose outputs exist and come from the same checkpoint and input is
skipped, so an interrupted job re-runs only what is missing; outputs of
another checkpoint or input are an error (checked for every shard before
anything is written) unless `overwrite` is set. Records are serialized
deterministically, so a re-run writes the same bytes.

The files and their keys: docs/pseudo_labels.md, "Prediction files" and
"Reassign". In the code, --total_replicas and --worker_id are
`num_prediction_workers` and `prediction_worker`.
"""

import dataclasses
import os
from typing import NamedTuple

import numpy as np
import tensorflow as tf
from absl import logging

import atomic_files
import checkpoints
import data_input
import file_names
import preprocessing
import progress_log
import tfrecords
import train_lib

PROVENANCE_DIR = "provenance"


class ShardJob(NamedTuple):
    """What one prediction worker does for one shard: its input and outputs.

    Attributes:
      shard: the shard id.
      worker: the prediction worker (reassign: the filter task of the file name).
      input_file: the records to predict.
      output_file: the predictions, or the reassigned records.
      record_file: the info file, or reassign's provenance file.
      num_parts, part: the worker predicts input records part, part +
        num_parts, part + 2 num_parts, ...; (1, 0), the whole file, for reassign.
    """

    shard: int
    worker: int
    input_file: str
    output_file: str
    record_file: str
    num_parts: int
    part: int


@dataclasses.dataclass(frozen=True)
class ShardLayout:
    """Where a prediction run reads and writes (see the module docstring).

    Attributes:
      label_data_dir: the input shards.
      file_prefix: their name prefix.
      num_shards: the number of shards.
      output_dir: receives the predictions (reassign: the relabeled records).
      info_dir: receives the info files (not used by reassign).
      num_prediction_workers: the workers that split each shard (--total_replicas).
      prediction_worker: this worker, in [0, num_prediction_workers) (--worker_id).
      reassign_label: relabel already-filtered records instead.
    """

    label_data_dir: str
    file_prefix: str
    num_shards: int
    output_dir: str
    info_dir: str
    num_prediction_workers: int = 1
    prediction_worker: int = 0
    reassign_label: bool = False

    def job(self, shard):
        """The ShardJob of `shard` for this worker."""
        worker = self.prediction_worker
        if self.reassign_label:
            src = file_names.task_shard_path(
                self.label_data_dir, self.file_prefix, worker, shard, self.num_shards
            )
            name = os.path.basename(src)
            out_path = os.path.join(self.output_dir, name)
            record_path = os.path.join(self.output_dir, PROVENANCE_DIR, name + ".json")
            return ShardJob(shard, worker, src, out_path, record_path, 1, 0)
        src = file_names.shard_path(self.label_data_dir, self.file_prefix, shard, self.num_shards)
        out_path = file_names.prediction_path(self.output_dir, shard, self.num_shards, worker)
        record_path = file_names.info_path(self.info_dir, shard, self.num_shards, worker)
        return ShardJob(
            shard, worker, src, out_path, record_path, self.num_prediction_workers, worker
        )


def make_predict_fn(model, strategy, mean_rgb, stddev_rgb, jit_compile=False):
    """A tf.function mapping a padded global batch to per-replica (probabilities, mask).

    Make it once per network and process and reuse it for every shard: the
    batches have a fixed shape (the last one is padded), so it traces once.

    Args:
      model: the network (e.g. a `checkpoints.LoadedModel.inference_model`).
      strategy: the distribution strategy.
      mean_rgb: per-channel mean of 0..255 pixels.
      stddev_rgb: per-channel standard deviation of 0..255 pixels.
      jit_compile: compile the replica function with XLA.
    """

    def replica_fn(batch):
        images = preprocessing.normalize_image(batch["images"], mean_rgb, stddev_rgb)
        logits = tf.cast(model(images, training=False), tf.float32)
        return tf.nn.softmax(logits, axis=-1), batch["mask"]

    replica_fn = tf.function(replica_fn, jit_compile=jit_compile) if jit_compile else replica_fn

    @tf.function
    def predict_fn(batch):
        probs, mask = strategy.run(replica_fn, args=(batch,))
        return strategy.experimental_local_results(probs), strategy.experimental_local_results(mask)

    return predict_fn


def predict_batches(predict_fn, strategy, dataset):
    """Yields (probabilities [n, C], batch, keep) of real rows, in input order.

    Args:
      predict_fn: a `make_predict_fn` function.
      strategy: its strategy.
      dataset: padded global batches of `data_input.make_eval_dataset`.
    """
    for batch in dataset:
        distributed = strategy.experimental_distribute_values_from_function(
            _split_fn(batch, strategy.num_replicas_in_sync)
        )
        probs, masks = predict_fn(distributed)
        probs = np.concatenate([p.numpy() for p in probs])
        keep = np.concatenate([m.numpy() for m in masks]) > 0
        yield probs[keep], batch, keep


def _split_fn(batch, num_replicas):
    """Contiguous per-replica slices of a global batch, so order is kept when concatenated."""
    per_replica = {k: v for k, v in batch.items() if k != "encoded"}

    def value_fn(ctx):
        i = ctx.replica_id_in_sync_group
        out = {}
        for k, v in per_replica.items():
            size = v.shape[0] // num_replicas
            out[k] = v[i * size : (i + 1) * size]
        return out

    return value_fn


def input_record(src):
    """What identifies an input shard cheaply: its path and size (records are added later)."""
    return {"input_file": src, "input_bytes": int(tf.io.gfile.stat(src).length)}


def describe_checkpoint(provenance):
    return f"{provenance.get('checkpoint')} (step {provenance.get('global_step')})"


def shard_is_done(job, provenance, overwrite):
    """Whether a ShardJob's outputs exist and come from this checkpoint and input.

    Raises:
      ValueError: the outputs exist but come from another checkpoint or input
        (unless `overwrite`), naming both.
    """
    out_path, record_path = job.output_file, job.record_file
    if not (tf.io.gfile.exists(out_path) and tf.io.gfile.exists(record_path)):
        return False
    if overwrite:
        return False
    recorded = atomic_files.read_json(record_path).get("provenance")
    if recorded is None:
        raise ValueError(
            f"{out_path} exists but {record_path} does not say which checkpoint made it "
            "(written by an older version). Pass --overwrite to predict it again with "
            f"{describe_checkpoint(provenance)}, or use another --output_dir/--info_dir."
        )
    if recorded.get("fingerprint") != provenance["fingerprint"]:
        raise ValueError(
            f"{out_path} was made by the checkpoint {describe_checkpoint(recorded)}, not by "
            f"--predict_ckpt_path {describe_checkpoint(provenance)}. Pass --overwrite to "
            "replace it, or use another --output_dir/--info_dir."
        )
    current = input_record(job.input_file)
    if (recorded.get("input_file"), recorded.get("input_bytes")) != (
        current["input_file"],
        current["input_bytes"],
    ):
        raise ValueError(
            f"{out_path} was made from {recorded.get('input_file')} "
            f"({recorded.get('input_bytes')} bytes), but the input now is {job.input_file} "
            f"({current['input_bytes']} bytes). Pass --overwrite to predict it again, or use "
            "another --output_dir/--info_dir."
        )
    return True


def make_loaded_predict_fn(loaded, strategy, jit_compile=False):
    """`make_predict_fn` of a `checkpoints.LoadedModel`: its folded network and normalization."""
    return make_predict_fn(
        loaded.inference_model, strategy, loaded.mean_rgb, loaded.stddev_rgb, jit_compile
    )


def _output_records(predict_fn, strategy, dataset, reassign_label, progress):
    """Yields the serialized output records: predictions, or the reassigned records."""
    for probs, batch, keep in predict_batches(predict_fn, strategy, dataset):
        if reassign_label:
            encoded = batch["encoded"].numpy()[keep]
            for image_bytes, p in zip(encoded, probs, strict=True):
                example = tfrecords.pseudo_labeled_example(image_bytes, p)
                yield example.SerializeToString(deterministic=True)
        else:
            for p in probs:
                yield tfrecords.prediction_example(p).SerializeToString(deterministic=True)
        progress.update(len(probs))


def predict_shard(
    loaded, strategy, job, *, provenance, batch_size, reassign_label=False, predict_fn=None
):
    """Predicts a ShardJob with a `checkpoints.LoadedModel`.

    Args:
      loaded: the network.
      strategy: the distribution strategy.
      job: the ShardJob.
      provenance: `loaded.provenance()`, recorded next to the outputs.
      batch_size: images per replica and step.
      reassign_label: write relabeled records rather than predictions.
      predict_fn: `make_loaded_predict_fn(loaded, strategy)`, made once for
        all shards (default: made here).

    Returns:
      Number of images predicted.

    Raises:
      data_input.DataError: a record of the input cannot be used, naming it.
    """
    src = job.input_file
    with data_input.naming_bad_files(image_files=[src]):
        total = tfrecords.count_records(src, job.num_parts, job.part)
    global_batch = train_lib.global_eval_batch_size(batch_size, strategy)
    dataset = data_input.make_eval_dataset(
        [src],
        batch_size=global_batch,
        image_size=loaded.image_size,
        small_image_model=loaded.small_image_model,
        labeled=False,
        num_shards=job.num_parts,
        shard_index=job.part,
        keep_encoded=reassign_label,
    )
    progress = progress_log.Progress(
        total, "images", prefix=f"shard {job.shard} worker {job.worker}: "
    )
    logging.info(
        "Predicting %d images of %s (part %d of %d) on %d replicas -> %s",
        total,
        src,
        job.part,
        job.num_parts,
        strategy.num_replicas_in_sync,
        job.output_file,
    )
    if predict_fn is None:
        predict_fn = make_loaded_predict_fn(loaded, strategy)
    records = _output_records(predict_fn, strategy, dataset, reassign_label, progress)
    with data_input.naming_bad_files(image_files=[src]):
        count = tfrecords.write_tfrecord(job.output_file, records)
    progress.update(0, force=True)
    if count != total:
        raise RuntimeError(f"Predicted {count} images but {src} part {job.part} has {total}.")
    record = {"provenance": dict(provenance, **input_record(src), input_records=total)}
    if not reassign_label:
        record["image_num"] = count
    atomic_files.write_json(job.record_file, record)
    return count


def run_prediction(
    config,
    strategy,
    *,
    predict_ckpt_path,
    output_dir,
    info_dir,
    num_shards=128,
    shard_id="0",
    num_prediction_workers=1,
    prediction_worker=0,
    reassign_label=False,
    file_prefix="train",
    overwrite=False,
):
    """Predicts every shard of `shard_id` ('3' or '0,4,8'). Returns {shard: count or None}.

    Every shard's existing outputs are checked before any is written; a
    shard already predicted by this checkpoint from this input is skipped
    (None), outputs of another checkpoint or input are an error unless
    `overwrite`. `num_prediction_workers` and `prediction_worker` are the
    flags --total_replicas and --worker_id.
    """
    if not output_dir:
        raise ValueError("--output_dir is required for --mode=predict.")
    if not reassign_label and not info_dir:
        raise ValueError("--info_dir is required for --mode=predict.")
    if not 0 <= prediction_worker < num_prediction_workers:
        raise ValueError(
            f"--worker_id={prediction_worker} must lie in "
            f"[0, --total_replicas={num_prediction_workers})."
        )
    shards = file_names.parse_shard_ids(shard_id, num_shards)
    loaded = checkpoints.load_model(
        predict_ckpt_path,
        what="--predict_ckpt_path",
        default_task_name=config.task_name,
        fallback_description=train_lib.student_description(config),
        use_ema=config.use_ema,
        strategy=strategy,
    )
    if loaded.description["model_name"] != config.model_name:
        logging.info(
            "Using the checkpoint's model %s (not --model_name=%s).",
            loaded.description["model_name"],
            config.model_name,
        )
    logging.info(
        "Predicting with the %s weights of %s (%d px).",
        "EMA" if config.use_ema else "raw",
        loaded.prefix,
        loaded.image_size,
    )
    provenance = loaded.provenance()
    layout = ShardLayout(
        config.label_data_dir,
        file_prefix,
        num_shards,
        output_dir,
        info_dir,
        num_prediction_workers,
        prediction_worker,
        reassign_label,
    )
    todo = []
    for shard in shards:
        job = layout.job(shard)
        if not tf.io.gfile.exists(job.input_file):
            raise FileNotFoundError(
                f"Input shard {job.input_file} does not exist (check --label_data_dir, "
                "--file_prefix, --num_shards)."
            )
        if shard_is_done(job, provenance, overwrite):
            logging.info(
                "Shard %d (worker %d): %s exists, skipping.", shard, job.worker, job.output_file
            )
            continue
        todo.append(job)
    counts = {shard: None for shard in shards}
    jit_compile = train_lib.use_xla_for(config.use_xla, strategy)
    predict_fn = make_loaded_predict_fn(loaded, strategy, jit_compile) if todo else None
    for job in todo:
        counts[job.shard] = predict_shard(
            loaded,
            strategy,
            job,
            provenance=provenance,
            batch_size=config.eval_batch_size,
            reassign_label=reassign_label,
            predict_fn=predict_fn,
        )
    return counts
