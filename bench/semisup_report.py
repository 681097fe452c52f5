"""The semi-supervised table of bench/bench_semisup.sh: per seed and mean +- std.

For each seed folder the benchmark wrote, reads
  results.json                 loop_report.py's results of loop.sh (teacher,
                               students, pseudo-label accuracy, images trained)
  references/supervised/eval_results.json   the fully supervised reference:
                               the same network trained on every non-dev label
  references/teacher_longer/eval_results.json   the teacher trained longer
                               (the convergence check), if present
  references/.done/<name>      the seconds each reference took
and writes one JSON file with, per seed, the test (and dev) top-1 of the
teacher, each student round and the fully supervised model, the gap closed
by each student,

  gap closed = (student - teacher) / (fully supervised - teacher)

(1: the student matches full supervision; 0: no better than its teacher;
None where the reference is not above the teacher), the teacher's top-1 on
its own labeled training images (eval mode), the pseudo labels' accuracy
(all / kept), the images processed by training in the loop (its compute,
independent of the machine) and the wall time of each part (dependent on
it: the machine is recorded); then mean +- std over seeds (sample std,
n - 1), a printed table, and the goals:

  teacher_converged      the longer teacher gains <= --max_longer_gain points on
                         dev, every seed
  gap_closed_round2      round 2's test gap closed >= --min_gap_closed, every seed
  round2_vs_round1       round 2's test top-1 at most --max_round2_loss points
                         below round 1's, every seed
  loop_train_images      the loop's training images <= --max_train_images

Accuracies are fractions in the JSON (0.9735) and percentages in the table.

Usage:
  python bench/semisup_report.py --dataset=fashion --output=semisup.json seed0/ seed1/ seed2/
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


def gap_closed(student, teacher, supervised):
    """(student - teacher) / (supervised - teacher), or None when supervised <= teacher."""
    if None in (student, teacher, supervised) or supervised <= teacher:
        return None
    return (student - teacher) / (supervised - teacher)


def _read_json(path):
    with open(path) as f:
        return json.load(f)


def _top1s(eval_results):
    """{"train", "dev", "test"} top-1 of an eval_results.json dict (None where not evaluated)."""
    return {
        subset: (eval_results.get(subset) or {}).get("top_1_accuracy")
        for subset in ("train", "dev", "test")
    }


# bench_semisup.sh's folder of the references, in each seed's folder.
REFERENCES = "references"


def _optional_eval(seed_dir, name):
    path = os.path.join(seed_dir, REFERENCES, name, "eval_results.json")
    return _top1s(_read_json(path)) if os.path.exists(path) else None


def _seconds(seed_dir, name):
    """The seconds of a reference, from the marker run_step leaves in its .done/."""
    path = os.path.join(seed_dir, REFERENCES, ".done", name)
    if not os.path.exists(path):
        return None
    with open(path) as f:
        return float(f.read().strip())


def seed_entry(seed_dir):
    """One seed's row: the loop's rounds, the references and the gap closed.

    Raises:
      FileNotFoundError: the loop's results.json or the fully supervised
        reference is missing, naming the file.
    """
    path = os.path.join(seed_dir, "results.json")
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path} is missing: did loop.sh finish for this seed?")
    results = _read_json(path)
    supervised_path = os.path.join(seed_dir, REFERENCES, "supervised", "eval_results.json")
    if not os.path.exists(supervised_path):
        raise FileNotFoundError(
            f"{supervised_path} is missing: did the fully supervised run finish for this seed?"
        )
    supervised = _top1s(_read_json(supervised_path))
    teacher_round, *student_rounds = results["rounds"]
    teacher = {s: teacher_round.get(f"{s}_top_1") for s in ("train", "dev", "test")}
    students = []
    for r in student_rounds:
        top1 = {s: r.get(f"{s}_top_1") for s in ("train", "dev", "test")}
        students.append(
            {
                "round": r["round"],
                **top1,
                "gap_closed": gap_closed(top1["test"], teacher["test"], supervised["test"]),
                "gap_closed_dev": gap_closed(top1["dev"], teacher["dev"], supervised["dev"]),
                "pseudo_label_accuracy_all": r.get("pseudo_label_accuracy_before"),
                "pseudo_label_accuracy_kept": r.get("pseudo_label_accuracy_after"),
                "num_pseudo_labeled": r.get("num_pseudo_labeled"),
                "train_images": r.get("train_images"),
            }
        )
    seed = results.get("settings", {}).get("seed")
    return {
        "seed": int(seed) if seed not in (None, "") else None,
        "output_dir": seed_dir,
        "teacher": {**teacher, "train_images": teacher_round.get("train_images")},
        "teacher_longer": _optional_eval(seed_dir, "teacher_longer"),
        "students": students,
        "supervised": supervised,
        "loop_train_images": results.get("train_images"),
        "wall_seconds": {
            "loop": results.get("wall_seconds"),
            "supervised": _seconds(seed_dir, "supervised"),
            "teacher_longer": _seconds(seed_dir, "teacher_longer"),
        },
    }


def _student_values(per_seed, index, key):
    return [s["students"][index][key] if index < len(s["students"]) else None for s in per_seed]


def summarize(per_seed):
    """mean_std of every reported number over the seeds."""
    summary = {
        "teacher": {
            k: mean_std([s["teacher"][k] for s in per_seed])
            for k in ("train", "dev", "test", "train_images")
        },
        "supervised": {
            k: mean_std([s["supervised"][k] for s in per_seed]) for k in ("dev", "test")
        },
        "teacher_longer": {
            k: mean_std([(s["teacher_longer"] or {}).get(k) for s in per_seed])
            for k in ("train", "dev", "test")
        },
        "students": [],
        "loop_train_images": mean_std([s["loop_train_images"] for s in per_seed]),
        "wall_seconds": {
            part: mean_std([s["wall_seconds"][part] for s in per_seed])
            for part in ("loop", "supervised", "teacher_longer")
        },
    }
    for index in range(max(len(s["students"]) for s in per_seed)):
        summary["students"].append(
            {
                "round": index + 1,
                **{
                    key: mean_std(_student_values(per_seed, index, key))
                    for key in (
                        "train",
                        "dev",
                        "test",
                        "gap_closed",
                        "gap_closed_dev",
                        "pseudo_label_accuracy_all",
                        "pseudo_label_accuracy_kept",
                    )
                },
            }
        )
    return summary


def _every(values, ok):
    return bool(values) and all(v is not None and ok(v) for v in values)


def _listed(values, fmt):
    return ", ".join("-" if v is None else fmt.format(v) for v in values)


def check_goals(per_seed, goals):
    """Goal name -> {"met", "detail"}; a goal whose numbers a seed lacks is not met."""
    out = {}
    gains = [
        None
        if s["teacher_longer"] is None
        else 100 * (s["teacher_longer"]["dev"] - s["teacher"]["dev"])
        for s in per_seed
    ]
    out["teacher_converged"] = {
        "met": _every(gains, lambda g: g <= goals["max_longer_gain"] + 1e-9),
        "detail": f"dev gain of the longer teacher, every seed <= {goals['max_longer_gain']:g} "
        "points: " + _listed(gains, "{:+.2f}"),
    }
    gaps = _student_values(per_seed, 1, "gap_closed")
    out["gap_closed_round2"] = {
        "met": _every(gaps, lambda g: g >= goals["min_gap_closed"] - 1e-9),
        "detail": f"round 2's test gap closed, every seed >= {goals['min_gap_closed']:g}: "
        + _listed(gaps, "{:.3f}"),
    }
    changes = [
        None
        if len(s["students"]) < 2
        else 100 * (s["students"][1]["test"] - s["students"][0]["test"])
        for s in per_seed
    ]
    out["round2_vs_round1"] = {
        "met": _every(changes, lambda d: d >= -goals["max_round2_loss"] - 1e-9),
        "detail": f"round 2 - round 1 test top-1, every seed >= -{goals['max_round2_loss']:g} "
        "points: " + _listed(changes, "{:+.2f}"),
    }
    images = [s["loop_train_images"] for s in per_seed]
    out["loop_train_images"] = {
        "met": _every(images, lambda n: n <= goals["max_train_images"]),
        "detail": f"images processed by the loop's training, every seed <= "
        f"{goals['max_train_images']:,}: " + _listed(images, "{:,}"),
    }
    return out


def _pct(value):
    return "-" if value is None else f"{100 * value:.2f}"


def _pm(stat, scale=100.0, fmt="{:.2f}"):
    if stat["mean"] is None:
        return "-"
    if len(stat["values"]) == 1:
        return fmt.format(scale * stat["mean"])
    return f"{fmt.format(scale * stat['mean'])} ± {fmt.format(scale * stat['std'])}"


def _pair(first, second, fmt=_pct):
    return f"{fmt(first)} / {fmt(second)}"


def _table_rows(report):
    """The rows of the main table: each seed, then mean ± std."""
    rows = []
    for s in report["per_seed"]:
        longer = s["teacher_longer"] or {}
        rows.append(
            [f"seed {s['seed']}", _pct(s["teacher"]["train"]), _pct(s["teacher"]["test"])]
            + [_pct(st["test"]) for st in s["students"]]
            + [_pct(s["supervised"]["test"])]
            + [
                "-" if st["gap_closed"] is None else f"{st['gap_closed']:.3f}"
                for st in s["students"]
            ]
            + [
                _pair(s["teacher"]["dev"], longer.get("dev")),
                " | ".join(
                    _pair(st["pseudo_label_accuracy_all"], st["pseudo_label_accuracy_kept"])
                    for st in s["students"]
                ),
                _listed([s["loop_train_images"]], "{:,}"),
            ]
        )
    summary = report["summary"]
    students = summary["students"]
    rows.append(
        [f"mean±std (n={len(report['per_seed'])})", _pm(summary["teacher"]["train"])]
        + [_pm(summary["teacher"]["test"])]
        + [_pm(st["test"]) for st in students]
        + [_pm(summary["supervised"]["test"])]
        + [_pm(st["gap_closed"], scale=1.0, fmt="{:.3f}") for st in students]
        + [
            f"{_pm(summary['teacher']['dev'])} / {_pm(summary['teacher_longer']['dev'])}",
            " | ".join(
                f"{_pm(st['pseudo_label_accuracy_all'])} / {_pm(st['pseudo_label_accuracy_kept'])}"
                for st in students
            ),
            _pm(summary["loop_train_images"], scale=1.0, fmt="{:,.0f}"),
        ]
    )
    return rows


def format_table(report):
    """The printed table (accuracies in %), the machine, and the goals."""
    rounds = len(report["summary"]["students"])
    header = (
        ["", "teacher train %", "teacher test %"]
        + [f"student {r + 1} test %" for r in range(rounds)]
        + ["supervised test %"]
        + [f"gap closed {r + 1}" for r in range(rounds)]
        + ["teacher dev % (x1 / longer)", "pseudo-label acc % (all / kept)", "images trained"]
    )
    rows = [header] + _table_rows(report)
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = [f"{report['dataset']}: test top-1 per seed and mean ± std"]
    for k, row in enumerate(rows):
        lines.append("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
        if k == 0:
            lines.append("  ".join("-" * w for w in widths))
    walls = report["summary"]["wall_seconds"]
    lines.append(
        "wall time, s (machine-dependent): "
        + ", ".join(f"{part} {_pm(walls[part], 1.0, '{:.0f}')}" for part in walls)
    )
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


DEFAULT_GOALS = {
    "max_longer_gain": 0.5,
    "min_gap_closed": 0.6,
    "max_round2_loss": 0.1,
    "max_train_images": 700_000,
}


def build_report(seed_dirs, dataset="", goals=None):
    """The report dict of `seed_dirs` (see the module docstring)."""
    goals = dict(DEFAULT_GOALS, **(goals or {}))
    per_seed = [seed_entry(d) for d in seed_dirs]
    return {
        "dataset": dataset,
        "seeds": [s["seed"] for s in per_seed],
        "per_seed": per_seed,
        "summary": summarize(per_seed),
        "goals": check_goals(per_seed, goals),
        "goal_settings": goals,
        "machine": machine_info(),
    }


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("seed_dirs", nargs="+", help="bench_semisup.sh's folder of each seed")
    parser.add_argument("--output", required=True, help="JSON file to write")
    parser.add_argument("--dataset", default="", help="the dataset's name, for the table")
    for name, value in DEFAULT_GOALS.items():
        parser.add_argument(f"--{name}", type=type(value), default=value)
    args = parser.parse_args(argv)
    goals = {name: getattr(args, name) for name in DEFAULT_GOALS}
    try:
        report = build_report(args.seed_dirs, args.dataset, goals)
    except (FileNotFoundError, KeyError, ValueError) as e:
        sys.exit(f"semisup_report.py: error: {e}")
    with open(args.output + ".tmp", "w") as f:
        json.dump(report, f, indent=2)
    os.replace(args.output + ".tmp", args.output)
    print(format_table(report))
    print(f"Wrote {args.output}")


if __name__ == "__main__":
    main()
