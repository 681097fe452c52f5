"""Throughput of our EfficientNet vs Keras' on identical work, training and inference.

Both models get the same random inputs and labels, the same batch size and the
same optimizer (RMSprop as in training). Ours runs as the training code does
(a `tf.function` custom train step) and predicts as `--mode=predict` does (the
batch norms folded into the convolutions, `bn_folding`); Keras' model runs
through `fit` and `predict`. With `--small_image_model` both use the 32x32
variant: stride 1 in the second and third stages (see
`efficientnet_builder.stage_table`), Keras' model built with the same strides.
Tracing and warm-up are excluded; the timed trials alternate between the two
models so that load from other processes hits both alike, and the median
trial is reported. The last output line is one JSON object with the settings,
the images/s and `train_vs_keras`, `infer_vs_keras` (ours / Keras).

Usage (from the repository root):

    .venv/bin/python bench/bench_model.py --image_size 224 --batch_size 16
    .venv/bin/python bench/bench_model.py --small_image_model --batch_size 128 \
        --width_coefficient 0.5 --depth_coefficient 0.5 --num_classes 10
"""

import argparse
import copy
import json
import os
import statistics
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from keras.src.applications import efficientnet as keras_efficientnet  # noqa: E402

import bn_folding  # noqa: E402
import efficientnet_builder  # noqa: E402

KERAS_MODELS = {
    f"efficientnet-b{i}": getattr(keras.applications, f"EfficientNetB{i}") for i in range(8)
}


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model_name", default="efficientnet-b0", choices=sorted(KERAS_MODELS))
    parser.add_argument(
        "--image_size", type=int, default=None, help="default: 32 small-image, else 224"
    )
    parser.add_argument("--small_image_model", action="store_true", help="the 32x32 variant")
    parser.add_argument("--width_coefficient", type=float, default=None, help="default: model's")
    parser.add_argument("--depth_coefficient", type=float, default=None, help="default: model's")
    parser.add_argument("--batch_size", type=int, default=16)
    parser.add_argument("--num_classes", type=int, default=1000)
    parser.add_argument("--steps", type=int, default=5, help="timed steps per trial")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps after tracing")
    parser.add_argument("--trials", type=int, default=3, help="alternating timed trials")
    parser.add_argument(
        "--mixed_bfloat16", action="store_true", help="use the mixed_bfloat16 policy"
    )
    return parser.parse_args(argv)


def optimizer():
    # Same optimizer settings as the training code (docs/method.md, "Training").
    return keras.optimizers.RMSprop(learning_rate=1e-3, rho=0.9, momentum=0.9, epsilon=1e-3)


def make_our_steps(model):
    """Returns compiled (train_step, infer_step) functions for our `model`."""
    opt = optimizer()
    opt.build(model.trainable_variables)
    inference_model = bn_folding.fold_batch_norms(model)

    @tf.function
    def train_step(images, labels):
        with tf.GradientTape() as tape:
            logits = tf.cast(model(images, training=True), tf.float32)
            loss = tf.reduce_mean(
                keras.losses.sparse_categorical_crossentropy(labels, logits, from_logits=True)
            )
        grads = tape.gradient(loss, model.trainable_variables)
        opt.apply_gradients(zip(grads, model.trainable_variables, strict=True))
        return loss

    @tf.function
    def infer_step(images):
        return tf.cast(inference_model(images, training=False), tf.float32)

    def train(images, labels, steps):
        for _ in range(steps):
            out = train_step(images, labels)
        return np.asarray(out)  # blocks until the computation has finished

    def infer(images, labels, steps):
        del labels
        for _ in range(steps):
            out = infer_step(images)
        return np.asarray(out)

    return train, infer


def make_keras_steps(model, batch):
    """(train, infer) running Keras' `fit` and `predict` over `steps` batches."""
    model.compile(
        optimizer=optimizer(),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )

    def repeat(x, steps):
        return tf.concat([x] * steps, 0) if steps > 1 else x

    def train(images, labels, steps):
        model.fit(
            repeat(images, steps), repeat(labels, steps), batch_size=batch, epochs=1, verbose=0
        )

    def infer(images, labels, steps):
        del labels
        model.predict(repeat(images, steps), batch_size=batch, verbose=0)

    return train, infer


def keras_model(args, size):
    """Keras' EfficientNet of `args`, with the small-image strides when asked."""
    width, depth, _, dropout = efficientnet_builder.efficientnet_params(args.model_name)
    blocks = copy.deepcopy(keras_efficientnet.DEFAULT_BLOCKS_ARGS)
    # The strides of our stage table (one source of truth for the small variant).
    stages = efficientnet_builder.stage_table(1.0, 1.0, args.small_image_model)
    for block, stage in zip(blocks, stages, strict=True):
        block["strides"] = stage.strides
    return keras_efficientnet.EfficientNet(
        args.width_coefficient or width,
        args.depth_coefficient or depth,
        size,
        dropout_rate=dropout,
        blocks_args=blocks,
        weights=None,
        input_shape=(size, size, 3),
        classes=args.num_classes,
        classifier_activation=None,
        name="keras_efficientnet",
    )


def our_model(args):
    overrides = {
        k: v
        for k, v in (
            ("width_coefficient", args.width_coefficient),
            ("depth_coefficient", args.depth_coefficient),
        )
        if v is not None
    }
    return efficientnet_builder.build_model(
        args.model_name, args.num_classes, args.small_image_model, overrides
    )


def main(argv=None):
    args = parse_args(argv)
    if args.mixed_bfloat16:
        keras.mixed_precision.set_global_policy("mixed_bfloat16")
    size = args.image_size or (32 if args.small_image_model else 224)
    batch = args.batch_size
    rng = np.random.default_rng(0)
    images = tf.constant(rng.uniform(0, 1, (batch, size, size, 3)).astype(np.float32))
    labels = tf.constant(rng.integers(0, args.num_classes, batch))
    ours = our_model(args)
    ours(images[:1], training=False)
    models = {"ours": ours, "keras": keras_model(args, size)}
    params = {name: int(m.count_params()) for name, m in models.items()}
    print(
        f"{args.model_name} {size}x{size} small_image_model={args.small_image_model} "
        f"width={args.width_coefficient} depth={args.depth_coefficient} batch {batch}, "
        f"{args.steps} steps x {args.trials} trials, params {params}, "
        f"policy {keras.mixed_precision.global_policy().name}, "
        f"TF {tf.__version__}, Keras {keras.__version__}"
    )
    steps = {"ours": make_our_steps(ours), "keras": make_keras_steps(models["keras"], batch)}
    for name, (train, infer) in steps.items():
        start = time.perf_counter()
        train(images, labels, 1 + args.warmup)
        infer(images, labels, 1 + args.warmup)
        print(f"  {name}: trace + warm-up {time.perf_counter() - start:.1f}s")

    seconds = {(name, kind): [] for name in models for kind in ("train", "infer")}
    for _ in range(args.trials):
        for name, fns in steps.items():
            for kind, fn in zip(("train", "infer"), fns, strict=True):
                start = time.perf_counter()
                fn(images, labels, args.steps)
                seconds[name, kind].append(time.perf_counter() - start)

    result = {
        "bench": "bench_model",
        "model_name": args.model_name,
        "image_size": size,
        "small_image_model": args.small_image_model,
        "width_coefficient": args.width_coefficient,
        "depth_coefficient": args.depth_coefficient,
        "num_classes": args.num_classes,
        "batch_size": batch,
        "steps": args.steps,
        "trials": args.trials,
        "policy": keras.mixed_precision.global_policy().name,
    }
    for kind in ("train", "infer"):
        rate = {
            name: batch * args.steps / statistics.median(seconds[name, kind]) for name in models
        }
        ratio = rate["ours"] / rate["keras"]
        print(
            f"{kind:5s} images/s: ours {rate['ours']:8.1f}  keras {rate['keras']:8.1f}  "
            f"ratio ours/keras {ratio:.3f}"
        )
        result[f"{kind}_images_per_s"] = {k: round(v, 2) for k, v in rate.items()}
        result[f"{kind}_vs_keras"] = round(ratio, 4)
    print(json.dumps(result, sort_keys=True))
    return result


if __name__ == "__main__":
    main()
