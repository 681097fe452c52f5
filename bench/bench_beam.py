"""Images/s of beam_pseudo_label.py (local runner, 2 workers) vs predict.sh + filter_unlabel.sh.

Both run in the same process's lifetime on the same generated data and the
same tiny teacher (a 0.1x0.1 EfficientNet on 32x32 images, trained a few
steps): the scripts with NUM_WORKERS=2 (predict, filter pass 1, pass 2),
Beam with --direct_num_workers=2 --direct_running_mode=multi_processing.
Each side's time is the wall time of its commands, start-up included.
Goal: Beam >= 0.7x the scripts. The last line printed is one JSON object.

Usage (from the repository root):

    .venv/bin/python bench/bench_beam.py                 # a few minutes on 2 cores
    .venv/bin/python bench/bench_beam.py --num_images 400
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "tests"))

import numpy as np  # noqa: E402
from conftest import (  # noqa: E402
    NUM_CLASSES,
    tiny_config,
    write_labeled_subset,
    write_unlabeled,
)

import atomic_files  # noqa: E402
import train_lib  # noqa: E402

SVHN = os.path.join(ROOT, "local_scripts", "svhn")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--num_images", type=int, default=2000)
    parser.add_argument("--num_shards", type=int, default=4)
    parser.add_argument("--num_image", type=int, default=150, help="images kept per class")
    parser.add_argument("--batch_size", type=int, default=64)
    return parser.parse_args(argv)


def make_teacher(work_dir):
    """A tiny labeled set and a teacher trained 10 steps on it: (data_dir, model_dir)."""
    data_dir = os.path.join(work_dir, "data")
    rng = np.random.default_rng(0)
    counts = {"train": 200, "dev": 23, "test": 30}
    for subset, n in counts.items():
        write_labeled_subset(data_dir, subset, n, 2, rng)
    atomic_files.write_json(os.path.join(data_dir, "dataset_info.json"), counts)
    model_dir = os.path.join(work_dir, "teacher")
    config = tiny_config(model_dir, data_dir, train_steps=10, steps_per_eval=10)
    strategy = train_lib.create_strategy()
    state = train_lib.TrainState(config, strategy)
    train_lib.write_run_files(config, state)
    state.restore_or_initialize()
    train_lib.train(config, strategy, state=state)
    return data_dir, model_dir


def timed(commands, env=None):
    """Runs each command in turn (all must succeed); returns the total wall seconds."""
    full_env = dict(os.environ, PYTHON=sys.executable, **(env or {}))
    start = time.perf_counter()
    for command in commands:
        result = subprocess.run(command, env=full_env, capture_output=True, text=True, cwd=ROOT)
        if result.returncode:
            sys.exit(f"{' '.join(command)} failed:\n{result.stderr[-3000:]}")
    return time.perf_counter() - start


def main(argv=None):
    args = parse_args(argv)
    work_dir = tempfile.mkdtemp(prefix="bench_beam_")
    data_dir, teacher = make_teacher(work_dir)
    unl = os.path.join(work_dir, "unl")
    write_unlabeled(unl, args.num_images, args.num_shards, np.random.default_rng(1))
    unlabeled_dir = os.path.join(unl, "unlabeled")
    env = dict(
        TASK_NAME="mnist",
        DATA_DIR=data_dir,
        UNLABEL_DIR=unlabeled_dir,
        TEACHER_CKPT=teacher,
        DATA_ROOT=os.path.join(work_dir, "script"),
        NUM_SHARDS=str(args.num_shards),
        NUM_WORKERS="2",
        BATCH_SIZE=str(args.batch_size),
        NUM_IMAGE=str(args.num_image),
        MIN_THRESHOLD="0.0",
    )
    script_seconds = timed(
        [
            ["bash", os.path.join(SVHN, "predict.sh")],
            ["bash", os.path.join(SVHN, "filter_unlabel.sh"), "1"],
            ["bash", os.path.join(SVHN, "filter_unlabel.sh"), "0"],
        ],
        env,
    )
    beam_command = [
        sys.executable,
        os.path.join(ROOT, "beam_pseudo_label.py"),
        f"--input_dir={unlabeled_dir}",
        "--file_prefix=extra",
        f"--predict_ckpt_path={teacher}",
        f"--output_dir={os.path.join(work_dir, 'beam')}",
        f"--num_image={args.num_image}",
        "--min_threshold=0.0",
        f"--num_label_classes={NUM_CLASSES}",
        "--task_name=mnist",
        f"--batch_size={args.batch_size}",
        f"--num_output_shards={args.num_shards}",
        "--direct_num_workers=2",
        "--direct_running_mode=multi_processing",
    ]
    beam_seconds = timed([beam_command])
    figures = {
        "num_images": args.num_images,
        "num_shards": args.num_shards,
        "script_seconds": round(script_seconds, 2),
        "beam_seconds": round(beam_seconds, 2),
        "script_images_per_s": round(args.num_images / script_seconds, 1),
        "beam_images_per_s": round(args.num_images / beam_seconds, 1),
        "ratio": round(script_seconds / beam_seconds, 3),
    }
    print(f"scripts (NUM_WORKERS=2): {figures['script_images_per_s']} images/s")
    print(f"beam (2 local workers):  {figures['beam_images_per_s']} images/s")
    print(f"ratio beam/scripts: {figures['ratio']} (goal >= 0.7)")
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
