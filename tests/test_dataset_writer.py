"""dataset_writer.py: shards, completion marks, resuming, the shared flags of the proc scripts."""

import os

import pytest
import tensorflow as tf
from conftest import run_script

import atomic_files
import dataset_writer
import file_names
import progress_log
import task_info
import tfrecords


def records_of(paths):
    return [r.numpy() for r in tf.data.TFRecordDataset(paths)]


def test_streamed_writer_replaces_outputs_only_when_complete(tmp_path):
    out = tmp_path / "proc"
    paths = dataset_writer.shard_paths(str(out), "extra", 2)
    assert paths == [file_names.unlabeled_shard_path(str(out), i, 2) for i in range(2)]
    dataset_writer.write_streamed(iter([b"a", b"b", b"c"]), str(out), "extra", 2, 3)
    stale = file_names.unlabeled_shard_path(str(out), 0, 5)
    tfrecords.write_tfrecord(stale, [b"old"])

    def failing():
        yield b"x"
        yield b"y"
        raise ValueError("source broke")

    with pytest.raises(ValueError, match="source broke"):
        dataset_writer.write_streamed(failing(), str(out), "extra", 2, 3)
    assert records_of(paths) == [b"a", b"b", b"c"]
    assert sorted(os.listdir(out / "unlabeled")) == sorted(
        os.path.basename(p) for p in paths + [stale]
    )
    with pytest.raises(RuntimeError, match="the source ended at 2"):
        dataset_writer.write_streamed(iter([b"x", b"y"]), str(out), "extra", 2, 3)
    assert records_of(paths) == [b"a", b"b", b"c"]
    # A complete write replaces the shards and removes those of another count.
    dataset_writer.write_streamed(iter([b"d", b"e", b"f"]), str(out), "extra", 2, 3)
    assert records_of(paths) == [b"d", b"e", b"f"]
    assert sorted(os.listdir(out / "unlabeled")) == sorted(os.path.basename(p) for p in paths)


def test_write_shards_keeps_finished_shards_when_asked(tmp_path):
    out = str(tmp_path)
    asked = []

    def shard_records(shard):
        asked.append(shard)
        return [f"{shard}-{i}".encode() for i in range(shard + 1)]

    paths = dataset_writer.shard_paths(out, "train", 3)
    # Shards of another count and temporary files of a killed run go.
    tfrecords.write_tfrecord(file_names.labeled_shard_path(out, "train", 0, 7), [b"old"])
    open(paths[1] + ".tmp123", "w").close()
    assert dataset_writer.write_shards(out, "train", 3, shard_records) == 6
    assert asked == [0, 1, 2]
    assert sorted(os.listdir(out)) == sorted(os.path.basename(p) for p in paths)

    os.remove(paths[1])
    asked.clear()
    progress = progress_log.Progress(6, "images")
    total = dataset_writer.write_shards(
        out, "train", 3, shard_records, progress=progress, keep_finished=True
    )
    assert (total, asked, progress.done) == (6, [1], 6)
    assert records_of(paths) == [b"0-0", b"1-0", b"1-1", b"2-0", b"2-1", b"2-2"]
    asked.clear()
    assert dataset_writer.write_shards(out, "train", 3, shard_records) == 6
    assert asked == [0, 1, 2]
    with pytest.raises(ValueError, match="num_shards for train must be >= 1"):
        dataset_writer.write_shards(out, "train", 0, shard_records)


def test_settings_first_dataset_info_last(tmp_path):
    out = str(tmp_path / "proc")
    settings = {"source": "test", "num_shards": {"train": 1}}
    assert not dataset_writer.begin_output(out, settings)
    assert atomic_files.read_json(os.path.join(out, dataset_writer.SETTINGS_FILE)) == settings
    dataset_writer.write_shards(out, "train", 1, lambda shard: [b"r"])
    assert dataset_writer.complete_output_counts(out, {"train": 1}, settings) is None
    dataset_writer.finish_output(out, {"train": 1})
    assert dataset_writer.complete_output_counts(out, {"train": 1}, settings) == {"train": 1}
    assert dataset_writer.complete_output_counts(out, {"train": 1}, settings, True) is None
    other = dict(settings, source="other")
    assert dataset_writer.complete_output_counts(out, {"train": 1}, other) is None
    # The same settings again: the shards there belong to this output.
    assert dataset_writer.begin_output(out, settings)
    assert not os.path.exists(os.path.join(out, task_info.DATASET_INFO_FILE))
    assert not dataset_writer.begin_output(out, other)


@pytest.mark.slow
@pytest.mark.e2e
@pytest.mark.parametrize(
    "script, present, absent",
    [
        (
            "proc_svhn.py",
            ["--output_dir:", "--num_extra_shards:", "(default: '100')", "--[no]overwrite:"],
            ["--num_validation_shards"],
        ),
        (
            "proc_mnist.py",
            ["--output_dir:", "--num_dev_shards:", "--jpeg_quality:", "--cache_dir:"],
            ["--num_unlabeled_shards"],
        ),
        (
            "proc_imagenet.py",
            ["(default: 'data/imagenet/proc')", "(default: '1024')", "--num_unlabeled_shards:"],
            ["--jpeg_quality", "--num_extra_shards"],
        ),
    ],
)
def test_help_lists_the_shared_writer_flags(script, present, absent):
    result = run_script(script, "--help")
    # absl exits 1 after printing the help of the script's own (key) flags.
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr[-3000:]
    for text in present:
        assert text in result.stdout, text
    for text in absent:
        assert text not in result.stdout, text
