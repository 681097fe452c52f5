"""Throughput of our EfficientNet vs keras.applications' on identical work.

Both models get the same random inputs and labels, the same batch size and the
same optimizer (RMSprop as in training), and run as `tf.function`-compiled
custom train steps (GradientTape + apply_gradients) and inference calls.
Tracing and warm-up steps are excluded; the timed trials alternate between the
two models so that load from other processes hits both alike, and the median
trial is reported.

Usage (from the repository root):

    .venv/bin/python bench/bench_model.py --image_size 224 --batch_size 16
"""

import argparse
import os
import statistics
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import efficientnet_builder  # noqa: E402

KERAS_MODELS = {
    f"efficientnet-b{i}": getattr(keras.applications, f"EfficientNetB{i}") for i in range(8)
}


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model_name", default="efficientnet-b0", choices=sorted(KERAS_MODELS))
    parser.add_argument("--image_size", type=int, default=224)
    parser.add_argument("--batch_size", type=int, default=16)
    parser.add_argument("--num_classes", type=int, default=1000)
    parser.add_argument("--steps", type=int, default=5, help="timed steps per trial")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps after tracing")
    parser.add_argument("--trials", type=int, default=3, help="alternating timed trials")
    parser.add_argument(
        "--mixed_bfloat16", action="store_true", help="use the mixed_bfloat16 policy"
    )
    return parser.parse_args(argv)


def make_steps(model):
    """Returns compiled (train_step, infer_step) functions for `model`."""
    # Same optimizer settings as the training code (docs/method.md, "Training").
    optimizer = keras.optimizers.RMSprop(learning_rate=1e-3, rho=0.9, momentum=0.9, epsilon=1e-3)
    optimizer.build(model.trainable_variables)

    @tf.function
    def train_step(images, labels):
        with tf.GradientTape() as tape:
            # Keras' classifier is bfloat16 under the mixed policy, ours float32.
            logits = tf.cast(model(images, training=True), tf.float32)
            loss = tf.reduce_mean(
                keras.losses.sparse_categorical_crossentropy(labels, logits, from_logits=True)
            )
        grads = tape.gradient(loss, model.trainable_variables)
        optimizer.apply_gradients(zip(grads, model.trainable_variables, strict=True))
        return loss

    @tf.function
    def infer_step(images):
        return tf.cast(model(images, training=False), tf.float32)

    return train_step, infer_step


def time_steps(fn, args, steps):
    """Seconds for `steps` calls of `fn`, waiting for the last result."""
    start = time.perf_counter()
    for _ in range(steps):
        out = fn(*args)
    np.asarray(out)  # blocks until the computation has finished
    return time.perf_counter() - start


def main(argv=None):
    args = parse_args(argv)
    if args.mixed_bfloat16:
        keras.mixed_precision.set_global_policy("mixed_bfloat16")
    size, batch = args.image_size, args.batch_size
    rng = np.random.default_rng(0)
    images = tf.constant(rng.uniform(0, 1, (batch, size, size, 3)).astype(np.float32))
    labels = tf.constant(rng.integers(0, args.num_classes, batch))

    models = {
        "ours": efficientnet_builder.build_model(args.model_name, args.num_classes),
        "keras": KERAS_MODELS[args.model_name](
            weights=None,
            input_shape=(size, size, 3),
            classes=args.num_classes,
            classifier_activation=None,
        ),
    }
    print(
        f"{args.model_name} {size}x{size} batch {batch}, {args.steps} steps x "
        f"{args.trials} trials, policy {keras.mixed_precision.global_policy().name}, "
        f"TF {tf.__version__}, Keras {keras.__version__}"
    )
    steps = {}
    for name, model in models.items():
        train_step, infer_step = make_steps(model)
        start = time.perf_counter()
        time_steps(train_step, (images, labels), 1 + args.warmup)
        time_steps(infer_step, (images,), 1 + args.warmup)
        print(f"  {name}: trace + warm-up {time.perf_counter() - start:.1f}s")
        steps[name] = (train_step, infer_step)

    seconds = {(name, kind): [] for name in models for kind in ("train", "infer")}
    for _ in range(args.trials):
        for name, (train_step, infer_step) in steps.items():
            seconds[name, "train"].append(time_steps(train_step, (images, labels), args.steps))
            seconds[name, "infer"].append(time_steps(infer_step, (images,), args.steps))

    for kind in ("train", "infer"):
        rate = {
            name: batch * args.steps / statistics.median(seconds[name, kind]) for name in models
        }
        print(
            f"{kind:5s} images/s: ours {rate['ours']:8.1f}  keras {rate['keras']:8.1f}  "
            f"ratio ours/keras {rate['ours'] / rate['keras']:.3f}"
        )


if __name__ == "__main__":
    main()
