"""The MNIST demo over several seeds: per seed and round, and mean +- std.

Reads the results.json that loop_report.py wrote in each seed's loop.sh output
folder (bench/bench_demo_seeds.sh runs them) and writes one JSON file:

  {"seeds": [0, 1, 2],
   "per_seed": [{"seed": 0, "output_dir": ..., "wall_seconds": ..., "rounds": [
       {"round": 0, "role": "teacher", "test_error": 0.0150, "dev_error": ...,
        "train_error": ..., "test_error_vs_teacher": null,
        "dev_error_vs_teacher": null}, ...]}, ...],
   "summary": [{"round": 0, "test_error": {"mean", "std", "values"},
                "test_error_vs_teacher": {...}, "dev_error": {...}, ...}, ...],
   "wall_seconds": {"mean", "std", "values"},
   "goals": {...},
   "machine": {"cpu": "AMD EPYC", "cpu_family": "25", "cpu_model_number": "17",
               "isa": ["avx", "avx2", ...], "cpu_count": 2, "python": ...,
               "tensorflow": ..., "keras": ..., "numpy": ...}}

Errors are fractions (0.0150 = 1.50%), ratios are a round's error divided by
the same seed's teacher's, std is the sample standard deviation (n - 1) over
seeds. It also prints a table, and checks the benchmark goals: for every seed,
round 1's test error <= --max_ratio x its teacher's, round 2's test error at
most --max_round2_loss points above round 1's, and the run (every step of
loop.sh for that seed) within --max_seconds. "machine" is the machine this
report runs on (bench_demo_seeds.sh runs it right after the seeds; a re-run
that skips finished seeds records the machine of the re-run): the same seeds
can give other numbers on another CPU or with other package versions, since
TensorFlow's op determinism holds on the same hardware and software only,
and the times depend on it.

Usage:
  python bench/demo_seeds_report.py --output=bench.json seed0/ seed1/ seed2/
"""

import argparse
import importlib.metadata
import json
import math
import os
import platform
import sys

# The packages whose versions decide the numerics, recorded next to the results.
RECORDED_PACKAGES = ("tensorflow", "keras", "numpy")
# /proc/cpuinfo flags of the vector instruction sets that oneDNN and XLA choose
# kernels by: two machines that differ in these may round differently.
ISA_FLAG_PREFIXES = ("avx", "amx", "fma", "sse4")


def read_cpuinfo(cpuinfo_path="/proc/cpuinfo"):
    """The CPU as Linux describes it: model, family, model number, vector ISAs.

    Args:
      cpuinfo_path: Linux's cpuinfo file; its first processor is read.

    Returns:
      A dict with "cpu" (the model name; `platform.processor()` or
      `platform.machine()` where the file has none, as on macOS or ARM Linux),
      "cpu_family", "cpu_model_number" (None where unknown) and "isa" (the
      sorted vector-instruction flags, empty where unknown).
    """
    fields = {}
    try:
        with open(cpuinfo_path) as f:
            for line in f:
                if not line.strip():
                    break  # the end of the first processor's block
                key, _, value = line.partition(":")
                fields.setdefault(key.strip(), value.strip())
    except OSError:
        pass
    flags = fields.get("flags", "").split()
    return {
        "cpu": fields.get("model name") or platform.processor() or platform.machine(),
        "cpu_family": fields.get("cpu family"),
        "cpu_model_number": fields.get("model"),
        "isa": sorted(f for f in flags if f.startswith(ISA_FLAG_PREFIXES)),
    }


def usable_cpu_count():
    """The CPUs this process may run on (its affinity mask where the OS has one)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count()


def package_version(name):
    """`name`'s installed version, or None when it is not installed."""
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def machine_info(cpuinfo_path="/proc/cpuinfo"):
    """What the results depend on besides the code and seeds: CPU, cores, versions.

    Args:
      cpuinfo_path: see `read_cpuinfo`.

    Returns:
      `read_cpuinfo`'s dict plus "cpu_count", "python" and one version per
      name of RECORDED_PACKAGES.
    """
    return {
        **read_cpuinfo(cpuinfo_path),
        "cpu_count": usable_cpu_count(),
        "python": platform.python_version(),
        **{name: package_version(name) for name in RECORDED_PACKAGES},
    }


def mean_std(values):
    """{"mean", "std", "values"}; std is the sample std (0 for one value)."""
    values = [v for v in values if v is not None]
    if not values:
        return {"mean": None, "std": None, "values": []}
    mean = sum(values) / len(values)
    var = sum((v - mean) ** 2 for v in values) / (len(values) - 1) if len(values) > 1 else 0.0
    return {"mean": mean, "std": math.sqrt(var), "values": values}


def _error(top1):
    return None if top1 is None else 1.0 - top1


def _ratio(error, teacher_error):
    if error is None or not teacher_error:
        return None
    return error / teacher_error


def seed_entry(output_dir):
    """Per-round errors and ratios of one seed's loop output folder."""
    path = os.path.join(output_dir, "results.json")
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path} is missing: did loop.sh finish for this seed?")
    with open(path) as f:
        results = json.load(f)
    settings = results.get("settings", {})
    rounds = []
    teacher = results["rounds"][0]
    teacher_test, teacher_dev = _error(teacher["test_top_1"]), _error(teacher["dev_top_1"])
    for r in results["rounds"]:
        test, dev = _error(r["test_top_1"]), _error(r["dev_top_1"])
        rounds.append(
            {
                "round": r["round"],
                "role": r["role"],
                "test_error": test,
                "dev_error": dev,
                "train_error": _error(r.get("train_top_1")),
                "test_error_vs_teacher": None if r["round"] == 0 else _ratio(test, teacher_test),
                "dev_error_vs_teacher": None if r["round"] == 0 else _ratio(dev, teacher_dev),
                "num_pseudo_labeled": r.get("num_pseudo_labeled"),
            }
        )
    seed = settings.get("seed")
    return {
        "seed": int(seed) if seed not in (None, "") else None,
        "output_dir": output_dir,
        "wall_seconds": results.get("wall_seconds"),
        "step_seconds": results.get("step_seconds"),
        "rounds": rounds,
    }


def summarize(per_seed):
    num_rounds = min(len(s["rounds"]) for s in per_seed)
    summary = []
    for r in range(num_rounds):
        row = {"round": r, "role": per_seed[0]["rounds"][r]["role"]}
        for key in (
            "test_error",
            "test_error_vs_teacher",
            "dev_error",
            "dev_error_vs_teacher",
            "train_error",
        ):
            row[key] = mean_std([s["rounds"][r][key] for s in per_seed])
        summary.append(row)
    return summary


def check_goals(per_seed, max_ratio, max_round2_loss, max_seconds):
    """Goal name -> {"met": bool, "detail": str} (a goal needing round 2 is
    skipped when a seed has only one round)."""
    goals = {}
    ratios = [s["rounds"][1]["test_error_vs_teacher"] for s in per_seed if len(s["rounds"]) > 1]
    if len(ratios) == len(per_seed):
        goals["round1_test_error_vs_teacher"] = {
            "met": all(r is not None and r <= max_ratio for r in ratios),
            "detail": f"every seed <= {max_ratio:g}: " + ", ".join(f"{r:.3f}" for r in ratios),
        }
    if all(len(s["rounds"]) > 2 for s in per_seed):
        losses = [
            100 * (s["rounds"][2]["test_error"] - s["rounds"][1]["test_error"]) for s in per_seed
        ]
        goals["round2_vs_round1_points"] = {
            "met": all(d <= max_round2_loss + 1e-9 for d in losses),
            "detail": f"round 2 - round 1 test error, every seed <= {max_round2_loss:g} points: "
            + ", ".join(f"{d:+.2f}" for d in losses),
        }
    walls = [s["wall_seconds"] for s in per_seed]
    goals["seconds_per_run"] = {
        "met": all(w is not None and w <= max_seconds for w in walls),
        "detail": f"every seed <= {max_seconds:g} s: " + ", ".join(f"{w:.0f}" for w in walls),
    }
    return goals


def _pct(value):
    return "-" if value is None else f"{100 * value:.2f}"


def _pm(stat, scale=100.0, fmt="{:.2f}"):
    if stat["mean"] is None:
        return "-"
    return f"{fmt.format(scale * stat['mean'])} ± {fmt.format(scale * stat['std'])}"


def format_table(report):
    lines = ["per seed: test error % (ratio to the seed's teacher), dev error %"]
    header = ["seed", "round", "role", "test err %", "vs teacher", "dev err %", "dev vs t.", "s"]
    rows = []
    for s in report["per_seed"]:
        for r in s["rounds"]:
            rows.append(
                [
                    str(s["seed"]),
                    str(r["round"]),
                    r["role"],
                    _pct(r["test_error"]),
                    ""
                    if r["test_error_vs_teacher"] is None
                    else f"{r['test_error_vs_teacher']:.3f}",
                    _pct(r["dev_error"]),
                    "" if r["dev_error_vs_teacher"] is None else f"{r['dev_error_vs_teacher']:.3f}",
                    f"{s['wall_seconds']:.0f}" if r["round"] == 0 else "",
                ]
            )
    n = len(report["per_seed"])
    rows.append([""] * len(header))
    for row in report["summary"]:
        rows.append(
            [
                f"mean±std (n={n})",
                str(row["round"]),
                row["role"],
                _pm(row["test_error"]),
                ""
                if row["round"] == 0
                else _pm(row["test_error_vs_teacher"], scale=1.0, fmt="{:.3f}"),
                _pm(row["dev_error"]),
                ""
                if row["round"] == 0
                else _pm(row["dev_error_vs_teacher"], scale=1.0, fmt="{:.3f}"),
                _pm(report["wall_seconds"], scale=1.0, fmt="{:.0f}") if row["round"] == 0 else "",
            ]
        )
    widths = [max(len(x[i]) for x in [header] + rows) for i in range(len(header))]
    for row in [header] + rows:
        lines.append("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
    machine = report["machine"]
    lines.append(
        f"machine: {machine['cpu']} (family {machine['cpu_family']}, "
        f"model {machine['cpu_model_number']}), {machine['cpu_count']} CPUs, "
        f"Python {machine['python']}, "
        + ", ".join(f"{name} {machine[name]}" for name in RECORDED_PACKAGES)
    )
    lines.append(f"vector instructions: {' '.join(machine['isa']) or 'unknown'}")
    lines.append("goals:")
    for name, goal in report["goals"].items():
        lines.append(f"  {'MET   ' if goal['met'] else 'MISSED'} {name}: {goal['detail']}")
    return "\n".join(lines)


def build_report(output_dirs, max_ratio=0.8, max_round2_loss=0.1, max_seconds=900.0):
    per_seed = [seed_entry(d) for d in output_dirs]
    return {
        "seeds": [s["seed"] for s in per_seed],
        "per_seed": per_seed,
        "summary": summarize(per_seed),
        "wall_seconds": mean_std([s["wall_seconds"] for s in per_seed]),
        "goals": check_goals(per_seed, max_ratio, max_round2_loss, max_seconds),
        "machine": machine_info(),
    }


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("output_dirs", nargs="+", help="loop.sh output folder of each seed")
    parser.add_argument("--output", required=True, help="JSON file to write")
    parser.add_argument("--max_ratio", type=float, default=0.8)
    parser.add_argument("--max_round2_loss", type=float, default=0.1, help="points")
    parser.add_argument("--max_seconds", type=float, default=900.0)
    args = parser.parse_args(argv)
    try:
        report = build_report(
            args.output_dirs, args.max_ratio, args.max_round2_loss, args.max_seconds
        )
    except FileNotFoundError as e:
        sys.exit(f"demo_seeds_report.py: error: {e}")
    with open(args.output + ".tmp", "w") as f:
        json.dump(report, f, indent=2)
    os.replace(args.output + ".tmp", args.output)
    print(format_table(report))
    print(f"Wrote {args.output}")


if __name__ == "__main__":
    main()
