"""Checkpoints: where they are, which network they hold, and loading that network.

Every consumer of a trained network (the on-the-fly teacher, `--init_model_path`,
evaluation, prediction and reassignment, export) calls `load_model`, so the
network, its input size and its input normalization always come from the
checkpoint's own `model_params.txt`, never from flags that may describe
another run. A checkpoint is either this project's (`tf.train.Checkpoint` with
`model` and `ema_model`) or a published TF1 EfficientNet checkpoint (see
`tf1_checkpoint`).
"""

import collections
import contextlib
import dataclasses
import functools
import hashlib
import json
import os

import tensorflow as tf
from absl import logging

import atomic_files
import bn_folding
import efficientnet_builder
import file_names
import task_info
import tf1_checkpoint

MODEL_PARAMS_FILE = file_names.MODEL_PARAMS_FILE
FLAGS_FILE = file_names.FLAGS_FILE


def model_description(
    model_name, num_classes, small_image_model, override_params, image_size, task_name=None
):
    """Everything needed to rebuild and feed the same network, as a JSON-serializable dict.

    The builder's architecture description (scaled stages, dropout, batch
    norm settings; `efficientnet_builder.architecture_description`), plus the input `image_size` and, given `task_name`, the
    task and its per-channel input normalization (`mean_rgb`, `stddev_rgb`).
    """
    description = efficientnet_builder.architecture_description(
        model_name, num_classes, small_image_model, override_params
    )
    description["image_size"] = int(image_size)
    if task_name is not None:
        info = task_info.get_task_info(task_name)
        description["task_name"] = task_name
        description["mean_rgb"] = [float(v) for v in info.mean_rgb]
        description["stddev_rgb"] = [float(v) for v in info.stddev_rgb]
    return description


def create_model(description, sync_batch_norm=False):
    """Builds the network of `description` (see `model_description`), variables created."""
    network = {k: description[k] for k in efficientnet_builder.DESCRIPTION_KEYS}
    network["sync_batch_norm"] = sync_batch_norm
    model = efficientnet_builder.build_model_from_description(network)
    size = description["image_size"]
    model(tf.zeros([1, size, size, 3]), training=False)
    return model


def model_dir_of(path):
    """The directory of a model_dir or of a checkpoint prefix inside one."""
    return path if tf.io.gfile.isdir(path) else os.path.dirname(path)


def read_model_description(path):
    """The model description saved next to a checkpoint, or None.

    Args:
      path: a model_dir or a checkpoint prefix inside one.
    """
    params_file = os.path.join(model_dir_of(path), MODEL_PARAMS_FILE)
    if not tf.io.gfile.exists(params_file):
        return None
    try:
        description = atomic_files.read_json(params_file)
    except json.JSONDecodeError:
        # The published TF1 code wrote a text model_params.txt of its own.
        logging.warning("%s is not a model description of this project; ignored.", params_file)
        return None
    return description if isinstance(description, dict) and "model_name" in description else None


def recorded_task_name(path):
    """The `task_name` in the FLAGS.json next to a checkpoint, or None."""
    flags_file = os.path.join(model_dir_of(path), FLAGS_FILE)
    if not tf.io.gfile.exists(flags_file):
        return None
    try:
        return atomic_files.read_json(flags_file).get("task_name")
    except (json.JSONDecodeError, AttributeError):
        return None


def resolve_checkpoint(path, what="checkpoint"):
    """A checkpoint prefix from a prefix or a model_dir; FileNotFoundError naming `what`."""
    if not path:
        raise FileNotFoundError(f"No {what} path given.")
    if tf.io.gfile.isdir(path):
        latest = tf.train.latest_checkpoint(path)
        if latest is None:
            # Unpacked published checkpoints may lack a `checkpoint` state file,
            # or have one naming the paths of the machine that wrote them.
            prefixes = [
                p[: -len(".index")] for p in tf.io.gfile.glob(os.path.join(path, "*.index"))
            ]
            if len(prefixes) == 1:
                return prefixes[0]
            raise FileNotFoundError(
                f"{what}: no checkpoint in directory {path!r}"
                + (f" (several, pass one prefix: {sorted(prefixes)})." if prefixes else ".")
            )
        return latest
    if not tf.io.gfile.exists(path + ".index"):
        raise FileNotFoundError(f"{what}: {path!r} is neither a directory nor a checkpoint prefix.")
    return path


def checkpoint_step(prefix):
    """The global step of a `...-<step>` checkpoint prefix, or -1."""
    tail = prefix.rsplit("-", 1)[-1]
    return int(tail) if tail.isdigit() else -1


def fingerprint(prefix):
    """A short hash identifying a checkpoint's contents.

    The `.index` file lists every tensor's name, dtype, shape, offset and the
    CRC32C of its bytes, so hashing it identifies the weights without reading
    them (milliseconds even for large models).
    """
    with tf.io.gfile.GFile(prefix + ".index", "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()[:16]


def checkpoint_provenance(prefix, use_ema):
    """What identifies the outputs of a checkpoint's weights, without loading them.

    Args:
      prefix: a checkpoint prefix (see `resolve_checkpoint`).
      use_ema: whether the moving-average weights are (to be) read.

    Returns:
      {"checkpoint", "global_step", "fingerprint", "use_ema"}: the keys the
      filter keeps from prediction's provenance (`filter_stats.parse_provenance`).
    """
    return {
        "checkpoint": prefix,
        "global_step": checkpoint_step(prefix),
        "fingerprint": fingerprint(prefix),
        "use_ema": bool(use_ema),
    }


class CheckpointMismatchError(ValueError):
    """A checkpoint holds another network than the one it is read into."""


def _check_shapes_fit(model, prefix, key, what):
    """Fails, before any read, when `model` has weights of shapes the checkpoint lacks.

    A checkpoint of another width or depth would otherwise be found out by
    the read itself, after TensorFlow has warned about every unmatched
    value (hundreds of lines).
    """
    available = collections.Counter()
    for name, shape in tf.train.list_variables(prefix):
        # A variable is saved once, under the first path to it: the raw model's
        # trainable weights are listed under the optimizer, not under "model/".
        if name.startswith((f"{key}/", "optimizer/")) and ".OPTIMIZER_SLOT" not in name:
            available[tuple(shape)] += 1
    needed = collections.Counter(tuple(w.shape) for w in model.weights)
    missing = needed - available
    if not missing:
        return
    example = next(w for w in model.weights if tuple(w.shape) in missing)
    saved = read_model_description(prefix)
    holds = ""
    if saved is not None:
        holds = (
            f" It holds {saved.get('model_name')} of width_coefficient "
            f"{saved.get('width_coefficient')}, depth_coefficient "
            f"{saved.get('depth_coefficient')} and {saved.get('num_classes')} classes "
            f"({MODEL_PARAMS_FILE})."
        )
    raise CheckpointMismatchError(
        f"{what} {prefix!r} holds another network than the model {model.name!r}: "
        f"{sum(missing.values())} of the model's {len(model.weights)} weights have no value "
        f"of their shape there (e.g. {example.path} {list(example.shape)}).{holds} Pass the "
        "flags of the network it was trained with (--model_name, --width_coefficient, "
        "--depth_coefficient), or another checkpoint."
    )


def load_ema_weights(model, path, what="checkpoint", use_ema=True, skip_mismatched_head=False):
    """Loads the moving-average (EMA) weights of a checkpoint into `model`.

    Two formats are accepted: this project's checkpoints (the `ema_model`
    written by `train_lib.TrainState`) and name-based TF1 EfficientNet
    checkpoints of the published code (see `tf1_checkpoint`), recognized by
    their variable names.

    Args:
      model: the network to fill.
      path: a checkpoint prefix or a directory holding checkpoints.
      what: how to call the checkpoint in messages, e.g. a flag name.
      use_ema: False reads the raw trained weights instead (`model` of this
        project's checkpoints, the non-shadow variables of TF1 ones).
      skip_mismatched_head: when the checkpoint's classifier has another
        number of classes than `model`, keep the model's `predictions` layer
        (fine-tuning) instead of failing. For this project's checkpoints the
        class count is read from the model_params.txt next to them.

    Returns:
      The checkpoint prefix that was read.

    Raises:
      FileNotFoundError: no checkpoint at `path`.
      CheckpointMismatchError: the checkpoint holds another network (say of
        another width), found before reading it.
      ValueError: the checkpoint does not fit `model`, or cannot be read.
    """
    prefix = resolve_checkpoint(path, what)
    if tf1_checkpoint.is_tf1_checkpoint(prefix):
        report = tf1_checkpoint.load_tf1_checkpoint(
            model, prefix, use_ema=use_ema, skip_mismatched_head=skip_mismatched_head, what=what
        )
        logging.info("%s: %s.", what, report.summary())
        if report.skipped:
            logging.warning("%s: classifier head not loaded: %s", what, ", ".join(report.skipped))
        return prefix
    key = "ema_model" if use_ema else "model"
    target = model
    description = read_model_description(prefix) if skip_mismatched_head else None
    num_classes = model.get_layer("predictions").units
    if description is not None and description["num_classes"] != num_classes:
        # Restore into a network of the checkpoint's own shape, then copy all
        # but the classifier.
        target = create_model(description)
    try:
        _check_shapes_fit(target, prefix, key, what)
    except tf.errors.OpError as e:
        raise ValueError(
            f"{what} {prefix!r} cannot be read (truncated or corrupt?): {e.message[:300]}"
        ) from e
    try:
        status = tf.train.Checkpoint(**{key: target}).read(prefix)
        status.expect_partial().assert_existing_objects_matched()
    except (AssertionError, ValueError) as e:
        raise ValueError(
            f"{what} {prefix!r} does not match the model {model.name!r} "
            f"(different architecture?): {str(e)[:500]}"
        ) from e
    except tf.errors.OpError as e:
        raise ValueError(
            f"{what} {prefix!r} cannot be read (truncated or corrupt?): {e.message[:300]}"
        ) from e
    if target is not model:
        _copy_weights_except_head(target, model, what, prefix)
        logging.warning(
            "%s: classifier head not loaded (checkpoint has %d classes, the model %d).",
            what,
            description["num_classes"],
            num_classes,
        )
    return prefix


def _copy_weights_except_head(source, model, what, prefix):
    for layer in source.layers:
        if not layer.weights or layer.name == "predictions":
            continue
        try:
            model.get_layer(layer.name).set_weights(layer.get_weights())
        except ValueError as e:
            raise ValueError(
                f"{what} {prefix!r}: layer {layer.name!r} does not fit the model {model.name!r} "
                f"(different architecture?): {str(e)[:300]}"
            ) from e


@dataclasses.dataclass
class LoadedModel:
    """A network loaded from a checkpoint, with what is needed to feed it.

    Attributes:
      model: the Keras network holding the checkpoint's (EMA) weights.
      description: its description (see `model_description`), including
        `image_size`, `mean_rgb` and `stddev_rgb`.
      prefix: the checkpoint prefix that was read.
      use_ema: whether the moving-average weights were read.
    """

    model: object
    description: dict
    prefix: str
    use_ema: bool = True

    @functools.cached_property
    def inference_model(self):
        """`model` with its batch norms folded into the convolutions (`bn_folding`).

        Same outputs as `model(x, training=False)` within float tolerance, faster;
        for prediction, evaluation and export only, never for training or saving
        checkpoints (its layers hold folded weights).
        """
        return bn_folding.fold_batch_norms(self.model)

    @property
    def image_size(self):
        return int(self.description["image_size"])

    @property
    def small_image_model(self):
        return bool(self.description["small_image_model"])

    @property
    def mean_rgb(self):
        return tuple(self.description["mean_rgb"])

    @property
    def stddev_rgb(self):
        return tuple(self.description["stddev_rgb"])

    def provenance(self):
        """What identifies this network's outputs: checkpoint, step, fingerprint, model."""
        return dict(checkpoint_provenance(self.prefix, self.use_ema), model=self.description)


def with_normalization(description, path, default_task_name):
    """`description` with `task_name`, `mean_rgb` and `stddev_rgb` filled in.

    Descriptions written before the normalization was recorded take it from
    the task in the FLAGS.json next to the checkpoint, else `default_task_name`.
    """
    if "mean_rgb" in description and "stddev_rgb" in description:
        return description
    task_name = recorded_task_name(path) or default_task_name
    if task_name != default_task_name:
        logging.warning(
            "%s was trained for task %s: using its normalization, not that of task %s.",
            path,
            task_name,
            default_task_name,
        )
    info = task_info.get_task_info(task_name)
    return dict(
        description,
        task_name=task_name,
        mean_rgb=[float(v) for v in info.mean_rgb],
        stddev_rgb=[float(v) for v in info.stddev_rgb],
    )


def load_model(
    path,
    *,
    what,
    default_task_name,
    fallback_description=None,
    use_ema=True,
    strategy=None,
    sync_batch_norm=False,
    skip_mismatched_head=False,
):
    """Builds the network a checkpoint holds and loads its weights.

    Args:
      path: a checkpoint prefix or a model_dir (its latest checkpoint; read
        again if a training there replaces it while it is read).
      what: how to call the checkpoint in messages, e.g. "--predict_ckpt_path".
      default_task_name: the task whose normalization applies when the
        checkpoint records none (checkpoints of older versions).
      fallback_description: the description to build when the checkpoint has
        no model_params.txt (e.g. an unpacked published TF1 checkpoint, for
        which the flags must say the architecture); None makes that an error.
      use_ema: read the moving-average weights (False: the raw ones).
      strategy: build the variables in this strategy's scope (default: none).
      sync_batch_norm: passed to `create_model` (only matters when training).
      skip_mismatched_head: see `load_ema_weights`.

    Returns:
      A `LoadedModel`.

    Raises:
      FileNotFoundError: no checkpoint at `path`, or no description for it.
      ValueError: the checkpoint does not fit its description.
    """
    # A training that keeps few checkpoints deletes the latest one when it
    # saves the next: reading a model_dir then takes the new latest.
    attempts = 3 if tf.io.gfile.isdir(path) else 1
    for attempt in range(attempts):
        prefix = resolve_checkpoint(path, what)
        try:
            return _load_prefix(
                prefix,
                what,
                default_task_name,
                fallback_description,
                use_ema,
                strategy,
                sync_batch_norm,
                skip_mismatched_head,
            )
        except (FileNotFoundError, ValueError):
            replaced = tf.train.latest_checkpoint(path) not in (None, prefix)
            if attempt + 1 == attempts or not replaced:
                raise
            logging.warning(
                "%s: %s was replaced by a newer checkpoint while it was read (a training "
                "running there keeps only the latest); reading the latest one.",
                what,
                prefix,
            )


def _load_prefix(
    prefix,
    what,
    default_task_name,
    fallback_description,
    use_ema,
    strategy,
    sync_batch_norm,
    skip_mismatched_head,
):
    """`load_model` of one checkpoint prefix."""
    description = read_model_description(prefix)
    if description is None:
        if fallback_description is None:
            raise FileNotFoundError(
                f"{what}: no {MODEL_PARAMS_FILE} next to {prefix}, so the network it holds is "
                "unknown."
            )
        logging.warning(
            "%s: no %s next to %s; building %s from the flags.",
            what,
            MODEL_PARAMS_FILE,
            prefix,
            fallback_description["model_name"],
        )
        description = fallback_description
    description = with_normalization(description, prefix, default_task_name)
    with strategy.scope() if strategy is not None else contextlib.nullcontext():
        model = create_model(description, sync_batch_norm=sync_batch_norm)
    load_ema_weights(
        model, prefix, what, use_ema=use_ema, skip_mismatched_head=skip_mismatched_head
    )
    return LoadedModel(model=model, description=description, prefix=prefix, use_ema=use_ema)
