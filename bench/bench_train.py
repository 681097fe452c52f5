"""Training throughput end to end: `main.py --mode=train` vs Keras' `fit`, 32x32.

Both train the small-image EfficientNet (stride 1 in stages 2 and 3, as for
SVHN and the MNIST demo) at the same width and depth, batch size and
optimizer (RMSProp, momentum 0.9) on the same images, read and augmented by
the same tf.data pipeline (`data_input.make_train_dataset`: RandAugment v1 on
the CPU, Cutout, pad-and-crop). Ours is the real entry point, started as a
subprocess; its rate is the one it logs between its progress lines (start-up,
tracing and the first `--log_step_count_steps` steps excluded). Keras' is
`keras.applications`' EfficientNet with the same strides, compiled and
trained with `fit` on that pipeline; its rate is timed by a callback over
the same steps (the first log interval excluded). The trials alternate, and
the median of each is reported. The last line is one JSON object.

Usage (from the repository root):

    .venv/bin/python bench/bench_train.py --width_coefficient 0.25 --depth_coefficient 0.25
"""

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import bench_model  # noqa: E402
import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import atomic_files  # noqa: E402
import data_input  # noqa: E402
import file_names  # noqa: E402
import tfrecords  # noqa: E402

NUM_CLASSES = 10
RATE_LINE = re.compile(r"step (\d+)/\d+: .* ([\d.]+) images/s")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--width_coefficient", type=float, default=0.25)
    parser.add_argument("--depth_coefficient", type=float, default=0.25)
    parser.add_argument("--batch_size", type=int, default=64)
    parser.add_argument("--steps", type=int, default=300, help="training steps per trial")
    parser.add_argument("--log_steps", type=int, default=50, help="steps per timed interval")
    parser.add_argument("--trials", type=int, default=2, help="alternating trials of each")
    parser.add_argument("--num_images", type=int, default=1000, help="generated 32x32 images")
    parser.add_argument("--randaug_mag", type=int, default=10)
    parser.add_argument("--work_dir", default=None, help="default: a temporary folder")
    return parser.parse_args(argv)


def write_images(data_dir, num_images):
    """`num_images` 32x32 images of NUM_CLASSES classes as labeled train-* records."""
    rng = np.random.default_rng(0)
    num_files = 4
    per_file = -(-num_images // num_files)
    for shard in range(num_files):
        path = file_names.labeled_shard_path(data_dir, "train", shard, num_files)
        with tf.io.TFRecordWriter(path) as writer:
            for _ in range(per_file):
                label = int(rng.integers(NUM_CLASSES))
                image = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
                image[:, : 3 * (label + 1)] //= 4
                jpeg = tf.io.encode_jpeg(image, quality=95).numpy()
                writer.write(tfrecords.labeled_example(jpeg, label).SerializeToString())
    atomic_files.write_json(
        os.path.join(data_dir, "dataset_info.json"), {"train": num_files * per_file}
    )
    return num_files * per_file


def run_ours(args, data_dir, model_dir, num_images, precision="float32"):
    """Median images/s that `main.py --mode=train` logs after its first interval.

    `precision` is its `--mixed_precision` (bench_precision.py compares them).
    """
    command = [
        sys.executable,
        os.path.join(ROOT, "main.py"),
        "--use_tpu=False",
        f"--mixed_precision={precision}",
        "--task_name=mnist",
        "--mode=train",
        "--model_name=efficientnet-b0",
        f"--width_coefficient={args.width_coefficient}",
        f"--depth_coefficient={args.depth_coefficient}",
        f"--train_batch_size={args.batch_size}",
        f"--train_steps={args.steps}",
        f"--iterations_per_loop={args.log_steps}",
        f"--log_step_count_steps={args.log_steps}",
        f"--save_checkpoints_steps={args.steps}",
        f"--num_train_images={num_images}",
        "--augment_name=v1",
        f"--randaug_mag={args.randaug_mag}",
        f"--label_data_dir={data_dir}",
        f"--model_dir={model_dir}",
        "--seed=0",
    ]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode:
        sys.exit(f"bench_train: main.py failed ({done.returncode}):\n{done.stderr[-3000:]}")
    rates = [
        float(m.group(2))
        for m in RATE_LINE.finditer(done.stderr)
        if int(m.group(1)) > args.log_steps
    ]
    if not rates:
        sys.exit("bench_train: main.py logged no rate after its first interval: raise --steps.")
    return statistics.median(rates)


def keras_small_image_model(width, depth):
    """keras.applications' EfficientNet with our small-image strides (bench_model's)."""
    spec = argparse.Namespace(
        model_name="efficientnet-b0",
        width_coefficient=width,
        depth_coefficient=depth,
        small_image_model=True,
        num_classes=NUM_CLASSES,
    )
    return bench_model.keras_model(spec, 32)


class IntervalTimer(keras.callbacks.Callback):
    """Images/s of each `log_steps` interval of batches."""

    def __init__(self, log_steps, batch_size):
        super().__init__()
        self.log_steps, self.batch_size, self.rates = log_steps, batch_size, []
        self._start = None

    def on_train_batch_end(self, batch, logs=None):
        if (batch + 1) % self.log_steps == 0:
            now = time.perf_counter()
            if self._start is not None:
                self.rates.append(self.log_steps * self.batch_size / (now - self._start))
            self._start = now


def run_keras(args, data_dir):
    """Median images/s of Keras' `fit` on the same pipeline, first interval excluded."""
    dataset = data_input.make_train_dataset(
        None,
        label_files=data_input.labeled_files(data_dir, "train"),
        per_replica_batch_size=args.batch_size,
        image_size=32,
        small_image_model=True,
        num_classes=NUM_CLASSES,
        augment_name="v1",
        randaug_mag=args.randaug_mag,
        random_flip=False,
        seed=0,
    ).map(lambda batch: (batch["images"], batch["labels"]))
    model = keras_small_image_model(args.width_coefficient, args.depth_coefficient)
    model.compile(
        optimizer=bench_model.optimizer(),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    timer = IntervalTimer(args.log_steps, args.batch_size)
    model.fit(dataset, steps_per_epoch=args.steps, epochs=1, verbose=0, callbacks=[timer])
    return statistics.median(timer.rates)


def main(argv=None):
    args = parse_args(argv)
    work_dir = args.work_dir or tempfile.mkdtemp(prefix="bench_train_")
    data_dir = os.path.join(work_dir, "data")
    os.makedirs(data_dir, exist_ok=True)
    num_images = write_images(data_dir, args.num_images)
    print(
        f"32x32 small-image EfficientNet-B0, width {args.width_coefficient}, depth "
        f"{args.depth_coefficient}, batch {args.batch_size}, RandAugment v1 magnitude "
        f"{args.randaug_mag}, {args.steps} steps x {args.trials} trials, TF {tf.__version__}, "
        f"Keras {keras.__version__}, CPU threads {os.cpu_count()}"
    )
    ours, theirs = [], []
    for trial in range(args.trials):
        ours.append(run_ours(args, data_dir, os.path.join(work_dir, f"ours{trial}"), num_images))
        theirs.append(run_keras(args, data_dir))
        print(
            f"trial {trial}: main.py {ours[-1]:.1f} images/s, Keras fit {theirs[-1]:.1f} images/s"
        )
    result = {
        "bench": "bench_train",
        "image_size": 32,
        "small_image_model": True,
        "width_coefficient": args.width_coefficient,
        "depth_coefficient": args.depth_coefficient,
        "num_classes": NUM_CLASSES,
        "batch_size": args.batch_size,
        "randaug_mag": args.randaug_mag,
        "main_py_images_per_s": round(statistics.median(ours), 1),
        "keras_fit_images_per_s": round(statistics.median(theirs), 1),
    }
    result["train_vs_keras"] = round(
        result["main_py_images_per_s"] / result["keras_fit_images_per_s"], 3
    )
    print(json.dumps(result))


if __name__ == "__main__":
    main()
