"""bench/semisup_report.py (the table of bench/bench_semisup.sh) on made-up seed folders,
and bench_semisup.sh's checks of its settings."""

import importlib.metadata
import importlib.util
import json
import os
import platform
import subprocess
import sys

import numpy as np
import pytest
from conftest import ROOT
from test_scripts import run_bash

SCRIPT = os.path.join(ROOT, "bench", "semisup_report.py")


def _load_report():
    spec = importlib.util.spec_from_file_location("semisup_report", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


report_lib = _load_report()


def _eval(path, **top1):
    os.makedirs(path, exist_ok=True)
    results = {s: {"top_1_accuracy": v, "global_step": 10} for s, v in top1.items()}
    with open(os.path.join(path, "eval_results.json"), "w") as f:
        json.dump(results, f)


def fake_seed(root, seed, teacher, students, supervised, longer=None, seconds=None):
    """A seed folder as bench_semisup.sh leaves it: loop results + references.

    teacher/students: test top-1 (dev = test - 0.01, train = test + 0.02);
    supervised: (dev, test); longer: the longer teacher's dev.
    """
    path = os.path.join(root, f"seed{seed}")
    rounds = [
        {
            "round": r,
            "role": "teacher" if r == 0 else "student",
            "test_top_1": t,
            "dev_top_1": t - 0.01,
            "train_top_1": t + 0.02,
            "num_pseudo_labeled": 0 if r == 0 else 500,
            "pseudo_label_accuracy_before": None if r == 0 else 0.8,
            "pseudo_label_accuracy_after": None if r == 0 else 0.9,
            "train_images": 1000 if r == 0 else 3000,
        }
        for r, t in enumerate([teacher, *students])
    ]
    os.makedirs(path)
    results = {
        "rounds": rounds,
        "train_images": 1000 + 3000 * len(students),
        "wall_seconds": 100.0,
        "settings": {"seed": str(seed)},
    }
    with open(os.path.join(path, "results.json"), "w") as f:
        json.dump(results, f)
    references = os.path.join(path, "references")
    _eval(os.path.join(references, "supervised"), dev=supervised[0], test=supervised[1])
    if longer is not None:
        _eval(os.path.join(references, "teacher_longer"), dev=longer, test=longer)
    os.makedirs(os.path.join(references, ".done"))
    for name, value in (seconds or {}).items():
        with open(os.path.join(references, ".done", name), "w") as f:
            f.write(f"{value}\n")
    return path


def test_gap_closed_by_hand():
    # A teacher at 80%, full supervision at 90%: a student at 86% closed 60% of the gap.
    assert report_lib.gap_closed(0.86, 0.80, 0.90) == pytest.approx(0.6)
    assert report_lib.gap_closed(0.80, 0.80, 0.90) == 0.0
    assert report_lib.gap_closed(0.78, 0.80, 0.90) == pytest.approx(-0.2)
    assert report_lib.gap_closed(0.92, 0.80, 0.90) == pytest.approx(1.2)
    # No gap to close (or a missing number): undefined, not a division by zero.
    assert report_lib.gap_closed(0.9, 0.9, 0.9) is None
    assert report_lib.gap_closed(0.9, 0.95, 0.9) is None
    assert report_lib.gap_closed(None, 0.8, 0.9) is None


def test_report_per_seed_and_mean_std(tmp_path, capsys):
    dirs = [
        fake_seed(tmp_path, 0, 0.80, (0.85, 0.87), (0.89, 0.90), longer=0.793, seconds={}),
        fake_seed(
            tmp_path,
            1,
            0.82,
            (0.86, 0.858),
            (0.90, 0.92),
            longer=0.812,
            seconds={"supervised": 30.0, "teacher_longer": 12.5},
        ),
    ]
    output = str(tmp_path / "semisup.json")
    report_lib.main(["--output", output, "--dataset=fashion", *dirs])
    with open(output) as f:
        report = json.load(f)
    assert report["dataset"] == "fashion" and report["seeds"] == [0, 1]
    seed0, seed1 = report["per_seed"]
    # Seed 0: (0.85 - 0.80) / (0.90 - 0.80) and (0.87 - 0.80) / 0.10; on dev the same gaps.
    assert [s["gap_closed"] for s in seed0["students"]] == pytest.approx([0.5, 0.7])
    assert [s["gap_closed_dev"] for s in seed0["students"]] == pytest.approx([0.5, 0.7])
    # Seed 1: 0.04 / 0.10 and 0.038 / 0.10.
    assert [s["gap_closed"] for s in seed1["students"]] == pytest.approx([0.4, 0.38])
    assert seed0["teacher"]["train"] == pytest.approx(0.82)
    assert seed1["wall_seconds"] == {"loop": 100.0, "supervised": 30.0, "teacher_longer": 12.5}
    summary = report["summary"]
    round2 = summary["students"][1]
    assert round2["gap_closed"]["mean"] == pytest.approx(0.54)
    assert round2["gap_closed"]["std"] == pytest.approx(np.std([0.7, 0.38], ddof=1))
    assert summary["supervised"]["test"]["mean"] == pytest.approx(0.91)
    assert summary["teacher"]["test"]["std"] == pytest.approx(np.std([0.80, 0.82], ddof=1))
    assert round2["pseudo_label_accuracy_kept"]["mean"] == pytest.approx(0.9)
    assert summary["loop_train_images"]["values"] == [7000, 7000]
    goals = report["goals"]
    # Longer teachers: dev 0.79 -> 0.793 (+0.3) and 0.81 -> 0.812 (+0.2 points).
    assert goals["teacher_converged"]["met"]
    assert "+0.30, +0.20" in goals["teacher_converged"]["detail"]
    # Seed 1 closes 0.38 < 0.6; round 2 loses 0.2 points on seed 1 (> 0.1).
    assert not goals["gap_closed_round2"]["met"]
    assert not goals["round2_vs_round1"]["met"]
    assert "+2.00, -0.20" in goals["round2_vs_round1"]["detail"]
    assert goals["loop_train_images"]["met"]
    table = capsys.readouterr().out
    assert "fashion: test top-1 per seed and mean ± std" in table
    assert "mean±std (n=2)" in table and "MISSED gap_closed_round2" in table
    assert "0.540 ± 0.226" in table  # round 2's gap closed
    assert "81.00 ± 1.41" in table  # the teacher's test top-1


def test_goals_take_their_settings_and_need_every_number(tmp_path):
    run = fake_seed(tmp_path, 0, 0.80, (0.87, 0.875), (0.89, 0.90), longer=0.80)
    report = report_lib.build_report(
        [run], goals={"min_gap_closed": 0.7, "max_longer_gain": 1.0, "max_train_images": 6999}
    )
    goals = report["goals"]
    assert goals["gap_closed_round2"]["met"]  # 0.75 >= 0.7
    assert goals["teacher_converged"]["met"]  # 0.80 - 0.79 = +1.0 point <= 1.0
    assert not goals["loop_train_images"]["met"]  # 7,000 > 6,999
    # Without the longer teacher or a second round, those goals are not met.
    bare = fake_seed(tmp_path / "b", 0, 0.80, (0.87,), (0.89, 0.90))
    goals = report_lib.build_report([bare])["goals"]
    assert not goals["teacher_converged"]["met"] and "-" in goals["teacher_converged"]["detail"]
    assert not goals["gap_closed_round2"]["met"] and not goals["round2_vs_round1"]["met"]


def test_report_records_the_machine(tmp_path, monkeypatch):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(
        "processor\t: 0\nvendor_id\t: AuthenticAMD\ncpu family\t: 25\nmodel\t\t: 17\n"
        "model name\t: AMD EPYC 9B14\nflags\t\t: fpu sse4_1 avx2 fma avx512f ssse3\n\n"
        "processor\t: 1\nmodel name\t: another CPU\nflags\t\t: fpu amx_tile\n"
    )
    versions = {"tensorflow": "2.99.0", "keras": "3.99.0"}

    def fake_version(name):
        if name not in versions:
            raise importlib.metadata.PackageNotFoundError(name)
        return versions[name]

    monkeypatch.setattr(importlib.metadata, "version", fake_version)
    machine = report_lib.machine_info(str(cpuinfo))
    # The first processor's block only; the ISA flags sorted, the others dropped.
    assert machine["cpu"] == "AMD EPYC 9B14"
    assert (machine["cpu_family"], machine["cpu_model_number"]) == ("25", "17")
    assert machine["isa"] == ["avx2", "avx512f", "fma", "sse4_1"]
    # numpy "not installed": None, not an error.
    assert (machine["tensorflow"], machine["keras"], machine["numpy"]) == ("2.99.0", "3.99.0", None)

    # ARM Linux has no "model name" line, macOS no /proc/cpuinfo at all.
    monkeypatch.setattr(platform, "processor", lambda: "")
    monkeypatch.setattr(platform, "machine", lambda: "aarch64")
    arm = tmp_path / "cpuinfo_arm"
    arm.write_text("processor\t: 0\nBogoMIPS\t: 50.00\nFeatures\t: fp asimd\n")
    for path in (arm, tmp_path / "none"):
        cpu = report_lib.read_cpuinfo(str(path))
        assert cpu == {"cpu": "aarch64", "cpu_family": None, "cpu_model_number": None, "isa": []}

    # The table shows what was recorded.
    run = fake_seed(tmp_path, 0, 0.80, (0.85, 0.87), (0.89, 0.90))
    monkeypatch.setattr(report_lib, "machine_info", lambda: machine)
    table = report_lib.format_table(report_lib.build_report([run]))
    assert "machine: AMD EPYC 9B14 (family 25, model 17)" in table
    assert "tensorflow 2.99.0, keras 3.99.0, numpy None" in table
    assert "vector instructions: avx2 avx512f fma sse4_1" in table


@pytest.mark.slow
@pytest.mark.e2e
def test_report_as_the_bench_runs_it(tmp_path):
    """A subprocess, as bench_semisup.sh runs it: its status, its output, its errors."""
    run = fake_seed(tmp_path, 0, 0.80, (0.85, 0.87), (0.89, 0.90), longer=0.8)
    output = str(tmp_path / "semisup.json")
    proc = subprocess.run(
        [sys.executable, SCRIPT, f"--output={output}", "--dataset=mnist", run],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr
    assert f"Wrote {output}" in proc.stdout and "machine: " in proc.stdout
    with open(output) as f:
        assert json.load(f)["machine"]["python"] == platform.python_version()
    # A seed whose reference did not finish: named, and nothing written.
    os.remove(os.path.join(run, "references", "supervised", "eval_results.json"))
    for missing, named in (
        (run, "references/supervised/eval_results.json"),
        (str(tmp_path / "none"), ""),
    ):
        proc = subprocess.run(
            [sys.executable, SCRIPT, f"--output={tmp_path / 'x.json'}", missing],
            capture_output=True,
            text=True,
        )
        assert proc.returncode == 1
        assert "semisup_report.py: error:" in proc.stderr and "is missing" in proc.stderr
        assert named in proc.stderr
        assert not os.path.exists(tmp_path / "x.json")


@pytest.mark.slow
@pytest.mark.e2e
@pytest.mark.parametrize(
    "env, message",
    [
        ({"SEEDS": "0 a"}, "'a' is not a non-negative integer"),
        ({"DATASET": "cifar"}, "DATASET=cifar: expected mnist or fashion."),
        ({"SUPERVISED_EPOCHS": "many"}, "SUPERVISED_EPOCHS=many: expected a positive number."),
        ({"LONGER_FACTOR": "-1"}, "LONGER_FACTOR=-1: expected a non-negative number."),
    ],
)
def test_bench_script_rejects_bad_settings(env, message, tmp_path):
    env = dict(env, PYTHON=sys.executable, OUT_ROOT=str(tmp_path / "out"))
    proc = run_bash("bench/bench_semisup.sh", env, cwd=ROOT)
    assert proc.returncode != 0 and message in proc.stderr
    assert not os.path.exists(tmp_path / "out")


@pytest.mark.slow
@pytest.mark.e2e
def test_bench_runs_every_part_on_tiny_data(tmp_path):
    """bench_semisup.sh as a user runs it, on a 200-image lookalike of Fashion-MNIST's IDX
    files: data, one loop round, the longer teacher, the supervised reference, the report;
    a re-run redoes nothing."""
    from test_mnist_demo import tiny_env
    from test_notebook import write_fake_mnist_idx

    env = tiny_env("", "")
    for name in ("DATA_DIR", "OUT", "SEED"):
        del env[name]
    env.update(
        DATASET="fashion",
        FASHION_RAW_DIR=write_fake_mnist_idx(str(tmp_path / "idx")),
        DATASET_DIR=str(tmp_path / "data"),
        OUT_ROOT=str(tmp_path / "bench"),
        EXTRA_PREPRO_FLAGS="--num_dev=20 --num_train_shards=1 --num_dev_shards=1 "
        "--num_test_shards=1 --num_extra_shards=2",
        LABELED_PER_CLASS="2",
        SEEDS="4",
        NUM_WORKERS="1",
        # The longer teacher: 2 x 0.5 epochs of the 20 labeled images (3 steps of 8);
        # the reference: 0.1 epochs of all 180 non-dev images (3 steps).
        TEACHER_EPOCHS="0.5",
        LONGER_FACTOR="2",
        SUPERVISED_EPOCHS="0.1",
    )
    proc = run_bash("bench/bench_semisup.sh", env, cwd=ROOT, timeout=1200)
    assert proc.returncode == 0, f"{proc.stdout}\n{proc.stderr[-3000:]}"
    seed_dir = tmp_path / "bench" / "seed4"
    with open(tmp_path / "bench" / "semisup.json") as f:
        report = json.load(f)
    assert report["dataset"] == "fashion" and report["seeds"] == [4]
    entry = report["per_seed"][0]
    assert entry["teacher_longer"]["dev"] is not None
    assert set(entry["supervised"]) == {"train", "dev", "test"}
    assert entry["supervised"]["train"] is None  # evaluated on dev and test only
    assert len(entry["students"]) == 1 and entry["loop_train_images"] == 32 + 96
    for name, steps in (("teacher_longer", 3), ("supervised", 3)):
        with open(seed_dir / "references" / name / "eval_results.json") as f:
            assert json.load(f)["dev"]["global_step"] == steps, name
        assert entry["wall_seconds"][name] > 0
    # The references' markers are not the loop's: its wall time counts its own steps.
    with open(seed_dir / "results.json") as f:
        assert set(json.load(f)["step_seconds"]) == {
            "round0_teacher",
            "round1_predict",
            "round1_filter1",
            "round1_filter2",
            "round1_student",
        }
    assert "fashion: test top-1 per seed and mean ± std" in proc.stdout
    assert "goals:" in proc.stdout
    again = run_bash("bench/bench_semisup.sh", env, cwd=ROOT, timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "supervised       done earlier" in again.stdout
    assert "teacher_longer   done earlier" in again.stdout
