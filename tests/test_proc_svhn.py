"""Tests of proc_svhn.py on tiny generated .mat files and mocked TFDS data (no network)."""

import glob
import json
import os

import numpy as np
import pytest
import scipy.io
import tensorflow as tf
import tensorflow_datasets as tfds
from conftest import forbid_call, run_script, shard_flags, snapshot

import dataset_writer
import proc_svhn
import task_info

SIZES = {"train": 40, "test": 20, "extra": 30}
SHARDS = {"train": 3, "dev": 2, "test": 2, "extra": 4}
NUM_DEV = 8


def make_images(split, n):
    """Smooth images that JPEG keeps within a few levels, each unique in its split.

    Red encodes the index (steps of 5 survive JPEG), green the split, blue a
    gradient so the images are not flat.
    """
    code = {"train": 40, "test": 120, "extra": 200}[split]
    images = np.zeros([n, 32, 32, 3], np.uint8)
    images[..., 0] = (5 * np.arange(n))[:, None, None]
    images[..., 1] = code
    images[..., 2] = np.linspace(0, 240, 32).astype(np.uint8)[None, None, :]
    return images


def make_labels(n, seed):
    # 1..10 as in the .mat files, where 10 is digit 0; every class present.
    labels = np.arange(n) % 10 + 1
    return np.random.RandomState(seed).permutation(labels)


def write_mat_files(folder, sizes=SIZES):
    """Writes {split}_32x32.mat with the real layout: X [32, 32, 3, N], y [N, 1]."""
    os.makedirs(folder, exist_ok=True)
    source = {}
    for seed, (split, n) in enumerate(sizes.items()):
        images, labels = make_images(split, n), make_labels(n, seed)
        scipy.io.savemat(
            os.path.join(folder, f"{split}_32x32.mat"),
            {"X": np.transpose(images, [1, 2, 3, 0]), "y": labels.reshape(-1, 1).astype(np.uint8)},
        )
        source[split] = (images, labels % 10)
    return source


def read_records(paths):
    """[(decoded image, stored label, tf.train.Example)] of the files in order."""
    records = []
    for path in paths:
        for raw in tf.data.TFRecordDataset(path):
            example = tf.train.Example.FromString(raw.numpy())
            feature = example.features.feature
            image = tf.io.decode_jpeg(feature["image/encoded"].bytes_list.value[0]).numpy()
            records.append((image, feature["image/class/label"].int64_list.value[0], example))
    return records


def read_subset(out, subset, num_shards):
    return read_records(dataset_writer.shard_paths(str(out), subset, num_shards))


def index_of(image):
    """The source index encoded in the red channel by make_images."""
    return int(round(image[..., 0].astype(np.float64).mean() / 5))


@pytest.fixture(scope="module")
def mat_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("raw")
    return str(folder), write_mat_files(str(folder))


def run_svhn(
    out, raw_data_dir=None, tfds_data_dir=None, num_shards=SHARDS, overwrite=False, **settings
):
    """process_svhn with `settings` as SvhnSettings fields."""
    writer = dataset_writer.WriterOptions(num_shards=num_shards, overwrite=overwrite)
    settings = proc_svhn.SvhnSettings(**settings)
    return proc_svhn.process_svhn(str(out), settings, writer, raw_data_dir, tfds_data_dir)


def run_mat(out, raw, num_dev=NUM_DEV, **kwargs):
    return run_svhn(out, source="mat", raw_data_dir=raw, num_dev=num_dev, **kwargs)


def test_mat_source_writes_the_layout(mat_dir, tmp_path):
    raw, source = mat_dir
    counts = run_mat(tmp_path, raw)
    expected = {"train": 40 - NUM_DEV, "dev": NUM_DEV, "test": 20, "extra": 30}
    assert counts == expected
    assert task_info.read_dataset_info(str(tmp_path)) == expected

    names = sorted(
        os.path.relpath(p, tmp_path) for p in glob.glob(f"{tmp_path}/**/*-of-*", recursive=True)
    )
    assert names == sorted(
        [f"train-{i:05d}-of-00003" for i in range(3)]
        + [f"dev-{i:05d}-of-00002" for i in range(2)]
        + [f"test-{i:05d}-of-00002" for i in range(2)]
        + [f"unlabeled/extra-{i:05d}-of-00004" for i in range(4)]
    )

    # dev is the first NUM_DEV of a seed-0 shuffle of train, train the rest,
    # in that order (as published).
    perm = np.random.RandomState(0).permutation(40)
    train = read_subset(tmp_path, "train", 3)
    dev = read_subset(tmp_path, "dev", 2)
    assert [index_of(im) for im, _, _ in dev] == perm[:NUM_DEV].tolist()
    assert [index_of(im) for im, _, _ in train] == perm[NUM_DEV:].tolist()

    for subset, records, split in (
        ("train", train, "train"),
        ("dev", dev, "train"),
        ("test", None, "test"),
    ):
        records = records if records is not None else read_subset(tmp_path, subset, 2)
        images, labels = source[split]
        seen = []
        for image, label, _ in records:
            i = index_of(image)
            seen.append(i)
            assert image.shape == (32, 32, 3)
            assert np.abs(image.astype(int) - images[i]).mean() < 2.0
            # 1-based: class + 1, where .mat label 10 is class 0 and stored as 1.
            assert label == labels[i] + 1
        assert len(set(seen)) == len(seen)
    assert sorted(index_of(im) for im, _, _ in read_subset(tmp_path, "test", 2)) == list(range(20))
    # Digit 0 (label 10 in the .mat) is present and stored as 1.
    assert 1 in {label for _, label, _ in train + dev}


def test_mat_unlabeled_records(mat_dir, tmp_path):
    raw, source = mat_dir
    run_mat(tmp_path, raw)
    extra = read_subset(tmp_path, "extra", 4)
    assert sorted(index_of(im) for im, _, _ in extra) == list(range(30))
    for image, label, example in extra:
        feature = example.features.feature
        # As published: the true label + 1 (training never reads it; the
        # filter reports the accuracy of the pseudo labels with it).
        assert label == source["extra"][1][index_of(image)] + 1
        assert list(feature["probabilities"].float_list.value) == [0.0] * 10
        assert feature["label"].int64_list.value[0] == 0
        assert feature["prob"].float_list.value[0] == 0.0
        assert np.abs(image.astype(int) - source["extra"][0][index_of(image)]).mean() < 2.0


def test_rerun_skips_and_settings_change_rewrites(mat_dir, tmp_path, monkeypatch):
    raw, _ = mat_dir
    first = run_mat(tmp_path, raw)
    # The output is complete: the data is not even loaded.
    forbid_call(monkeypatch, proc_svhn, "load_svhn_mat")
    assert run_mat(tmp_path, raw) == first
    with pytest.raises(AssertionError):
        run_mat(tmp_path, raw, overwrite=True)
    monkeypatch.undo()

    # Other options or shard counts rewrite, and old shards are removed.
    counts = run_mat(tmp_path, raw, num_dev=4, num_shards=dict(SHARDS, train=2))
    assert counts["dev"] == 4 and counts["train"] == 36
    assert sorted(os.path.basename(p) for p in glob.glob(f"{tmp_path}/train-*")) == [
        "train-00000-of-00002",
        "train-00001-of-00002",
    ]


def test_incomplete_output_is_rewritten(mat_dir, tmp_path):
    raw, _ = mat_dir
    run_mat(tmp_path, raw)
    os.remove(os.path.join(tmp_path, "test-00001-of-00002"))
    # A temp file of a killed run must not survive next to the shards.
    open(os.path.join(tmp_path, "dev-00000-of-00002.tmp123"), "w").close()
    run_mat(tmp_path, raw)
    assert os.path.exists(os.path.join(tmp_path, "test-00001-of-00002"))
    assert not glob.glob(f"{tmp_path}/*.tmp*")


def test_full_train_data_uses_test_as_dev(mat_dir, tmp_path):
    raw, _ = mat_dir
    counts = run_mat(tmp_path, raw, full_train_data=True)
    assert counts == {"train": 40, "dev": 20, "test": 20, "extra": 30}
    assert sorted(index_of(im) for im, _, _ in read_subset(tmp_path, "train", 3)) == list(range(40))
    dev_green = {int(round(im[..., 1].mean())) for im, _, _ in read_subset(tmp_path, "dev", 2)}
    assert dev_green == {120}  # the test images


def test_missing_mat_file_is_named(tmp_path):
    write_mat_files(str(tmp_path), {"train": 12, "test": 5})
    with pytest.raises(FileNotFoundError, match="extra_32x32.mat"):
        run_mat(tmp_path / "out", str(tmp_path), num_dev=2, num_shards=None)


def test_corrupt_mat_file(tmp_path):
    path = tmp_path / "train_32x32.mat"
    path.write_bytes(b"not a mat file at all")
    with pytest.raises(ValueError, match="train_32x32.mat"):
        proc_svhn.load_mat_split(str(path))


def test_tfds_source_restores_mat_order(tmp_path):
    """TFDS stores records shuffled; the `id` feature gives back the .mat order."""
    sizes = {"train": 24, "test": 10, "extra": 12}
    data = {split: (make_images(split, n), make_labels(n, 3) % 10) for split, n in sizes.items()}

    def as_dataset(self, split, *args, **kwargs):
        del self, args, kwargs
        images, labels = data[split]
        shuffled = np.random.RandomState(7).permutation(len(labels))
        return tf.data.Dataset.from_tensor_slices(
            {
                "image": images[shuffled],
                "label": labels[shuffled],
                "id": [f"{split}_{i:06d}".encode() for i in shuffled],
            }
        )

    with tfds.testing.mock_data(as_dataset_fn=as_dataset):
        counts = run_svhn(tmp_path, source="tfds", tfds_data_dir=str(tmp_path / "tfds"), num_dev=4)
    assert counts == {"train": 20, "dev": 4, "test": 10, "extra": 12}
    perm = np.random.RandomState(0).permutation(24)
    dev = read_subset(tmp_path, "dev", 2)
    assert [index_of(im) for im, _, _ in dev] == perm[:4].tolist()
    for image, label, _ in dev + read_subset(tmp_path, "train", 3):
        assert label == data["train"][1][index_of(image)] + 1


def test_tfds_source_random_mock_data(tmp_path):
    # Random ids (no .mat order to restore): TFDS order is kept.
    with tfds.testing.mock_data(num_examples=12):
        counts = run_svhn(tmp_path, source="tfds", num_dev=3)
    assert counts == {"train": 9, "dev": 3, "test": 12, "extra": 12}
    labels = [label for _, label, _ in read_subset(tmp_path, "train", 3)]
    assert all(1 <= label <= 10 for label in labels)


def run_mat_script(raw, out, *args):
    """proc_svhn.py --source=mat on the .mat files in `raw`, writing to `out`."""
    return run_script(
        "proc_svhn.py", "--source=mat", f"--raw_data_dir={raw}", f"--output_dir={out}", *args
    )


@pytest.mark.slow
@pytest.mark.e2e
def test_script_main(mat_dir, tmp_path):
    raw, _ = mat_dir
    out = tmp_path / "out"
    result = run_mat_script(raw, out, "--num_dev=5", *shard_flags(train=2, dev=1, test=1, extra=2))
    assert result.returncode == 0, result.stderr[-3000:]
    with open(out / task_info.DATASET_INFO_FILE) as f:
        assert json.load(f) == {"train": 35, "dev": 5, "test": 20, "extra": 30}
    assert os.path.exists(out / "unlabeled" / "extra-00001-of-00002")


@pytest.mark.slow
@pytest.mark.e2e
@pytest.mark.parametrize(
    "damage, reason",
    [("garbage", "Cannot read"), ("truncated", "truncated or corrupt")],
)
def test_script_names_a_corrupt_mat_file(mat_dir, tmp_path, damage, reason):
    """A broken .mat stops the script with its name; an earlier output stays as it was."""
    raw, _ = mat_dir
    broken = tmp_path / "raw"
    broken.mkdir()
    for split in proc_svhn.SVHN_MAT_SPLITS:
        with open(os.path.join(raw, f"{split}_32x32.mat"), "rb") as f:
            data = f.read()
        if split == "extra":
            data = b"MATLAB 5.0 MAT-file, garbage" * 9 if damage == "garbage" else data[:-100]
        (broken / f"{split}_32x32.mat").write_bytes(data)
    out = tmp_path / "out"
    run_mat(out, raw)
    earlier = snapshot(out)
    result = run_mat_script(broken, out, "--num_dev=3")
    assert result.returncode == 1, result.stderr[-3000:]
    message = result.stderr.strip().splitlines()[-1]
    assert message.startswith(f"proc_svhn.py: error: Cannot read {broken}/extra_32x32.mat")
    assert reason in message and "Traceback" not in result.stderr
    assert snapshot(out) == earlier
