"""proc_folder.py: folders of mixed-format images (and TFDS) in, the usual layout out."""

import json
import os

import numpy as np
import pytest
import tensorflow as tf
from conftest import run_script, snapshot
from PIL import Image

import dataset_writer
import proc_folder
import task_info

CLASSES = ("b_dog", "a_cat", "c_bird")  # created in this order; labels follow sorted names


def _save(path, array, **kwargs):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.fromarray(array).save(path, **kwargs)


def smooth_image(rng, size, channels=3):
    """A smooth uint8 image away from 0 and 255: JPEG keeps it within a level or two."""
    corners = Image.fromarray(rng.integers(40, 216, (3, 3, channels), dtype=np.uint8).squeeze())
    return np.asarray(corners.resize(size[::-1], Image.BILINEAR))


def make_folders(root, per_class=4, seed=0):
    """Labeled class folders and a nested unlabeled folder in mixed formats.

    Returns:
      {path: expected RGB pixels} of every readable labeled image, and
      {path: expected pixels} of the unlabeled ones.
    """
    rng = np.random.default_rng(seed)
    labeled, unlabeled = {}, {}
    for name in CLASSES:
        for i in range(per_class):
            rgb = smooth_image(rng, (16 + i, 20))
            kind = i % 4
            if kind == 0:  # RGB JPEG: copied
                path = f"{root}/labeled/{name}/{i}.jpg"
                _save(path, rgb, quality=90)
                labeled[path] = np.asarray(Image.open(path).convert("RGB"))
            elif kind == 1:  # RGB PNG in a nested folder
                path = f"{root}/labeled/{name}/sub/{i}.png"
                _save(path, rgb)
                labeled[path] = rgb
            elif kind == 2:  # grayscale PNG
                path = f"{root}/labeled/{name}/{i}.png"
                _save(path, rgb[..., 0])
                labeled[path] = np.repeat(rgb[..., :1], 3, axis=-1)
            else:  # 16-bit grayscale PNG
                path = f"{root}/labeled/{name}/{i}.png"
                wide = rgb[..., 0].astype(np.uint16) * 257
                os.makedirs(os.path.dirname(path), exist_ok=True)
                Image.fromarray(wide).save(path)
                labeled[path] = np.repeat(rgb[..., :1], 3, axis=-1)
    open(f"{root}/labeled/a_cat/notes.txt", "w").write("not an image")
    rgba = smooth_image(rng, (12, 12), 4).copy()
    rgba[..., 3] = 255
    _save(f"{root}/unlabeled/x/y/rgba.png", rgba)
    unlabeled[f"{root}/unlabeled/x/y/rgba.png"] = rgba[..., :3]
    gray = smooth_image(rng, (10, 14), 1)
    _save(f"{root}/unlabeled/x/gray.bmp", gray)
    unlabeled[f"{root}/unlabeled/x/gray.bmp"] = np.repeat(gray[..., None], 3, axis=-1)
    with open(f"{root}/unlabeled/broken.jpg", "wb") as f:
        f.write(b"\xff\xd8\xff\xe0 truncated")
    return labeled, unlabeled


def folder_settings(root, **kwargs):
    return proc_folder.FolderSettings(
        labeled_dir=f"{root}/labeled", unlabeled_dir=f"{root}/unlabeled", **kwargs
    )


def read_records(pattern):
    """[(jpeg bytes, label)] of the files matching `pattern`, in file order."""
    out = []
    for path in sorted(tf.io.gfile.glob(pattern)):
        for raw in tf.data.TFRecordDataset(path):
            example = tf.train.Example.FromString(raw.numpy())
            feature = example.features.feature
            out.append(
                (
                    feature["image/encoded"].bytes_list.value[0],
                    feature["image/class/label"].int64_list.value[0],
                )
            )
    return out


def decode(jpeg):
    return tf.io.decode_jpeg(jpeg, channels=3, dct_method="INTEGER_ACCURATE").numpy()


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("folders"))
    labeled, unlabeled = make_folders(root)
    out = os.path.join(root, "out")
    info = proc_folder.process_folder(
        out, folder_settings(root), dataset_writer.WriterOptions({"train": 2}), num_workers=1
    )
    return root, out, info, labeled, unlabeled


def test_records_hold_the_images_with_sorted_class_labels(written):
    root, out, info, labeled, _ = written
    assert info["class_names"] == sorted(CLASSES)
    records = read_records(f"{out}/train-*")
    assert len(records) == len(labeled) == info["splits"]["train"] == 12
    matched = set()
    for jpeg, label in records:
        pixels = decode(jpeg)
        errors = {
            p: np.abs(expected.astype(int) - pixels.astype(int)).mean()
            for p, expected in labeled.items()
            if expected.shape == pixels.shape
        }
        path = min(errors, key=errors.get)
        assert errors[path] < 1.0
        class_name = path.split("/labeled/")[1].split("/")[0]
        # 1-based labels: position in the sorted class names + 1.
        assert label == sorted(CLASSES).index(class_name) + 1
        if path.endswith(".jpg"):
            assert jpeg == open(path, "rb").read()  # an RGB JPEG is copied byte for byte
        matched.add(path)
    assert len(matched) == 12


def test_unlabeled_nested_converted_and_skipped_listed(written):
    root, out, info, _, unlabeled = written
    records = read_records(f"{out}/unlabeled/extra-*")
    assert info["splits"]["extra"] == len(records) == 2
    assert all(label == 0 for _, label in records)  # unknown true label
    shapes = sorted(decode(j).shape for j, _ in records)
    assert shapes == sorted(p.shape for p in unlabeled.values())
    for jpeg, _ in records:
        pixels = decode(jpeg)
        expected = next(p for p in unlabeled.values() if p.shape == pixels.shape)
        assert np.abs(expected.astype(int) - pixels.astype(int)).max() <= 3
    skipped = open(f"{out}/{proc_folder.SKIPPED_FILE}").read().splitlines()
    assert sorted(line.split("\t")[0] for line in skipped) == sorted(
        [f"{root}/labeled/a_cat/notes.txt", f"{root}/unlabeled/broken.jpg"]
    )


def test_dataset_info_statistics_equal_numpy(written):
    _, out, info, labeled, _ = written
    pixels = np.concatenate([p.reshape(-1, 3) for p in labeled.values()]).astype(np.float64)
    np.testing.assert_allclose(info["mean_rgb"], pixels.mean(0), rtol=1e-9)
    np.testing.assert_allclose(info["stddev_rgb"], pixels.std(0), rtol=1e-7)
    heights = sorted(p.shape[0] for p in labeled.values())
    assert info["median_size"] == [float(np.median(heights)), 20.0]
    assert info["num_classes"] == 3 and info["small_image_model"] is True
    assert info["num_files"] == {"train": 2, "extra": 1}
    on_disk = json.load(open(f"{out}/{task_info.DATASET_INFO_FILE}"))
    assert on_disk == json.loads(json.dumps(info))
    assert task_info.read_dataset_info(out) == {"train": 12, "extra": 2}


def test_rerun_writes_nothing_new(written, monkeypatch):
    root, out, _, _, _ = written
    before = snapshot(out)
    mtimes = {p: os.stat(os.path.join(out, p)).st_mtime_ns for p in before}
    monkeypatch.setattr(proc_folder, "write_shard", lambda job: pytest.fail("rewrote a shard"))
    proc_folder.process_folder(
        out, folder_settings(root), dataset_writer.WriterOptions({"train": 2}), num_workers=1
    )
    assert snapshot(out) == before
    assert {p: os.stat(os.path.join(out, p)).st_mtime_ns for p in before} == mtimes


def test_killed_run_completes_keeping_finished_shards(tmp_path, monkeypatch):
    root = str(tmp_path)
    make_folders(root, per_class=4)
    out = os.path.join(root, "out")
    writer = dataset_writer.WriterOptions({"train": 3})
    real = proc_folder.write_shard

    def dies_on_second_shard(job):
        if job.subset == "train" and job.shard == 1:
            raise KeyboardInterrupt("killed")
        return real(job)

    monkeypatch.setattr(proc_folder, "write_shard", dies_on_second_shard)
    with pytest.raises(KeyboardInterrupt):
        proc_folder.process_folder(out, folder_settings(root), writer, num_workers=1)
    assert not os.path.exists(f"{out}/{task_info.DATASET_INFO_FILE}")
    first = f"{out}/train-00000-of-00003"
    first_bytes, first_mtime = open(first, "rb").read(), os.stat(first).st_mtime_ns
    written_jobs = []
    monkeypatch.setattr(
        proc_folder, "write_shard", lambda job: written_jobs.append(job) or real(job)
    )
    info = proc_folder.process_folder(out, folder_settings(root), writer, num_workers=1)
    assert (written_jobs[0].subset, written_jobs[0].shard) == ("train", 1)
    assert ("train", 0) not in {(j.subset, j.shard) for j in written_jobs}
    assert os.stat(first).st_mtime_ns == first_mtime and open(first, "rb").read() == first_bytes
    fresh = proc_folder.process_folder(
        os.path.join(root, "fresh"), folder_settings(root), writer, num_workers=1
    )
    assert info == fresh
    assert read_records(f"{out}/train-*") == read_records(f"{root}/fresh/train-*")


def test_changed_input_is_rewritten(tmp_path):
    root = str(tmp_path)
    make_folders(root, per_class=4)
    out = os.path.join(root, "out")
    proc_folder.process_folder(
        out, folder_settings(root), dataset_writer.WriterOptions(), num_workers=1
    )
    _save(f"{root}/labeled/a_cat/new.png", np.zeros((8, 8, 3), np.uint8))
    info = proc_folder.process_folder(
        out, folder_settings(root), dataset_writer.WriterOptions(), num_workers=1
    )
    assert info["splits"]["train"] == 13


def test_dev_fraction_per_class_and_dev_dir(tmp_path):
    root = str(tmp_path)
    make_folders(root, per_class=4)
    info = proc_folder.process_folder(
        f"{root}/out",
        folder_settings(root, dev_fraction=0.25),
        dataset_writer.WriterOptions(),
        num_workers=1,
    )
    assert info["splits"]["dev"] == 3  # one per class of 4 (notes.txt is skipped, not an image)
    labels = sorted(label for _, label in read_records(f"{root}/out/dev-*"))
    assert labels == [1, 2, 3] or len(labels) == 3
    assert task_info.get_task_info("mine", f"{root}/out").eval_subsets == ("dev",)


def test_tfds_route_with_mock_data(tmp_path):
    import tensorflow_datasets as tfds

    settings = proc_folder.FolderSettings(
        tfds_name="cifar10", tfds_test_split="test", tfds_unlabeled_split="train"
    )
    with tfds.testing.mock_data(num_examples=7):
        expected = dataset_writer.load_tfds_split("cifar10", "train")
        info = proc_folder.process_folder(str(tmp_path), settings, dataset_writer.WriterOptions())
    assert info["splits"] == {"train": 7, "test": 7, "extra": 7}
    assert info["num_classes"] == 10 and len(info["class_names"]) == 10
    records = read_records(f"{tmp_path}/train-*")
    assert [label for _, label in records] == [int(v) + 1 for v in expected["label"]]
    for (jpeg, _), image in zip(records, expected["image"], strict=True):
        assert np.abs(decode(jpeg).astype(int) - image.astype(int)).mean() < 2.0
    np.testing.assert_allclose(
        info["mean_rgb"], expected["image"].reshape(-1, 3).mean(0), rtol=1e-9
    )
    unlabeled = read_records(f"{tmp_path}/unlabeled/extra-*")
    assert [label for _, label in unlabeled] == [int(v) + 1 for v in expected["label"]]


@pytest.mark.slow
@pytest.mark.e2e
def test_cli_parallel_workers(tmp_path):
    root = str(tmp_path)
    make_folders(root, per_class=4)
    result = run_script(
        "proc_folder.py",
        f"--labeled_dir={root}/labeled",
        f"--unlabeled_dir={root}/unlabeled",
        f"--output_dir={root}/out",
        "--num_workers=2",
        "--num_train_shards=2",
        "--task_name=pets",
    )
    assert result.returncode == 0, result.stderr
    assert "wrote {'train': 12, 'extra': 2} (3 classes)" in result.stdout
    assert "images/s" in result.stderr  # progress with a rate
    info = json.load(open(f"{root}/out/{task_info.DATASET_INFO_FILE}"))
    assert info["task_name"] == "pets" and info["splits"] == {"train": 12, "extra": 2}


@pytest.mark.slow
@pytest.mark.e2e
@pytest.mark.parametrize(
    "case, message",
    [
        ("empty_class", "class folder {root}/labeled/d_empty is empty"),
        ("unknown_dev_class", "class folder(s) ['zebra'] are not in --labeled_dir"),
        ("no_classes", "--labeled_dir={root}/nothing has no class sub-folders"),
        (
            "strict",
            "{root}/labeled/a_cat/notes.txt: not an image format Pillow can decode (--strict)",
        ),
    ],
)
def test_cli_errors_name_the_folder(tmp_path, case, message):
    root = str(tmp_path)
    make_folders(root, per_class=4)
    args = [f"--labeled_dir={root}/labeled", f"--output_dir={root}/out", "--num_workers=1"]
    if case == "empty_class":
        os.makedirs(f"{root}/labeled/d_empty/nested")  # folders, but no file
    elif case == "unknown_dev_class":
        _save(f"{root}/dev/zebra/1.png", np.zeros((4, 4, 3), np.uint8))
        args.append(f"--dev_dir={root}/dev")
    elif case == "no_classes":
        os.makedirs(f"{root}/nothing")
        args[0] = f"--labeled_dir={root}/nothing"
    else:
        args.append("--strict")
    result = run_script("proc_folder.py", *args)
    assert result.returncode == 1
    assert message.format(root=root) in result.stderr
    if case != "strict":
        assert not os.path.exists(f"{root}/out")  # checked before anything is written


@pytest.mark.slow
@pytest.mark.e2e
def test_unlabeled_class_dir_keeps_held_out_labels_as_true_labels(tmp_path):
    """--unlabeled_class_dir: unlabeled records whose true label is the class folder's + 1."""
    root = str(tmp_path)
    make_folders(root, per_class=4)
    rng = np.random.default_rng(5)
    for name, count in (("c_bird", 2), ("a_cat", 1)):
        for i in range(count):
            _save(f"{root}/held_out/{name}/{i}.png", smooth_image(rng, (8, 8)))
    result = run_script(
        "proc_folder.py",
        f"--labeled_dir={root}/labeled",
        f"--unlabeled_dir={root}/unlabeled",
        f"--unlabeled_class_dir={root}/held_out",
        f"--output_dir={root}/out",
        "--num_workers=1",
    )
    assert result.returncode == 0, result.stderr
    labels = sorted(label for _, label in read_records(f"{root}/out/unlabeled/extra-*"))
    # The 2 readable unlabeled images: 0 (unknown); a_cat -> 1, c_bird -> 3 (twice).
    assert labels == [0, 0, 1, 3, 3]
    # A held-out class that training does not have is an error naming the folder.
    _save(f"{root}/held_out/zebra/0.png", smooth_image(rng, (8, 8)))
    result = run_script(
        "proc_folder.py",
        f"--labeled_dir={root}/labeled",
        f"--unlabeled_class_dir={root}/held_out",
        f"--output_dir={root}/out2",
        "--num_workers=1",
    )
    assert result.returncode == 1
    assert f"--unlabeled_class_dir={root}/held_out: class folder(s) ['zebra']" in result.stderr
    assert not os.path.exists(f"{root}/out2")
