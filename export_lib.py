r"""Exports a trained model for serving: a SavedModel and a `.keras` file.

`python main.py --mode=export --model_dir=DIR --export_dir=OUT` writes

  OUT/saved_model.pb, OUT/variables/   the SavedModel, with two signatures:
      serving_default  images: float32 [N, H, W, 3], raw 0..255 RGB pixels at
                       the model's resolution (H = W = image_size).
      serving_bytes    image_bytes: string [N], encoded JPEG/PNG images; the
                       eval preprocessing (center crop and bicubic resize, or
                       the image as is for 32x32 tasks) is applied inside.
      Both normalize with the task's mean/std and return
      probabilities: float32 [N, num_classes] and classes: int64 [N].
  OUT/model.keras                      the bare network (normalized images ->
                                       logits); loading it needs
                                       `import efficientnet_model` first, which
                                       registers the custom layers.
  OUT/export_info.json                 task, image size, normalization,
                                       classes and the checkpoint exported.

The network is built in float32 whatever the precision flags say, and gets the
checkpoint's moving-average (EMA) weights, as evaluation does.
In the SavedModel the batch norms are folded into the convolutions
(`bn_folding`: same outputs, faster); `model.keras` holds the trained layers.
"""

import os

import keras
import tensorflow as tf
from absl import logging

import atomic_files
import preprocessing
import train_lib

SERVING_DEFAULT = tf.saved_model.DEFAULT_SERVING_SIGNATURE_DEF_KEY
SERVING_BYTES = "serving_bytes"
KERAS_FILE = "model.keras"
EXPORT_INFO_FILE = "export_info.json"


class ServingFunctions:
    """The network plus its input pipeline, as the two serving functions.

    Args:
      model: Keras network mapping normalized images to logits.
      image_size: input resolution of the network.
      small_image_model: whether the task uses the 32x32 eval path (the
        decoded image is used as is instead of center-cropped).
      mean_rgb: per-channel mean of 0..255 pixels.
      stddev_rgb: per-channel standard deviation of 0..255 pixels.
    """

    def __init__(self, model, image_size, small_image_model, mean_rgb, stddev_rgb):
        self.model = model
        self.image_size = int(image_size)
        self.small_image_model = bool(small_image_model)
        self.mean_rgb = tuple(float(v) for v in mean_rgb)
        self.stddev_rgb = tuple(float(v) for v in stddev_rgb)

    def _outputs(self, images):
        normalized = preprocessing.normalize_image(images, self.mean_rgb, self.stddev_rgb)
        logits = tf.cast(self.model(normalized, training=False), tf.float32)
        return {
            "probabilities": tf.nn.softmax(logits, axis=-1),
            "classes": tf.argmax(logits, axis=-1, output_type=tf.int64),
        }

    def serve_images(self, images):
        """float32 [N, size, size, 3] raw pixels -> {"probabilities", "classes"}."""
        return self._outputs(images)

    def serve_bytes(self, image_bytes):
        """string [N] encoded JPEG/PNG -> {"probabilities", "classes"}."""
        size = self.image_size
        images = tf.map_fn(
            lambda b: preprocessing.preprocess_image(
                b, is_training=False, image_size=size, small_image=self.small_image_model
            ),
            image_bytes,
            fn_output_signature=tf.TensorSpec([size, size, 3], tf.float32),
        )
        return self._outputs(images)

    def write_saved_model(self, export_dir):
        """Writes the SavedModel with the `serving_default` and `serving_bytes` signatures."""
        size = self.image_size
        # Keras' ExportArchive, unlike a plain tf.Module holding the model,
        # writes variables that TF1-style loaders (TF Serving,
        # saved_model_cli) can restore, not only tf.saved_model.load.
        archive = keras.export.ExportArchive()
        archive.track(self.model)
        archive.add_endpoint(
            SERVING_DEFAULT,
            self.serve_images,
            input_signature=[tf.TensorSpec([None, size, size, 3], tf.float32, name="images")],
        )
        archive.add_endpoint(
            SERVING_BYTES,
            self.serve_bytes,
            input_signature=[tf.TensorSpec([None], tf.string, name="image_bytes")],
        )
        archive.write_out(export_dir, verbose=False)


class _Float32Policy:
    """Builds the exported network in float32 and restores the caller's policy after."""

    def __enter__(self):
        self._saved = keras.mixed_precision.global_policy()
        keras.mixed_precision.set_global_policy("float32")

    def __exit__(self, *exc):
        keras.mixed_precision.set_global_policy(self._saved)


def export(config, export_dir):
    """Writes the SavedModel, `model.keras` and `export_info.json` of `config.model_dir`.

    Args:
      config: a `train_lib.TrainConfig`; model_dir, task_name, use_ema and (when
        the model_dir has no model_params.txt) the model flags are used.
      export_dir: output directory; created if needed.

    Returns:
      The export info dict written to export_info.json.

    Raises:
      ValueError: `export_dir` is empty.
    """
    if not export_dir:
        raise ValueError("--export_dir is required for --mode=export.")
    # The network, its size and normalization come from the model_params.txt in
    # the model_dir (else from the flags, e.g. for an unpacked TF1 checkpoint);
    # built in float32 whatever the training's precision.
    with _Float32Policy():
        loaded = train_lib.load_model_dir(config)
    model, description, prefix = loaded.model, loaded.description, loaded.prefix
    task_name = description["task_name"]
    # The SavedModel serves the network with its batch norms folded (faster, same
    # outputs); model.keras keeps the trained layers, loadable like any Keras model.
    with _Float32Policy():
        serving_model = loaded.inference_model
    serving = ServingFunctions(
        serving_model,
        loaded.image_size,
        loaded.small_image_model,
        loaded.mean_rgb,
        loaded.stddev_rgb,
    )
    tf.io.gfile.makedirs(export_dir)
    serving.write_saved_model(export_dir)
    keras_path = os.path.join(export_dir, KERAS_FILE)
    model.save(keras_path)
    export_info = {
        "checkpoint": prefix,
        "weights": "ema" if config.use_ema else "raw",
        "task_name": task_name,
        "model_name": description["model_name"],
        "num_classes": int(description["num_classes"]),
        "image_size": int(description["image_size"]),
        "small_image_model": bool(description["small_image_model"]),
        "mean_rgb": list(loaded.mean_rgb),
        "stddev_rgb": list(loaded.stddev_rgb),
        "signatures": {
            SERVING_DEFAULT: "images: float32 [N, H, W, 3] raw 0..255 pixels",
            SERVING_BYTES: "image_bytes: string [N] encoded JPEG/PNG",
        },
        "outputs": {"probabilities": "float32 [N, num_classes]", "classes": "int64 [N]"},
        "keras_file": KERAS_FILE,
    }
    atomic_files.write_json(os.path.join(export_dir, EXPORT_INFO_FILE), export_info)
    logging.info(
        "Exported %s (%s weights of %s, task %s) to %s.",
        description["model_name"],
        export_info["weights"],
        prefix,
        task_name,
        export_dir,
    )
    return export_info
