r"""Pseudo labels: predict a teacher's probabilities on unlabeled shards (SPEC §7).

Called by `python main.py --mode=predict`. One process handles one or more
shards (`--shard_id=3` or `--shard_id=0,4,8`); `--total_replicas` workers can
split one shard (worker w takes records w, w + n, w + 2n, ...). All devices of
the process (a TPU host, several GPUs) share a shard through the strategy;
the last batch is padded and masked, so every input image gets exactly one
prediction, in input order.

Outputs, each written under a temporary name and renamed when complete:
  {output_dir}/train-info-%05d-of-%05d-%05d   probabilities, classes
  {info_dir}/info-%05d-of-%05d-%05d.txt       {"image_num": N}
With `--reassign_label`, already-filtered records
`{label_data_dir}/{file_prefix}-{worker_id}-%05d-of-%05d` are rewritten under
`--output_dir` with the new model's `label`, `prob` and `probabilities`.
A shard whose outputs exist is skipped, so an interrupted job re-runs only
what is missing.
"""

import os

import numpy as np
import tensorflow as tf
from absl import logging

import data_input
import task_info
import train_lib
import utils


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


def predict_shard(
    model,
    strategy,
    *,
    task_name,
    image_size,
    small_image_model,
    label_data_dir,
    file_prefix,
    shard,
    num_shards,
    output_dir,
    info_dir,
    batch_size,
    total_replicas=1,
    worker_id=0,
    reassign_label=False,
):
    """Predicts one shard (or this worker's part of it); skips it if already done.

    Returns:
      Number of images predicted, or None if the shard was already complete.
    """
    src = input_path(label_data_dir, file_prefix, shard, num_shards, reassign_label, worker_id)
    if reassign_label:
        out_path = os.path.join(output_dir, os.path.basename(src))
        info_file = None
        done = tf.io.gfile.exists(out_path)
    else:
        out_path = utils.prediction_path(output_dir, shard, num_shards, worker_id)
        info_file = utils.info_path(info_dir, shard, num_shards, worker_id)
        done = tf.io.gfile.exists(out_path) and tf.io.gfile.exists(info_file)
    if done:
        logging.info("Shard %d (worker %d): %s exists, skipping.", shard, worker_id, out_path)
        return None
    if not tf.io.gfile.exists(src):
        raise FileNotFoundError(
            f"Input shard {src} does not exist (check --label_data_dir, "
            "--file_prefix, --num_shards)."
        )
    parts = 1 if reassign_label else total_replicas
    part = 0 if reassign_label else worker_id
    total = count_records(src, parts, part)
    replicas = strategy.num_replicas_in_sync
    global_batch = train_lib.global_eval_batch_size(batch_size, strategy)
    dataset = data_input.make_eval_dataset(
        [src],
        batch_size=global_batch,
        image_size=image_size,
        small_image_model=small_image_model,
        labeled=False,
        num_shards=parts,
        shard_index=part,
        keep_encoded=reassign_label,
    )
    info = task_info.get_task_info(task_name)
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
            model, strategy, dataset, info.mean_rgb, info.stddev_rgb
        ):
            if reassign_label:
                encoded = batch["encoded"].numpy()[keep]
                for image_bytes, p in zip(encoded, probs, strict=True):
                    yield utils.pseudo_labeled_example(image_bytes, p).SerializeToString()
            else:
                for p in probs:
                    yield utils.prediction_example(p).SerializeToString()
            progress.update(len(probs))

    count = utils.write_tfrecord(out_path, records())
    progress.update(0, force=True)
    if count != total:
        raise RuntimeError(f"Predicted {count} images but {src} part {part} has {total}.")
    if info_file:
        utils.write_json(info_file, {"image_num": count})
    return count


def load_prediction_model(config, strategy, predict_ckpt_path):
    """Builds the model described next to the checkpoint and loads its EMA weights.

    Returns:
      (model, description).
    """
    train_lib.resolve_checkpoint(predict_ckpt_path, "--predict_ckpt_path")
    description = train_lib.read_model_description(predict_ckpt_path)
    if description is None:
        logging.warning(
            "No %s next to %s: using --model_name=%s and the flags' overrides.",
            train_lib.MODEL_PARAMS_FILE,
            predict_ckpt_path,
            config.model_name,
        )
        description = train_lib.model_description(
            config.model_name,
            config.num_label_classes,
            config.small_image_model,
            config.override_params,
            config.input_image_size,
        )
    elif description["model_name"] != config.model_name:
        logging.info(
            "Using the checkpoint's model %s (not --model_name=%s).",
            description["model_name"],
            config.model_name,
        )
    with strategy.scope():
        model = train_lib.create_model(description)
    prefix = train_lib.load_ema_weights(
        model, predict_ckpt_path, "--predict_ckpt_path", use_ema=config.use_ema
    )
    logging.info(
        "Predicting with the %s weights of %s.", "EMA" if config.use_ema else "raw", prefix
    )
    return model, description


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
):
    """Predicts every shard of `shard_id` ('3' or '0,4,8'). Returns {shard: count or None}."""
    if not output_dir:
        raise ValueError("--output_dir is required for --mode=predict.")
    if not reassign_label and not info_dir:
        raise ValueError("--info_dir is required for --mode=predict.")
    if not 0 <= worker_id < total_replicas:
        raise ValueError(
            f"--worker_id={worker_id} must lie in [0, --total_replicas={total_replicas})."
        )
    shards = utils.parse_shard_ids(shard_id, num_shards)
    model, description = load_prediction_model(config, strategy, predict_ckpt_path)
    counts = {}
    for shard in shards:
        counts[shard] = predict_shard(
            model,
            strategy,
            task_name=config.task_name,
            image_size=description["image_size"],
            small_image_model=description["small_image_model"],
            label_data_dir=config.label_data_dir,
            file_prefix=file_prefix,
            shard=shard,
            num_shards=num_shards,
            output_dir=output_dir,
            info_dir=info_dir,
            batch_size=config.eval_batch_size,
            total_replicas=total_replicas,
            worker_id=worker_id,
            reassign_label=reassign_label,
        )
    return counts
