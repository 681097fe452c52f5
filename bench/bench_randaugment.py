"""Throughput of our RandAugment vs keras.layers.RandAugment in a tf.data pipeline.

Both pipelines are identical except for the map function: in-memory uint8
images -> per-image augmentation (parallel map) -> float32 -> batch ->
prefetch. Keras is configured as closely as it allows: the same number of ops
per image, value_range (0, 255), nearest interpolation and
factor = magnitude / 10 (clipped to Keras' maximum of 1.0, so magnitude 27 is
compared against Keras' strongest setting). Keras applies its layer to each
image separately here, as our pipeline does; `--keras_batched` also times it on
whole batches, where Keras draws one op choice per batch rather than per image.

Example:
  .venv/bin/python bench/bench_randaugment.py --sizes=224,32 --magnitudes=10,27
"""

import argparse
import os
import sys
import time

import numpy as np
import tensorflow as tf

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import keras  # noqa: E402

import randaugment  # noqa: E402


def _parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="224,32", help="comma-separated image sizes")
    parser.add_argument("--magnitudes", default="10,27", help="comma-separated magnitudes")
    parser.add_argument("--num_layers", type=int, default=2, help="ops per image")
    parser.add_argument(
        "--num_images",
        type=int,
        default=512,
        help="images timed per pipeline at 224x224; scaled by (224/size)^2 (capped at 8x) "
        "for smaller sizes so that each measurement takes similar time",
    )
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--num_source_images", type=int, default=64, help="distinct images")
    parser.add_argument(
        "--keras_batched", action="store_true", help="also time Keras on whole batches"
    )
    return parser.parse_args(argv)


def _source_images(size, count):
    rs = np.random.RandomState(0)
    return rs.randint(0, 256, size=(count, size, size, 3)).astype(np.uint8)


def _time_pipeline(images, num_images, batch_size, per_image_fn=None, batch_fn=None):
    """Images per second of the pipeline, excluding the first (tracing) batch."""
    ds = tf.data.Dataset.from_tensor_slices(images).repeat()
    if per_image_fn is not None:
        ds = ds.map(per_image_fn, num_parallel_calls=tf.data.AUTOTUNE)
    ds = ds.map(lambda x: tf.cast(x, tf.float32), num_parallel_calls=tf.data.AUTOTUNE)
    ds = ds.batch(batch_size)
    if batch_fn is not None:
        ds = ds.map(batch_fn, num_parallel_calls=tf.data.AUTOTUNE)
    ds = ds.prefetch(tf.data.AUTOTUNE)
    num_batches = max(1, num_images // batch_size)
    iterator = iter(ds)
    next(iterator)  # warm-up: tracing and filling the pipeline
    start = time.perf_counter()
    for _ in range(num_batches):
        batch = next(iterator)
    batch.numpy()
    return num_batches * batch_size / (time.perf_counter() - start)


def main(argv=None):
    args = _parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",")]
    magnitudes = [float(m) for m in args.magnitudes.split(",")]
    print(
        f"TF {tf.__version__}, Keras {keras.__version__}, {os.cpu_count()} CPUs, "
        f"{args.num_layers} ops per image, batch {args.batch_size}"
    )
    header = f"{'size':>5} {'mag':>5} {'keras factor':>12} {'no-aug':>9} {'ours':>9} {'keras':>9}"
    header += f" {'ours/keras':>10}"
    if args.keras_batched:
        header += f" {'keras-batch':>11}"
    print(header + "   (images/s)")
    for size in sizes:
        images = _source_images(size, args.num_source_images)
        num_images = int(args.num_images * min(8.0, (224 / size) ** 2))
        baseline = _time_pipeline(images, num_images, args.batch_size)
        for magnitude in magnitudes:
            factor = min(magnitude / randaugment.MAX_LEVEL, 1.0)
            # The constants preprocessing.py uses: ImageNet defaults for large
            # images, size // 8 on the small-image path.
            consts = dict(cutout_const=40, translate_const=100)
            if size < 100:
                consts = dict(cutout_const=size // 8, translate_const=size // 8)

            def ours(image, magnitude=magnitude, consts=consts):
                return randaugment.distort_image_with_randaugment(
                    image, args.num_layers, magnitude, **consts
                )

            layer = keras.layers.RandAugment(
                value_range=(0, 255),
                num_ops=args.num_layers,
                factor=factor,
                interpolation="nearest",
            )

            def keras_fn(image, layer=layer):
                return layer(tf.cast(image, tf.float32))

            ours_rate = _time_pipeline(images, num_images, args.batch_size, per_image_fn=ours)
            keras_rate = _time_pipeline(images, num_images, args.batch_size, per_image_fn=keras_fn)
            line = (
                f"{size:>5} {magnitude:>5g} {factor:>12.2f} {baseline:>9.0f} "
                f"{ours_rate:>9.0f} {keras_rate:>9.0f} {ours_rate / keras_rate:>10.2f}"
            )
            if args.keras_batched:
                batched = _time_pipeline(images, num_images, args.batch_size, batch_fn=layer)
                line += f" {batched:>11.0f}"
            print(line, flush=True)


if __name__ == "__main__":
    main()
