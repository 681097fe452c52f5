"""bench/bench_model.py as a user runs it: its last line is one JSON object of its figures."""

import json

import pytest
from conftest import run_script

pytestmark = [pytest.mark.slow, pytest.mark.e2e]


def test_small_image_bench_prints_json_last():
    result = run_script(
        "bench/bench_model.py",
        "--small_image_model",
        "--width_coefficient=0.1",
        "--depth_coefficient=0.1",
        "--num_classes=10",
        "--batch_size=4",
        "--steps=1",
        "--warmup=0",
        "--trials=1",
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["image_size"] == 32 and report["small_image_model"] is True
    assert (report["width_coefficient"], report["depth_coefficient"]) == (0.1, 0.1)
    assert report["num_classes"] == 10 and report["batch_size"] == 4
    for kind in ("train", "infer"):
        rates = report[f"{kind}_images_per_s"]
        assert rates["ours"] > 0 and rates["keras"] > 0
        assert abs(report[f"{kind}_vs_keras"] / (rates["ours"] / rates["keras"]) - 1) < 1e-2
