"""bench/bench_precision.py as a user runs it: rates per precision, the JSON line last."""

import json

import pytest
from conftest import run_script

pytestmark = [pytest.mark.slow, pytest.mark.e2e]


def test_unknown_precision_is_named(tmp_path):
    result = run_script(
        "bench/bench_precision.py", "--precisions=float32,float8", f"--work_dir={tmp_path}"
    )
    assert result.returncode == 1
    assert "--precisions: expected some of ('float32', 'bfloat16', 'float16'), got ['float8']" in (
        result.stderr
    )
    assert not list(tmp_path.iterdir())  # nothing generated


def test_tiny_run_prints_json_last(tmp_path):
    result = run_script(
        "bench/bench_precision.py",
        "--precisions=float32,float16",
        "--width_coefficient=0.1",
        "--depth_coefficient=0.1",
        "--batch_size=8",
        "--steps=6",
        "--log_steps=2",
        "--num_images=40",
        f"--work_dir={tmp_path}",
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    lines = result.stdout.strip().splitlines()
    assert "usable CPUs" in lines[0] and "bfloat16 ISA" in lines[0]
    report = json.loads(lines[-1])
    rates = report["images_per_s"]
    assert set(rates) == {"float32", "float16"} and min(rates.values()) > 0
    assert report["vs_float32"] == {"float16": round(rates["float16"] / rates["float32"], 3)}
    assert report["machine"]["cpu_count"] >= 1
    # Each precision trained in its own model_dir, as the flag says.
    for precision in ("float32", "float16"):
        with open(tmp_path / f"{precision}0" / "FLAGS.json") as f:
            assert json.load(f)["mixed_precision"] == precision
