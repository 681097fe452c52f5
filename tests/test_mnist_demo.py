"""End-to-end test of local_scripts/mnist/loop.sh on a few hundred generated images.

A tiny EfficientNet (width/depth 0.1), a few training steps per model and one
noisy-student round: teacher -> predict -> filter (both passes) -> student ->
loop_report.py. Checks every step's outputs, results.json and summary.png,
that SEED reaches every training run and the filter, and that a re-run skips
the finished steps. Also checks bench/demo_seeds_report.py (the summary of
bench/bench_demo_seeds.sh) on made-up results.
"""

import importlib.metadata
import importlib.util
import json
import os
import platform
import shutil
import struct
import subprocess
import sys

import numpy as np
import pytest
from conftest import NUM_CLASSES, ROOT, write_labeled_subset, write_unlabeled
from test_scripts import run_bash

NUM_UNLABELED_SHARDS = 2
SEED = 7
STEPS = ["round0_teacher", "round1_predict", "round1_filter1", "round1_filter2", "round1_student"]


def tiny_env(data_dir, out_dir):
    return dict(
        PYTHON=sys.executable,
        TF_CPP_MIN_LOG_LEVEL="2",
        DATA_DIR=data_dir,
        OUT=out_dir,
        ROUNDS="1",
        SEED=str(SEED),
        NUM_SHARDS=str(NUM_UNLABELED_SHARDS),
        NUM_WORKERS="2",
        # Every image is kept: a 4-step teacher is far from confident.
        MIN_THRESHOLD="0",
        NUM_IMAGE="8",
        BATCH_SIZE="32",
        INIT_STUDENT="1",
        MODEL_FLAGS="--width_coefficient=0.1 --depth_coefficient=0.1",
        RUN_FLAGS="--iterations_per_loop=2 --save_checkpoints_steps=2 --eval_batch_size=32 "
        "--eval_subsets=train,dev,test",
        TEACHER_FLAGS="--train_batch_size=8 --train_steps=4 --augment_name=v1 --randaug_mag=5",
        STUDENT_FLAGS="--train_batch_size=8 --unlabel_ratio=2 --teacher_softmax_temp=1 "
        "--train_steps=4 --augment_name=v1 --randaug_mag=5",
    )


def run_loop(env):
    return run_bash("local_scripts/mnist/loop.sh", env, cwd=ROOT, timeout=900)


@pytest.fixture(scope="module")
def loop_run(tmp_path_factory):
    import utils

    data_dir = str(tmp_path_factory.mktemp("mnist_like"))
    out_dir = str(tmp_path_factory.mktemp("loop_out"))
    rng = np.random.default_rng(0)
    counts = {"train": 100, "dev": 20, "test": 30}
    for subset, n in counts.items():
        write_labeled_subset(data_dir, subset, n, 2, rng)
    write_unlabeled(data_dir, 60, NUM_UNLABELED_SHARDS, rng)
    counts["extra"] = 60
    utils.write_json(os.path.join(data_dir, "dataset_info.json"), counts)
    env = tiny_env(data_dir, out_dir)
    proc = run_loop(env)
    assert proc.returncode == 0, f"loop.sh failed:\n{proc.stdout}\n{proc.stderr}"
    return env, out_dir, proc


def _shard(name, shard, extra=""):
    return f"{name}-{shard:05d}-of-{NUM_UNLABELED_SHARDS:05d}{extra}"


def test_every_step_writes_its_outputs(loop_run):
    _, out, _ = loop_run
    for model_dir in ("round0_teacher", "round1_student"):
        path = os.path.join(out, model_dir)
        files = os.listdir(path)
        assert "checkpoint" in files and "ckpt-4.index" in files
        assert "model_params.txt" in files and "FLAGS.json" in files
        assert any(f.startswith("events.out.tfevents") for f in files), "no TensorBoard log"
        with open(os.path.join(path, "eval_results.json")) as f:
            results = json.load(f)
        assert set(results) == {"train", "dev", "test"}
        assert results["test"]["num_images"] == 30 and results["test"]["global_step"] == 4
    pseudo = os.path.join(out, "round1_pseudo")
    for shard in range(NUM_UNLABELED_SHARDS):
        assert os.path.exists(
            os.path.join(pseudo, "predict_label", _shard("train-info", shard, "-00000"))
        )
        assert os.path.exists(os.path.join(pseudo, "info", _shard("info", shard, "-00000.txt")))
        assert os.path.exists(
            os.path.join(pseudo, "prelim_stats", f"prelim_stats_{shard:05d}_0.json")
        )
        assert os.path.exists(os.path.join(pseudo, "filter_data", "data", _shard("train-0", shard)))
    assert os.path.exists(os.path.join(pseudo, "prelim_stats", "total_counts.json"))
    with open(os.path.join(pseudo, "filter_data", "stats", "final_stats.json")) as f:
        assert json.load(f)["total_cnt"] > 0
    # The student learned from the pseudo labels, starting from the teacher.
    with open(os.path.join(out, "round1_student", "FLAGS.json")) as f:
        student_flags = json.load(f)
    assert student_flags["unlabel_data_dir"].endswith("round1_pseudo/filter_data/data")
    assert student_flags["init_model_path"].endswith("round0_teacher")
    assert sorted(os.listdir(os.path.join(out, ".done"))) == sorted(STEPS)
    for step in STEPS:
        assert os.path.getsize(os.path.join(out, "logs", f"{step}.log")) > 0


def test_seed_reaches_every_step(loop_run):
    _, out, _ = loop_run
    for model_dir in ("round0_teacher", "round1_student"):
        with open(os.path.join(out, model_dir, "FLAGS.json")) as f:
            flags_json = json.load(f)
        assert flags_json["seed"] == SEED, model_dir
        assert flags_json["deterministic"] is True, model_dir
    logs = os.path.join(out, "round1_pseudo", "logs")
    for prefix in ("predict", "filter-pass1", "filter-pass2"):
        names = [f for f in os.listdir(logs) if f.startswith(prefix + "-worker")]
        assert names, f"no {prefix} worker log"
        for name in names:
            with open(os.path.join(logs, name)) as f:
                calls = [line for line in f if line.startswith("=== ")]
            assert calls and all(f"--seed={SEED} " in c for c in calls), (name, calls)
    with open(os.path.join(out, "results.json")) as f:
        results = json.load(f)
    assert results["settings"]["seed"] == str(SEED)
    assert results["settings"]["training"]["round1_student"]["seed"] == SEED


def test_bad_seed_fails_fast(tmp_path):
    env = tiny_env(str(tmp_path), str(tmp_path / "out"))
    env["SEED"] = "x1"
    proc = run_loop(env)
    assert proc.returncode != 0 and "SEED=x1" in proc.stderr


def test_results_json_is_well_formed(loop_run):
    _, out, proc = loop_run
    with open(os.path.join(out, "results.json")) as f:
        results = json.load(f)
    assert set(results) >= {"rounds", "wall_seconds", "settings"}
    rounds = results["rounds"]
    assert [r["round"] for r in rounds] == [0, 1]
    assert [r["role"] for r in rounds] == ["teacher", "student"]
    for r in rounds:
        assert isinstance(r["model_name"], str) and r["model_name"].startswith("efficientnet-b0")
        for key in ("test_top_1", "dev_top_1", "train_top_1"):
            assert isinstance(r[key], float) and 0.0 <= r[key] <= 1.0
        assert isinstance(r["num_pseudo_labeled"], int)
    assert rounds[0]["num_pseudo_labeled"] == 0
    with open(os.path.join(out, "round1_pseudo", "filter_data", "stats", "final_stats.json")) as f:
        total = json.load(f)["total_cnt"]
    assert rounds[1]["num_pseudo_labeled"] == total
    assert sum(rounds[1]["pseudo_label_counts_after"]) == total
    before = rounds[1]["pseudo_label_counts_before"]
    assert len(before) == NUM_CLASSES and sum(before) == 60  # every unlabeled image
    assert isinstance(results["wall_seconds"], float) and results["wall_seconds"] > 0
    assert set(results["step_seconds"]) == set(STEPS)
    settings = results["settings"]
    assert settings["task_name"] == "mnist" and settings["min_threshold"] == "0"
    assert settings["labeled_data"]["train"] == 100
    assert settings["training"]["round1_student"]["unlabel_ratio"] == 2
    # The table is printed.
    assert "teacher" in proc.stdout and "student 1" in proc.stdout


def test_summary_png(loop_run):
    _, out, _ = loop_run
    with open(os.path.join(out, "summary.png"), "rb") as f:
        data = f.read()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", data[16:24])
    assert width >= 600 and height >= 300


def test_rerun_skips_finished_steps(loop_run):
    env, out, _ = loop_run
    with open(os.path.join(out, "results.json")) as f:
        before = json.load(f)
    proc = run_loop(env)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.count("done earlier") == len(STEPS)
    with open(os.path.join(out, "results.json")) as f:
        after = json.load(f)
    assert after["rounds"] == before["rounds"]
    assert after["wall_seconds"] == before["wall_seconds"]


def test_no_confident_image_stops_the_loop_with_the_filters_message(loop_run, tmp_path):
    """A threshold no prediction reaches: the filter's own message ends the loop's output."""
    env, out, _ = loop_run
    copy = str(tmp_path / "out")
    shutil.copytree(out, copy)
    for step in ("round1_filter2", "round1_student"):
        os.remove(os.path.join(copy, ".done", step))
    proc = run_loop(dict(env, OUT=copy, MIN_THRESHOLD="0.99"))
    assert proc.returncode == 1
    assert "no image would be kept" in proc.stderr and "Lower --min_threshold" in proc.stderr
    assert "step round1_filter2 failed" in proc.stderr
    assert not os.path.exists(os.path.join(copy, ".done", "round1_filter2"))


def test_missing_data_fails_fast(tmp_path):
    env = tiny_env(str(tmp_path / "nowhere"), str(tmp_path / "out"))
    proc = run_loop(env)
    assert proc.returncode != 0
    assert "DATA_DIR" in proc.stderr and "prepro.sh" in proc.stderr


@pytest.mark.parametrize(
    "script",
    sorted(
        f for f in os.listdir(os.path.join(ROOT, "local_scripts", "mnist")) if f.endswith(".sh")
    ),
)
def test_scripts_parse(script):
    path = os.path.join(ROOT, "local_scripts", "mnist", script)
    assert subprocess.run(["bash", "-n", path]).returncode == 0


def _load_seeds_report():
    path = os.path.join(ROOT, "bench", "demo_seeds_report.py")
    spec = importlib.util.spec_from_file_location("demo_seeds_report", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _fake_loop_output(path, seed, test_top1, dev_top1, wall):
    os.makedirs(path)
    rounds = [
        {
            "round": r,
            "role": "teacher" if r == 0 else "student",
            "test_top_1": t,
            "dev_top_1": d,
            "train_top_1": 1.0,
            "num_pseudo_labeled": 0 if r == 0 else 500,
        }
        for r, (t, d) in enumerate(zip(test_top1, dev_top1, strict=True))
    ]
    with open(os.path.join(path, "results.json"), "w") as f:
        json.dump({"rounds": rounds, "wall_seconds": wall, "settings": {"seed": str(seed)}}, f)


def test_seeds_report(tmp_path, capsys):
    report_lib = _load_seeds_report()
    dirs = []
    for seed, (test, wall) in enumerate(
        [((0.980, 0.986, 0.988), 800.0), ((0.985, 0.990, 0.9895), 850.0)]
    ):
        dirs.append(str(tmp_path / f"seed{seed}"))
        _fake_loop_output(dirs[-1], seed, test, (0.97, 0.98, 0.98), wall)
    output = str(tmp_path / "bench.json")
    report_lib.main(["--output", output] + dirs)
    with open(output) as f:
        report = json.load(f)
    assert report["seeds"] == [0, 1]
    seed0 = report["per_seed"][0]["rounds"]
    assert seed0[1]["test_error"] == pytest.approx(0.014)
    assert seed0[1]["test_error_vs_teacher"] == pytest.approx(0.7)
    assert seed0[1]["dev_error_vs_teacher"] == pytest.approx(2 / 3)
    round1 = report["summary"][1]
    assert round1["test_error"]["mean"] == pytest.approx(0.012)
    assert round1["test_error"]["std"] == pytest.approx(np.std([0.014, 0.010], ddof=1))
    assert round1["test_error_vs_teacher"]["mean"] == pytest.approx((0.7 + 10 / 15) / 2)
    assert report["wall_seconds"]["mean"] == pytest.approx(825.0)
    goals = report["goals"]
    assert goals["round1_test_error_vs_teacher"]["met"]
    assert goals["seconds_per_run"]["met"]
    # Seed 1 loses 0.05 points in round 2: within 0.1.
    assert goals["round2_vs_round1_points"]["met"]
    table = capsys.readouterr().out
    assert "mean±std (n=2)" in table and "MISSED" not in table
    machine = report["machine"]
    assert machine["cpu_count"] >= 1 and machine["python"] == platform.python_version()
    assert f"{machine['cpu_count']} CPUs, Python {machine['python']}" in table


def test_seeds_report_records_the_machine(tmp_path, monkeypatch):
    report_lib = _load_seeds_report()
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
    run = str(tmp_path / "seed0")
    _fake_loop_output(run, 0, (0.98, 0.986, 0.988), (0.97, 0.98, 0.98), 800.0)
    monkeypatch.setattr(report_lib, "machine_info", lambda: machine)
    table = report_lib.format_table(report_lib.build_report([run]))
    assert "machine: AMD EPYC 9B14 (family 25, model 17)" in table
    assert "tensorflow 2.99.0, keras 3.99.0, numpy None" in table
    assert "vector instructions: avx2 avx512f fma sse4_1" in table


def test_seeds_report_missed_goal_and_missing_seed(tmp_path):
    report_lib = _load_seeds_report()
    run = str(tmp_path / "seed0")
    _fake_loop_output(run, 0, (0.980, 0.982, 0.979), (0.97, 0.98, 0.98), 1000.0)
    report = report_lib.build_report([run])
    assert not report["goals"]["round1_test_error_vs_teacher"]["met"]
    assert not report["goals"]["round2_vs_round1_points"]["met"]
    assert not report["goals"]["seconds_per_run"]["met"]
    with pytest.raises(SystemExit, match="results.json is missing"):
        report_lib.main(["--output", str(tmp_path / "x.json"), str(tmp_path / "none")])


def test_seeds_report_as_a_user_runs_it(tmp_path):
    """The script as bench_demo_seeds.sh runs it: a subprocess, its status and output."""
    script = os.path.join(ROOT, "bench", "demo_seeds_report.py")
    run = str(tmp_path / "seed0")
    _fake_loop_output(run, 0, (0.980, 0.986, 0.988), (0.97, 0.98, 0.98), 800.0)
    output = str(tmp_path / "bench.json")
    proc = subprocess.run(
        [sys.executable, script, f"--output={output}", run], capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr
    assert f"Wrote {output}" in proc.stdout and "machine: " in proc.stdout
    with open(output) as f:
        assert json.load(f)["machine"]["python"] == platform.python_version()
    missing = str(tmp_path / "none")
    proc = subprocess.run(
        [sys.executable, script, f"--output={tmp_path / 'x.json'}", missing],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 1
    assert (
        "demo_seeds_report.py: error:" in proc.stderr and "results.json is missing" in proc.stderr
    )
    assert not os.path.exists(tmp_path / "x.json")


def test_bench_script_rejects_bad_seeds():
    env = dict(SEEDS="0 a", PYTHON=sys.executable)
    proc = run_bash("bench/bench_demo_seeds.sh", env, cwd=ROOT)
    assert proc.returncode != 0 and "'a' is not a non-negative integer" in proc.stderr
    bench_script = os.path.join(ROOT, "bench", "bench_demo_seeds.sh")
    assert subprocess.run(["bash", "-n", bench_script]).returncode == 0
