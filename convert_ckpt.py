r"""Converts published EfficientNet weights into a model_dir of this project.

Two sources are accepted:
  * a TF1 checkpoint of the published TPUEstimator code (the Noisy Student
    and EfficientNet releases, e.g. noisy_student_efficientnet-b0/), given as
    a checkpoint prefix or a directory; variable names are described in
    `tf1_checkpoint`;
  * a Keras `keras.applications.EfficientNetB0..B7` weights file
    (`.weights.h5`, or a legacy `.h5` such as Keras' downloadable
    efficientnetb0.h5 / efficientnetb0_notop.h5).

The output directory is an ordinary model_dir: `ckpt-0` holds the weights as
both the student and its EMA copy, next to `model_params.txt` and
`FLAGS.json`, so it can be passed to `--mode=eval/predict/export` as
`--model_dir`, or as `--teacher_model_path`, `--init_model_path` or
`--predict_ckpt_path`.

Example:

  python convert_ckpt.py --input_path=noisy_student_efficientnet-b0 \
      --output_dir=ckpt/ns-b0
"""

import dataclasses
import os
import warnings

import h5py
import keras
import tensorflow as tf
from absl import app, flags, logging

import checkpoints
import efficientnet_builder
import task_info
import tf1_checkpoint
import train_lib

_KERAS_SUFFIXES = (".h5", ".hdf5")


def is_keras_weights_file(path):
    """Whether `path` names a Keras HDF5 weights file (by its suffix)."""
    return path.endswith(_KERAS_SUFFIXES)


def _h5_dataset_shapes(path):
    """Shapes of every dataset in an HDF5 file; ValueError naming a file that is not HDF5."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"--input_path={path}: no such file.")
    shapes = []
    try:
        with h5py.File(path, "r") as f:
            f.visititems(
                lambda _, obj: (
                    shapes.append(tuple(obj.shape)) if isinstance(obj, h5py.Dataset) else None
                )
            )
    except OSError as e:
        raise ValueError(
            f"--input_path={path} is not a readable HDF5 (.h5) weights file: {e}"
        ) from e
    return shapes


def inspect_keras_file(path):
    """Reads the architecture of a keras.applications EfficientNet weights file.

    The only 2-D weight of the network is the classifier kernel, and every
    block has one depthwise kernel [k, k, C, 1]; that is enough to tell the
    model and its classes apart without knowing the file's layout.

    Returns:
      (model_name or None if no B0..B7 matches, num_classes or None for a
      file without classifier).
    """
    shapes = _h5_dataset_shapes(path)
    dense = [s for s in shapes if len(s) == 2]
    num_classes = dense[0][1] if len(dense) == 1 else None
    num_blocks = sum(1 for s in shapes if len(s) == 4 and s[3] == 1 and s[0] == s[1] > 1)
    head_filters = {s[3] for s in shapes if len(s) == 4 and s[:2] == (1, 1)}
    for name in efficientnet_builder.MODEL_NAMES:
        if not hasattr(keras.applications, _keras_app_name(name)):
            continue
        desc = efficientnet_builder.architecture_description(name)
        if desc["num_blocks"] == num_blocks and desc["head_filters"] in head_filters:
            return name, num_classes
    return None, num_classes


def _keras_app_name(model_name):
    # "efficientnet-b3" -> "EfficientNetB3"
    return "EfficientNet" + model_name.rsplit("-", 1)[-1].upper()


def load_keras_weights(model, path, model_name):
    """Copies a keras.applications EfficientNet weights file into `model` by layer name.

    Args:
      model: a network of `efficientnet_builder` with the file's architecture.
      path: `.weights.h5` or legacy `.h5` file of
        `keras.applications.EfficientNetBx`.
      model_name: "efficientnet-b0" ... "efficientnet-b7".

    Returns:
      (number of weights copied, whether the classifier was in the file).

    Raises:
      ValueError: unsupported model, or a layer whose weights do not fit.
    """
    app_fn = getattr(keras.applications, _keras_app_name(model_name), None)
    if app_fn is None:
        raise ValueError(f"keras.applications has no {model_name}; only efficientnet-b0..b7.")
    _, file_classes = inspect_keras_file(path)
    include_top = file_classes is not None
    kwargs = {"classes": file_classes} if include_top else {}
    source = app_fn(weights=None, include_top=include_top, **kwargs)
    with warnings.catch_warnings():
        # Keras warns about every container without weights in the file.
        warnings.simplefilter("ignore")
        source.load_weights(path)
    copied = 0
    for layer in model.layers:
        if not layer.weights or (layer.name == "predictions" and not include_top):
            continue
        try:
            source_layer = source.get_layer(layer.name)
        except ValueError as e:
            raise ValueError(f"{path}: no layer {layer.name!r} in the Keras model.") from e
        values = source_layer.get_weights()
        expected = [tuple(w.shape) for w in layer.weights]
        if [v.shape for v in values] != expected:
            raise ValueError(
                f"{path}: layer {layer.name!r} has weights of shapes "
                f"{[v.shape for v in values]}, the model needs {expected}."
            )
        layer.set_weights(values)
        copied += len(values)
    return copied, include_top


def _resolve(value, found, what, source):
    if value is None:
        if found is None:
            raise ValueError(f"Cannot tell the {what} of {source}; pass --{what}.")
        return found
    if found is not None and value != found:
        raise ValueError(f"--{what}={value} but {source} holds {found}.")
    return value


def _inspect_source(input_path):
    """(kind, prefix or file, model name, classes) of a TF1 checkpoint or Keras weights file."""
    if is_keras_weights_file(input_path):
        return ("keras", input_path, *inspect_keras_file(input_path))
    prefix = checkpoints.resolve_checkpoint(input_path, "--input_path")
    if not tf1_checkpoint.is_tf1_checkpoint(prefix):
        raise ValueError(
            f"{prefix} is not a TF1 EfficientNet checkpoint (if it was written by this "
            "project, use it directly)."
        )
    ckpt_info = tf1_checkpoint.checkpoint_info(prefix)
    return "tf1", prefix, ckpt_info.model_name, ckpt_info.num_classes


def convert(
    input_path,
    output_dir,
    model_name=None,
    num_label_classes=None,
    task_name="imagenet",
    use_ema=True,
    input_image_size=None,
):
    """Converts a TF1 checkpoint or Keras weights file into a model_dir.

    Args:
      input_path: TF1 checkpoint prefix or directory, or a Keras `.h5` file.
      output_dir: model_dir to write; must not hold a checkpoint yet.
      model_name: EfficientNet name; default: read from the source.
      num_label_classes: classes; default: the source's classifier. Another
        value than the source's is an error (fine-tune instead by passing the
        converted model_dir as --init_model_path, which skips the head).
      task_name: task the weights are for (sets normalization and, for 32x32
        tasks, the image size and small-image network).
      use_ema: TF1 only: take the `/ExponentialMovingAverage` shadows.
      input_image_size: resolution recorded for the model; default from the
        task or the model table.

    Returns:
      A summary dict: source, kind, model_name, num_classes, image_size,
      weights ("ema", "raw" or "keras"), num_variables, head_loaded,
      checkpoint.

    Raises:
      FileExistsError: `output_dir` already holds a checkpoint.
      ValueError: the source does not fit, or contradicts the arguments.
    """
    if tf.io.gfile.isdir(output_dir) and tf.train.latest_checkpoint(output_dir):
        raise FileExistsError(f"{output_dir} already holds a checkpoint; choose a new directory.")
    info = task_info.get_task_info(task_name)
    kind, prefix, found_name, found_classes = _inspect_source(input_path)
    model_name = _resolve(model_name, found_name, "model_name", input_path)
    if kind == "keras" and found_classes is None:
        # A notop file: the head stays freshly initialized.
        num_label_classes = num_label_classes or info.num_classes
    else:
        num_label_classes = _resolve(num_label_classes, found_classes, "num_label_classes", prefix)
    image_size = (
        input_image_size
        or info.image_size
        or efficientnet_builder.efficientnet_params(model_name)[2]
    )
    config = train_lib.TrainConfig(
        model_dir=output_dir,
        label_data_dir="",
        task_name=task_name,
        model_name=model_name,
        num_label_classes=int(num_label_classes),
        input_image_size=int(image_size),
        small_image_model=info.small_image_model,
        random_flip=info.random_flip,
        eval_subsets=info.eval_subsets,
        use_ema=use_ema,
    )
    state = train_lib.TrainState(config, tf.distribute.get_strategy())
    if kind == "tf1":
        report = tf1_checkpoint.load_tf1_checkpoint(
            state.model, prefix, use_ema=use_ema, what="--input_path"
        )
        num_variables, head_loaded = report.num_loaded, True
        weights = "ema" if report.num_raw == 0 else ("raw" if report.num_ema == 0 else "mixed")
        logging.info("%s", report.summary())
    else:
        num_variables, head_loaded = load_keras_weights(state.model, input_path, model_name)
        weights = "keras"
    # Both copies get the converted weights: evaluation reads ema_model, and a
    # run resuming from this directory starts its average from them.
    for ema_var, var in zip(state.ema_model.weights, state.model.weights, strict=True):
        ema_var.assign(var)
    flags_dict = dataclasses.asdict(config)
    flags_dict.update(converted_from=os.path.abspath(prefix), converted_weights=weights)
    train_lib.write_run_files(config, state, flags_dict)
    checkpoint = state.save()
    return {
        "source": prefix,
        "kind": kind,
        "model_name": model_name,
        "num_classes": int(num_label_classes),
        "image_size": int(image_size),
        "weights": weights,
        "num_variables": int(num_variables),
        "head_loaded": bool(head_loaded),
        "checkpoint": checkpoint,
    }


def format_summary(summary):
    """Human-readable lines for a `convert` summary."""
    source = {
        "ema": "EMA (/ExponentialMovingAverage shadows)",
        "raw": "raw (non-averaged) variables",
        "mixed": "EMA where present, raw otherwise",
        "keras": "Keras weights file (no moving averages)",
    }[summary["weights"]]
    lines = [
        f"Converted {summary['kind']} weights {summary['source']}",
        f"  model:      {summary['model_name']}, {summary['num_classes']} classes, "
        f"image size {summary['image_size']}",
        f"  variables:  {summary['num_variables']} loaded, {source}",
        f"  checkpoint: {summary['checkpoint']}",
    ]
    if not summary["head_loaded"]:
        lines.append(
            "  WARNING: the source has no classifier; the head is freshly initialized "
            "(use the output only as --init_model_path)."
        )
    return "\n".join(lines)


def define_flags(flag_values=flags.FLAGS):
    """Defines this script's flags (only when run as a script, so tests can import it)."""
    flags.DEFINE_string(
        "input_path",
        None,
        "TF1 checkpoint prefix/directory or Keras .h5 file.",
        flag_values=flag_values,
    )
    flags.DEFINE_string("output_dir", None, "model_dir to create.", flag_values=flag_values)
    flags.DEFINE_string(
        "model_name",
        None,
        "EfficientNet name, e.g. efficientnet-b0; default: from the source.",
        flag_values=flag_values,
    )
    flags.DEFINE_integer(
        "num_label_classes",
        None,
        "Number of classes; default: the source's classifier.",
        flag_values=flag_values,
    )
    flags.DEFINE_bool(
        "use_ema",
        True,
        "TF1 checkpoints: read the /ExponentialMovingAverage shadows (what the published code "
        "evaluated); False reads the raw variables.",
        flag_values=flag_values,
    )
    flags.DEFINE_enum(
        "task_name",
        "imagenet",
        sorted(task_info.TASKS),
        "Task the weights belong to: its normalization is used by eval/predict/export.",
        flag_values=flag_values,
    )
    flags.DEFINE_integer(
        "input_image_size",
        None,
        "Resolution; default from the task or the model table.",
        flag_values=flag_values,
    )
    flags.mark_flags_as_required(["input_path", "output_dir"], flag_values=flag_values)


def main(argv, flag_values=flags.FLAGS):
    """Converts and prints the summary; `flag_values` must hold `define_flags`' flags."""
    del argv
    summary = convert(
        flag_values.input_path,
        flag_values.output_dir,
        model_name=flag_values.model_name,
        num_label_classes=flag_values.num_label_classes,
        task_name=flag_values.task_name,
        use_ema=flag_values.use_ema,
        input_image_size=flag_values.input_image_size,
    )
    print(format_summary(summary))
    # app.run exits with main's return value: return nothing, so success is status 0.


if __name__ == "__main__":
    define_flags()
    app.run(main)
