"""Broken inputs of the filter: every listed shard is attempted, each failure names its file.

Each failing shard of a `--shard_id` list must be reported with its file and
the reason, the others must still be filtered, the exit status must be
non-zero, and no output of an earlier run may be changed (tasks 2 and 3).
"""

import logging
import os
import re

import filter_helpers as fh
import numpy as np
import pytest
import tensorflow as tf
from conftest import snapshot

import file_names
import filter_stats
import filter_unlabel_data as fud
import tfrecords


def truncate(path, num_bytes=7):
    with open(path, "rb") as f:
        data = f.read()
    with open(path, "wb") as f:
        f.write(data[:-num_bytes])


def example(**features):
    return tf.train.Example(features=tf.train.Features(feature=features)).SerializeToString()


def error_lines(stderr):
    """The `shard N: ...` lines of the final error message, by shard."""
    lines = stderr.strip().splitlines()
    start = max(i for i, line in enumerate(lines) if line.startswith("filter_unlabel_data.py: "))
    return lines[start], {
        int(line.split(":")[0].split()[1]): line
        for line in lines[start + 1 :]
        if line.startswith("  shard ")
    }


@pytest.mark.slow
@pytest.mark.e2e
def test_pass_2_attempts_every_listed_shard(tmp_path):
    num_shards = 9
    dirs, _ = fh.make_dataset(tmp_path, num_shards, 12, num_workers=1)
    fh.run_both_passes(dirs, num_shards, 30)  # upsampling: every image is kept
    earlier = snapshot(dirs["out"])
    inp = {s: fh.input_file(dirs, s, num_shards) for s in range(num_shards)}
    pred = {
        s: file_names.prediction_path(dirs["pred"], s, num_shards, 0) for s in range(num_shards)
    }

    # Shard 0 (the one that saves samples): images that are not images.
    records = fh.raw_records(inp[0])
    tfrecords.write_tfrecord(
        inp[0], [example(**{"image/encoded": tfrecords.bytes_feature(b"no image")})] * len(records)
    )
    truncate(inp[1])  # a truncated input shard
    truncate(pred[2])  # a truncated prediction file
    # Shard 3: input record 4 lost its image.
    records = fh.raw_records(inp[3])
    records[4] = example(**{"image/class/label": tfrecords.int64_feature(0)})
    tfrecords.write_tfrecord(inp[3], records)
    # Shard 4: prediction record 5 has 3 probabilities.
    records = fh.raw_records(pred[4])
    records[5] = tfrecords.prediction_example([0.5, 0.3, 0.2]).SerializeToString()
    tfrecords.write_tfrecord(pred[4], records)
    # Shard 5: predicted again by another checkpoint after pass 1.
    fh.write_info(dirs, 5, num_shards, 0, 12, fh.checkpoint("other", step=7))
    # Shard 6: a prediction record without probabilities.
    records = fh.raw_records(pred[6])
    records[0] = example(classes=tfrecords.int64_feature(1))
    tfrecords.write_tfrecord(pred[6], records)
    # Shard 7 is fine.
    os.remove(file_names.filtered_path(dirs["out"], 0, 7, num_shards))
    os.remove(file_names.filter_stats_path(dirs["out"], 7, 0))
    # Shard 8: one input record more than when it was predicted.
    tfrecords.write_tfrecord(inp[8], fh.raw_records(inp[8]) + fh.raw_records(inp[8])[:1])
    # The info files of the shards with damaged inputs say nothing of the
    # input's size (old info files), so the records themselves are checked.
    for shard in (0, 1, 3):
        fh.write_info(dirs, shard, num_shards, 0, 12, provenance=None)

    shard_ids = ",".join(map(str, range(num_shards)))
    result = fh.run_script(fh.cli_args(dirs, num_shards, shard_id=shard_ids, num_image=30))
    assert result.returncode == 1, result.stderr[-3000:]
    head, lines = error_lines(result.stderr)
    assert head.endswith("8 of 9 shards failed, shard ids 0,1,2,3,4,5,6,8:")
    assert re.search(
        rf"{re.escape(inp[0])}: record \d+: 'image/encoded' is not a decodable image", lines[0]
    )
    assert inp[1] in lines[1] and "truncated or corrupt TFRecord data" in lines[1]
    assert pred[2] in lines[2] and "truncated or corrupt TFRecord data" in lines[2]
    assert f"{inp[3]}: record 4 has no 'image/encoded' feature" in lines[3]
    assert f"{pred[4]}: record 5 has 3 probabilities, expected --num_label_classes=4" in lines[4]
    assert file_names.info_path(dirs["info"], 5, num_shards, 0) in lines[5]
    assert "/ckpt/other/ckpt-7 (step 7" in lines[5] and "/ckpt/teacher/ckpt-100" in lines[5]
    assert f"{pred[6]}: record 0 has no 'probabilities' feature" in lines[6]
    assert file_names.info_path(dirs["info"], 8, num_shards, 0) in lines[8]
    assert f"but {inp[8]} has {os.path.getsize(inp[8])} bytes" in lines[8]
    assert "the input changed after prediction" in lines[8]
    assert "Traceback" not in result.stderr

    # Shard 7 was filtered; the failed shards keep their earlier outputs,
    # byte for byte, and no temporary file is left anywhere.
    after = snapshot(dirs["out"])
    assert os.path.exists(file_names.filtered_path(dirs["out"], 0, 7, num_shards))
    assert {k: v for k, v in after.items() if "00007" not in k and "_7_" not in k} == {
        k: v for k, v in earlier.items() if "00007" not in k and "_7_" not in k
    }
    assert not [name for name in after if ".tmp" in name]
    assert sorted(os.listdir(dirs["out"])) == sorted(
        ["data", "stats", "samples", "threshold.json", "num_image_across_cat.json"]
    )


@pytest.mark.slow
@pytest.mark.e2e
def test_pass_1_attempts_every_listed_shard(tmp_path):
    num_shards = 5
    dirs, _ = fh.make_dataset(tmp_path, num_shards, 10, num_workers=2)
    pred = {
        s: file_names.prediction_path(dirs["pred"], s, num_shards, 1) for s in range(num_shards)
    }
    truncate(pred[0])
    records = fh.raw_records(pred[1])
    records[2] = example(classes=tfrecords.int64_feature(1))
    tfrecords.write_tfrecord(pred[1], records)
    with open(file_names.info_path(dirs["info"], 2, num_shards, 0), "w") as f:
        f.write('{"image_num": ')  # cut off
    fh.write_info(dirs, 3, num_shards, 1, 5, fh.checkpoint("other"))
    # An earlier, complete pass-1 file of a failing shard stays as it was.
    fh.run_pass1(dirs, num_shards, shards=[4])
    os.rename(
        file_names.prelim_stats_path(dirs["prelim"], 4, 0),
        file_names.prelim_stats_path(dirs["prelim"], 0, 0),
    )
    earlier = snapshot(dirs["prelim"])

    result = fh.run_script(fh.cli_args(dirs, num_shards, shard_id="0,1,2,3,4", only_get_stats=1))
    assert result.returncode == 1, result.stderr[-3000:]
    head, lines = error_lines(result.stderr)
    assert head.endswith("4 of 5 shards failed, shard ids 0,1,2,3:")
    assert pred[0] in lines[0] and "truncated or corrupt TFRecord data" in lines[0]
    assert f"{pred[1]}: record 2 has no 'probabilities' feature" in lines[1]
    assert "cannot read prediction info file" in lines[2]
    assert file_names.info_path(dirs["info"], 2, num_shards, 0) in lines[2]
    assert "2 different checkpoints" in lines[3] and "worker 1" in lines[3]
    assert "Traceback" not in result.stderr
    after = snapshot(dirs["prelim"])
    assert sorted(after) == ["prelim_stats_00000_0.json", "prelim_stats_00004_0.json"]
    assert after["prelim_stats_00000_0.json"] == earlier["prelim_stats_00000_0.json"]


def test_a_single_broken_shard_names_its_file(tmp_path):
    dirs, _ = fh.make_dataset(tmp_path, 1, 8, num_workers=1)
    fh.run_pass1(dirs, 1)
    path = fh.input_file(dirs, 0, 1)
    with open(path, "wb") as f:
        f.write(b"this is not a TFRecord file")
    fh.write_info(dirs, 0, 1, 0, 8, provenance=None)  # no input size to compare with
    selection = fh.select(dirs, 1, 4)
    with pytest.raises(fud.FilterError) as error:
        fud.filter_shard(fh.files_of(dirs, 1), 0, selection)
    assert str(error.value).startswith(f"{path}: truncated or corrupt TFRecord data after 0")
    # Only the selection's files, written before any shard: no data, stats or samples.
    assert sorted(snapshot(dirs["out"])) == ["num_image_across_cat.json", "threshold.json"]
    assert not os.path.exists(os.path.join(dirs["out"], "samples"))


def test_corrupt_stats_json_names_the_file(tmp_path):
    dirs, _ = fh.make_dataset(tmp_path, 2, 6, num_workers=1)
    fh.run_pass1(dirs, 2)
    path = file_names.prelim_stats_path(dirs["prelim"], 1, 0)
    with open(path, "w") as f:
        f.write("{")
    with pytest.raises(fud.FilterError, match="cannot read pass-1 stats file") as error:
        fh.select(dirs, 2, 4)
    assert path in str(error.value)


# ---------------------------------------------------------------------------
# Classes without images (task 3).


def test_a_class_without_images_is_warned_about(tmp_path, caplog):
    dirs, _ = fh.make_dataset(tmp_path, 1, 30, num_workers=1)
    # Class 3's images are all below the threshold: 0.3 and 0.45 only.
    probs = [fh.probs_for(c, 0.95) for c in (0, 1, 2) for _ in range(8)]
    probs += [fh.probs_for(3, 0.3)] * 3 + [fh.probs_for(3, 0.45)] * 3
    fh.write_predictions(dirs, 0, 1, np.array(probs), 1)
    with caplog.at_level(logging.WARNING):
        (stats,) = fh.run_both_passes(dirs, 1, 8, min_threshold=0.5)
    assert "class 3 keeps no image: 6 images are predicted as class 3" in caplog.text
    assert "1 of 4 classes keep no image: 3" in caplog.text
    assert "3" not in stats["after_balancing"] and stats["num_output_records"] == 24


@pytest.mark.slow
@pytest.mark.e2e
def test_no_kept_image_at_all_is_an_error(tmp_path):
    dirs, _ = fh.make_dataset(tmp_path, 2, 6, num_workers=1)
    for shard in range(2):
        fh.write_predictions(dirs, shard, 2, np.array([fh.probs_for(shard, 0.6)] * 6), 1)
    fh.run_pass1(dirs, 2)
    result = fh.run_script(fh.cli_args(dirs, 2, shard_id="0,1", num_image=4, min_threshold=0.7))
    assert result.returncode == 1, result.stderr[-3000:]
    assert result.stderr.strip().splitlines()[-1] == (
        "filter_unlabel_data.py: error: no image would be kept: none of the 12 predictions has a "
        "top-1 probability in [--min_threshold=0.7, --max_prob=2.0]. Lower --min_threshold, or "
        "train the teacher longer."
    )
    assert not os.path.exists(dirs["out"])


def test_downsampling_to_nothing_is_an_error(tmp_path):
    """With num_image=1 and 12 images each kept with probability 1/12, some seed keeps none."""
    dirs, _ = fh.make_dataset(tmp_path, 1, 12, num_workers=1)
    fh.write_predictions(dirs, 0, 1, np.array([fh.probs_for(0, 0.9)] * 12), 1)
    fh.run_pass1(dirs, 1)
    selection = fh.select(dirs, 1, 1)
    for seed in range(50):
        uniforms = filter_stats.record_uniforms(seed, 0, np.arange(12))
        if (uniforms >= 1 / 12).all():
            break
    else:
        pytest.fail("no seed keeps nothing")
    with pytest.raises(fud.FilterError, match="no shard of .* kept any image"):
        fud.filter_shard(fh.files_of(dirs, 1), 0, selection, seed=seed)
    # The shard's own (empty) output is complete; only the final stats are missing.
    assert fh.read_records(file_names.filtered_path(dirs["out"], 0, 0, 1)) == []
    assert not os.path.exists(os.path.join(dirs["out"], "stats", "final_stats.json"))
