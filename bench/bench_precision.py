"""Training speed by precision: `main.py --mode=train --mixed_precision=...` on this CPU.

Runs the real entry point (as bench_train.py does, same generated 32x32
images, RandAugment v1 in tf.data) once per precision and trial, the
precisions alternating, and reports each one's median images/s (the rate
main.py logs, its first interval excluded) and its ratio to float32. The
machine line records the CPU's vector instruction sets: bfloat16 is fast
only where oneDNN has bfloat16 kernels (AVX512_BF16 or AMX); float16 on a
CPU without AVX512_FP16 runs TensorFlow's generic kernels. GPUs are not
measured here. The last line is one JSON object.

Usage (from the repository root):

    .venv/bin/python bench/bench_precision.py --steps 100 --log_steps 25 --trials 1
"""

import argparse
import json
import os
import statistics
import sys
import tempfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(1, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from precision import PRECISIONS  # noqa: E402  (after the path to the repository)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--width_coefficient", type=float, default=0.25)
    parser.add_argument("--depth_coefficient", type=float, default=0.25)
    parser.add_argument("--batch_size", type=int, default=64)
    parser.add_argument("--steps", type=int, default=100, help="training steps per trial")
    parser.add_argument("--log_steps", type=int, default=25, help="steps per timed interval")
    parser.add_argument("--trials", type=int, default=1, help="alternating trials of each")
    parser.add_argument("--num_images", type=int, default=1000, help="generated 32x32 images")
    parser.add_argument("--randaug_mag", type=int, default=10)
    parser.add_argument(
        "--precisions", default=",".join(PRECISIONS), help="comma-separated, of " + str(PRECISIONS)
    )
    parser.add_argument("--work_dir", default=None, help="default: a temporary folder")
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    precisions = [p for p in args.precisions.split(",") if p]
    unknown = sorted(set(precisions) - set(PRECISIONS))
    if unknown or not precisions:
        sys.exit(f"bench_precision: --precisions: expected some of {PRECISIONS}, got {unknown}.")
    # Imported once the arguments are checked: bench_train imports TensorFlow.
    import bench_train
    import semisup_report

    work_dir = args.work_dir or tempfile.mkdtemp(prefix="bench_precision_")
    data_dir = os.path.join(work_dir, "data")
    os.makedirs(data_dir, exist_ok=True)
    num_images = bench_train.write_images(data_dir, args.num_images)
    machine = semisup_report.machine_info()
    print(
        f"32x32 small-image EfficientNet-B0, width {args.width_coefficient}, depth "
        f"{args.depth_coefficient}, batch {args.batch_size}, {args.steps} steps x "
        f"{args.trials} trials; {machine['cpu']}, {machine['cpu_count']} usable CPUs, "
        f"bfloat16 ISA: {[f for f in machine['isa'] if 'bf16' in f or 'amx' in f] or 'none'}, "
        f"float16 ISA: {[f for f in machine['isa'] if 'fp16' in f] or 'none'}"
    )
    rates = {p: [] for p in precisions}
    for trial in range(args.trials):
        for precision in precisions:
            model_dir = os.path.join(work_dir, f"{precision}{trial}")
            rates[precision].append(
                bench_train.run_ours(args, data_dir, model_dir, num_images, precision)
            )
            print(f"trial {trial}: {precision} {rates[precision][-1]:.1f} images/s")
    result = {
        "bench": "bench_precision",
        "width_coefficient": args.width_coefficient,
        "depth_coefficient": args.depth_coefficient,
        "batch_size": args.batch_size,
        "steps": args.steps,
        "trials": args.trials,
        "images_per_s": {p: round(statistics.median(r), 1) for p, r in rates.items()},
        "machine": machine,
    }
    if "float32" in rates:
        result["vs_float32"] = {
            p: round(result["images_per_s"][p] / result["images_per_s"]["float32"], 3)
            for p in rates
            if p != "float32"
        }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
