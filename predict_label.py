r"""Pseudo labels: predict a teacher's probabilities on unlabeled shards (SPEC §7).

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
"""

import os

import numpy as np
import tensorflow as tf
from absl import logging

import checkpoints
import data_input
import train_lib
import utils

PROVENANCE_DIR = "provenance"


def input_path(data_dir, file_prefix, shard, num_shards, reassign=False, worker_id=0):
    """The input file of a shard: raw `{prefix}-%05d-of-%05d` or filtered `{prefix}-{w}-...`."""
    if reassign:
        name = f"{file_prefix}-{worker_id:d}-{shard:05d}-of-{num_shards:05d}"
    else:
        name = f"{file_prefix}-{shard:05d}-of-{num_shards:05d}"
    return os.path.join(data_dir, name)


def count_records(path, num_shards=1, shard_index=0):
    ds = tf.data.TFRecordDataset(path)
    if num_shards > 1:
        ds = ds.shard(num_shards, shard_index)
    return int(ds.reduce(np.int64(0), lambda n, _: n + 1).numpy())


def make_predict_fn(model, strategy, mean_rgb, stddev_rgb):
    """A tf.function mapping a padded global batch to per-replica (probabilities, mask)."""

    def replica_fn(batch):
        images = (batch["images"] - tf.constant(mean_rgb)) / tf.constant(stddev_rgb)
        logits = tf.cast(model(images, training=False), tf.float32)
        return tf.nn.softmax(logits, axis=-1), batch["mask"]

    @tf.function
    def predict_fn(batch):
        probs, mask = strategy.run(replica_fn, args=(batch,))
        return strategy.experimental_local_results(probs), strategy.experimental_local_results(mask)

    return predict_fn


def predict_batches(model, strategy, dataset, mean_rgb, stddev_rgb):
    """Yields (probabilities [n, C], batch) of real rows, in input order."""
    predict_fn = make_predict_fn(model, strategy, mean_rgb, stddev_rgb)
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


def shard_outputs(
    *, output_dir, info_dir, label_data_dir, file_prefix, shard, num_shards, worker_id, reassign
):
    """(input file, output file, provenance file) of one shard (see the module docstring)."""
    src = input_path(label_data_dir, file_prefix, shard, num_shards, reassign, worker_id)
    if reassign:
        out_path = os.path.join(output_dir, os.path.basename(src))
        record_path = os.path.join(output_dir, PROVENANCE_DIR, os.path.basename(src) + ".json")
    else:
        out_path = utils.prediction_path(output_dir, shard, num_shards, worker_id)
        record_path = utils.info_path(info_dir, shard, num_shards, worker_id)
    return src, out_path, record_path


def input_record(src):
    """What identifies an input shard cheaply: its path and size (records are added later)."""
    return {"input_file": src, "input_bytes": int(tf.io.gfile.stat(src).length)}


def describe_checkpoint(provenance):
    return f"{provenance.get('checkpoint')} (step {provenance.get('global_step')})"


def shard_is_done(src, out_path, record_path, provenance, overwrite):
    """Whether a shard's outputs exist and come from this checkpoint and input.

    Raises:
      ValueError: the outputs exist but come from another checkpoint or input
        (unless `overwrite`), naming both.
    """
    if not (tf.io.gfile.exists(out_path) and tf.io.gfile.exists(record_path)):
        return False
    if overwrite:
        return False
    recorded = utils.read_json(record_path).get("provenance")
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
    current = input_record(src)
    if (recorded.get("input_file"), recorded.get("input_bytes")) != (
        current["input_file"],
        current["input_bytes"],
    ):
        raise ValueError(
            f"{out_path} was made from {recorded.get('input_file')} "
            f"({recorded.get('input_bytes')} bytes), but the input now is {src} "
            f"({current['input_bytes']} bytes). Pass --overwrite to predict it again, or use "
            "another --output_dir/--info_dir."
        )
    return True


def predict_shard(
    loaded,
    strategy,
    *,
    src,
    out_path,
    record_path,
    batch_size,
    total_replicas=1,
    worker_id=0,
    reassign_label=False,
    shard=0,
):
    """Predicts one shard (or this worker's part of it) with a `checkpoints.LoadedModel`.

    Returns:
      Number of images predicted.

    Raises:
      data_input.DataError: a record of `src` cannot be used, naming it.
    """
    parts = 1 if reassign_label else total_replicas
    part = 0 if reassign_label else worker_id
    with data_input.naming_bad_files(image_files=[src]):
        total = count_records(src, parts, part)
    replicas = strategy.num_replicas_in_sync
    global_batch = train_lib.global_eval_batch_size(batch_size, strategy)
    dataset = data_input.make_eval_dataset(
        [src],
        batch_size=global_batch,
        image_size=loaded.image_size,
        small_image_model=loaded.small_image_model,
        labeled=False,
        num_shards=parts,
        shard_index=part,
        keep_encoded=reassign_label,
    )
    progress = utils.Progress(total, "images", prefix=f"shard {shard} worker {worker_id}: ")
    logging.info(
        "Predicting %d images of %s (part %d of %d) on %d replicas -> %s",
        total,
        src,
        part,
        parts,
        replicas,
        out_path,
    )

    def records():
        for probs, batch, keep in predict_batches(
            loaded.model, strategy, dataset, loaded.mean_rgb, loaded.stddev_rgb
        ):
            if reassign_label:
                encoded = batch["encoded"].numpy()[keep]
                for image_bytes, p in zip(encoded, probs, strict=True):
                    example = utils.pseudo_labeled_example(image_bytes, p)
                    yield example.SerializeToString(deterministic=True)
            else:
                for p in probs:
                    yield utils.prediction_example(p).SerializeToString(deterministic=True)
            progress.update(len(probs))

    with data_input.naming_bad_files(image_files=[src]):
        count = utils.write_tfrecord(out_path, records())
    progress.update(0, force=True)
    if count != total:
        raise RuntimeError(f"Predicted {count} images but {src} part {part} has {total}.")
    provenance = dict(loaded.provenance(), **input_record(src), input_records=total)
    record = {"provenance": provenance}
    if not reassign_label:
        record["image_num"] = count
    utils.write_json(record_path, record)
    return count


def load_prediction_model(config, strategy, predict_ckpt_path):
    """The network of `predict_ckpt_path`, from its model_params.txt (else from the flags).

    Returns:
      A `checkpoints.LoadedModel`.
    """
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
    return loaded


def run_prediction(
    config,
    strategy,
    *,
    predict_ckpt_path,
    output_dir,
    info_dir,
    num_shards=128,
    shard_id="0",
    total_replicas=1,
    worker_id=0,
    reassign_label=False,
    file_prefix="train",
    overwrite=False,
):
    """Predicts every shard of `shard_id` ('3' or '0,4,8'). Returns {shard: count or None}.

    Every shard's existing outputs are checked before any is written; a
    shard already predicted by this checkpoint from this input is skipped
    (None), outputs of another checkpoint or input are an error unless
    `overwrite`.
    """
    if not output_dir:
        raise ValueError("--output_dir is required for --mode=predict.")
    if not reassign_label and not info_dir:
        raise ValueError("--info_dir is required for --mode=predict.")
    if not 0 <= worker_id < total_replicas:
        raise ValueError(
            f"--worker_id={worker_id} must lie in [0, --total_replicas={total_replicas})."
        )
    shards = utils.parse_shard_ids(shard_id, num_shards)
    loaded = load_prediction_model(config, strategy, predict_ckpt_path)
    provenance = loaded.provenance()
    todo = {}
    for shard in shards:
        src, out_path, record_path = shard_outputs(
            output_dir=output_dir,
            info_dir=info_dir,
            label_data_dir=config.label_data_dir,
            file_prefix=file_prefix,
            shard=shard,
            num_shards=num_shards,
            worker_id=worker_id,
            reassign=reassign_label,
        )
        if not tf.io.gfile.exists(src):
            raise FileNotFoundError(
                f"Input shard {src} does not exist (check --label_data_dir, "
                "--file_prefix, --num_shards)."
            )
        if shard_is_done(src, out_path, record_path, provenance, overwrite):
            logging.info("Shard %d (worker %d): %s exists, skipping.", shard, worker_id, out_path)
            continue
        todo[shard] = (src, out_path, record_path)
    counts = {shard: None for shard in shards}
    for shard, (src, out_path, record_path) in todo.items():
        counts[shard] = predict_shard(
            loaded,
            strategy,
            src=src,
            out_path=out_path,
            record_path=record_path,
            batch_size=config.eval_batch_size,
            total_replicas=total_replicas,
            worker_id=worker_id,
            reassign_label=reassign_label,
            shard=shard,
        )
    return counts
