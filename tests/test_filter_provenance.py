"""Which checkpoint labeled the data: provenance through both filter passes (task 1)."""

import logging
import os

import filter_helpers as fh
import numpy as np
import pytest
from conftest import snapshot

import atomic_files
import file_names
import filter_stats
import filter_unlabel_data as fud

STALE = fh.checkpoint("old_teacher", step=40)


def recorded(provenance):
    """The provenance as the filter stores it (the keys it keeps)."""
    return {k: provenance[k] for k in ("checkpoint", "global_step", "fingerprint", "use_ema")}


def test_provenance_is_recorded_in_every_stats_file(tmp_path):
    dirs, _ = fh.make_dataset(tmp_path, 2, 12, num_workers=2)
    fh.run_both_passes(dirs, 2, 4)
    for shard in range(2):
        prelim = atomic_files.read_json(file_names.prelim_stats_path(dirs["prelim"], shard, 0))
        assert prelim.pop("provenance") == recorded(fh.TEACHER)
        assert all(uid.isdigit() for uid in prelim)  # the published layout otherwise
        assert atomic_files.read_json(file_names.filter_stats_path(dirs["out"], shard, 0))[
            "provenance"
        ] == recorded(fh.TEACHER)
    assert atomic_files.read_json(os.path.join(dirs["out"], "threshold.json"))["provenance"] == (
        recorded(fh.TEACHER)
    )
    final = atomic_files.read_json(os.path.join(dirs["out"], "stats", "final_stats.json"))
    assert final["provenance"] == recorded(fh.TEACHER)
    # total_counts.json keeps the published {uid: bins} layout (loop_report.py sums it).
    assert all(
        uid.isdigit()
        for uid in atomic_files.read_json(os.path.join(dirs["prelim"], "total_counts.json"))
    )


def test_old_info_files_are_accepted_with_a_warning(tmp_path, caplog):
    dirs, truth = fh.make_dataset(tmp_path, 2, 12, num_workers=1, provenance=None)
    with caplog.at_level(logging.WARNING):
        stats = fh.run_both_passes(dirs, 2, 4)
    assert "do not say which checkpoint predicted" in caplog.text
    assert sum(s["num_output_records"] for s in stats) > 0
    assert "provenance" not in atomic_files.read_json(
        file_names.prelim_stats_path(dirs["prelim"], 0, 0)
    )
    assert "provenance" not in atomic_files.read_json(os.path.join(dirs["out"], "threshold.json"))
    final = atomic_files.read_json(os.path.join(dirs["out"], "stats", "final_stats.json"))
    assert final["provenance"] is None


def test_describe_provenance():
    assert filter_stats.describe_provenance(recorded(STALE)) == (
        f"/ckpt/old_teacher/ckpt-40 (step 40, fingerprint {STALE['fingerprint'][:12]}, EMA weights)"
    )
    unknown_step = dict(recorded(fh.TEACHER), global_step=-1, use_ema=None)
    assert "(step unknown, fingerprint" in filter_stats.describe_provenance(unknown_step)


def test_workers_of_one_shard_from_two_checkpoints_fail_pass_1(tmp_path):
    dirs, _ = fh.make_dataset(tmp_path, 1, 10, num_workers=2)
    fh.write_info(dirs, 0, 1, 1, 5, STALE)
    with pytest.raises(fud.FilterError) as error:
        fud.count_shard(fh.files_of(dirs, 1), 0, fh.NUM_CLASSES)
    message = str(error.value)
    assert "2 different checkpoints" in message
    assert "/ckpt/teacher/ckpt-100 (step 100" in message and "worker 0" in message
    assert "/ckpt/old_teacher/ckpt-40 (step 40" in message and "worker 1" in message


def test_ema_and_raw_weights_of_one_checkpoint_count_as_different(tmp_path):
    dirs, _ = fh.make_dataset(tmp_path, 1, 10, num_workers=2)
    fh.write_info(dirs, 0, 1, 1, 5, dict(fh.TEACHER, use_ema=False))
    with pytest.raises(fud.FilterError, match="EMA weights.*raw weights"):
        fud.count_shard(fh.files_of(dirs, 1), 0, fh.NUM_CLASSES)


def test_malformed_provenance_names_the_info_file(tmp_path):
    dirs, _ = fh.make_dataset(tmp_path, 1, 4, num_workers=1)
    info = file_names.info_path(dirs["info"], 0, 1, 0)
    atomic_files.write_json(info, {"image_num": 4, "provenance": {"checkpoint": "/ckpt/x"}})
    with pytest.raises(fud.FilterError, match="non-empty 'fingerprint'") as error:
        fud.count_shard(fh.files_of(dirs, 1), 0, fh.NUM_CLASSES)
    assert info in str(error.value)


@pytest.mark.slow
@pytest.mark.e2e
def test_prelim_stats_of_two_checkpoints_stop_pass_2(tmp_path):
    """The CLI exits non-zero before writing anything, naming both checkpoints and a shard of each."""
    dirs, _ = fh.make_dataset(tmp_path, 3, 10, num_workers=1)
    # Shard 2 was predicted again by an older checkpoint, and counted again.
    probs = np.array([fh.probs_for(1, 0.9)] * 10)
    fh.write_predictions(dirs, 2, 3, probs, 1, STALE)
    fh.run_pass1(dirs, 3)
    with pytest.raises(fud.FilterError, match="2 different checkpoints"):
        fh.select(dirs, 3, 4)
    before = snapshot(dirs["prelim"])

    result = fh.run_script(fh.cli_args(dirs, 3, shard_id="0,1,2", num_image=4))
    assert result.returncode == 1, result.stderr[-3000:]
    message = result.stderr.strip().splitlines()[-1]
    assert message.startswith("filter_unlabel_data.py: error: the pass-1 stats come from 2 ")
    assert "/ckpt/teacher/ckpt-100 (step 100" in message
    assert f"shard 0 ({file_names.prelim_stats_path(dirs['prelim'], 0, 0)})" in message
    assert "/ckpt/old_teacher/ckpt-40 (step 40" in message
    assert f"shard 2 ({file_names.prelim_stats_path(dirs['prelim'], 2, 0)})" in message
    assert not os.path.exists(dirs["out"])
    assert snapshot(dirs["prelim"]) == before


def test_predictions_changed_after_pass_1_fail_their_shard(tmp_path):
    """Info files of another checkpoint than the pass-1 stats: that shard fails, the others run."""
    dirs, _ = fh.make_dataset(tmp_path, 2, 10, num_workers=1)
    fh.run_pass1(dirs, 2)
    fh.write_info(dirs, 1, 2, 0, 10, STALE)
    selection = fh.select(dirs, 2, 4)
    assert selection.provenance == recorded(fh.TEACHER)
    files = fh.files_of(dirs, 2)
    with pytest.raises(fud.FilterError) as error:
        fud.filter_shard(files, 1, selection)
    message = str(error.value)
    assert f"shard 1 ({file_names.info_path(dirs['info'], 1, 2, 0)})" in message
    assert "/ckpt/old_teacher/ckpt-40 (step 40" in message
    assert "/ckpt/teacher/ckpt-100 (step 100" in message
    assert f"shard 0 ({file_names.prelim_stats_path(dirs['prelim'], 0, 0)})" in message
    assert not os.path.exists(file_names.filtered_path(dirs["out"], 0, 1, 2))
    # Shard 0 is fine; final stats wait for shard 1.
    fud.filter_shard(files, 0, selection)
    assert os.path.exists(file_names.filtered_path(dirs["out"], 0, 0, 2))
    assert not os.path.exists(os.path.join(dirs["out"], "stats", "final_stats.json"))


def test_final_stats_ignore_stats_files_of_another_run(tmp_path):
    """A re-run with other settings does not mix its counts with a not yet rewritten shard."""
    dirs, _ = fh.make_dataset(tmp_path, 2, 20, num_workers=1)
    fh.run_both_passes(dirs, 2, 6)
    final_path = os.path.join(dirs["out"], "stats", "final_stats.json")
    os.remove(final_path)
    selection = fh.select(dirs, 2, 9)
    files = fh.files_of(dirs, 2)
    fud.filter_shard(files, 0, selection)
    assert not os.path.exists(final_path)  # shard 1's stats are from the num_image=6 run
    fud.filter_shard(files, 1, selection)
    final = atomic_files.read_json(final_path)
    assert final["total_cnt"] == sum(
        atomic_files.read_json(file_names.filter_stats_path(dirs["out"], s, 0))[
            "num_output_records"
        ]
        for s in (0, 1)
    )
