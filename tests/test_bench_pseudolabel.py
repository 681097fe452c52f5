"""bench/bench_pseudolabel.py as a user runs it: its last line is one JSON object of its ratios."""

import json

import pytest
from conftest import run_script

pytestmark = [pytest.mark.slow, pytest.mark.e2e]


def test_bench_prints_ratios_json_last():
    result = run_script(
        "bench/bench_pseudolabel.py",
        "--image_size=32",
        "--batch_size=4",
        "--num_predict_images=8",
        "--trials=1",
        "--filter_small_records=200",
        "--filter_large_records=40",
        "--reassign_records=100",
        "--reassign_width=0.1",
        timeout=400,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    for key in ("filter_vs_copy_small", "filter_vs_copy_large", "reassign_vs_copy"):
        assert report[key] > 0, key
    assert report["predict_vs_keras"] > 0
    rates = report["reassign_records_per_s"]
    assert abs(report["reassign_vs_copy"] / (rates["reassign"] / rates["copy"]) - 1) < 1e-2
    small = report["filter_small"]["records_per_s"]
    assert abs(report["filter_vs_copy_small"] / (small["filter"] / small["copy"]) - 1) < 1e-2
