"""proc_imagenet.py on mocked TFDS imagenet2012 and on a few image files."""

import os

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds
from conftest import run_script

import atomic_files
import data_input
import file_names
import proc_imagenet
import tfrecords


def read(path):
    return [
        tf.train.Example.FromString(r.numpy()).features.feature
        for r in tf.data.TFRecordDataset(path)
    ]


def test_writes_the_published_layout_from_tfds(tmp_path):
    out = str(tmp_path / "proc")
    with tfds.testing.mock_data(num_examples=7):
        builder = tfds.builder("imagenet2012")
        expected = {
            split: [
                (ex["image"], int(ex["label"]))
                for ex in tfds.as_numpy(
                    builder.as_dataset(
                        split=split,
                        shuffle_files=False,
                        decoders={"image": tfds.decode.SkipDecoding()},
                    )
                )
            ]
            for split in ("train", "validation")
        }
        counts = proc_imagenet.process_imagenet(out, num_shards={"train": 3, "validation": 2})
    assert counts == {"train": 7, "validation": 7}
    assert atomic_files.read_json(os.path.join(out, "dataset_info.json")) == counts
    for subset, num in (("train", 3), ("validation", 2)):
        files = data_input.labeled_files(out, subset)
        assert [os.path.basename(f) for f in files] == [
            f"{subset}-{i:05d}-of-{num:05d}" for i in range(num)
        ]
        records = [r for f in files for r in read(f)]
        assert [len(read(f)) for f in files] == list(
            np.diff(np.linspace(0, 7, num + 1).astype(int))
        )
        got = [
            (r["image/encoded"].bytes_list.value[0], r["image/class/label"].int64_list.value[0])
            for r in records
        ]
        # The JPEG bytes as TFDS stores them, labels 1-based, in TFDS order.
        assert got == [(image, label + 1) for image, label in expected[subset]]
        assert all(image.startswith(b"\xff\xd8\xff") for image, _ in got)
    # A complete output is not rewritten (and TFDS is not even opened).
    mtime = os.path.getmtime(os.path.join(out, "train-00000-of-00003"))
    assert proc_imagenet.process_imagenet(out, num_shards={"train": 3, "validation": 2}) == counts
    assert os.path.getmtime(os.path.join(out, "train-00000-of-00003")) == mtime


def test_unlabeled_images_keep_jpeg_and_convert_others(tmp_path):
    rng = np.random.default_rng(0)
    src = tmp_path / "images"
    src.mkdir()
    jpeg = tfrecords.encode_jpeg(rng.integers(0, 255, (20, 30, 3)))
    (src / "a.jpg").write_bytes(jpeg)
    png_image = np.broadcast_to(np.arange(0, 240, 20, dtype=np.uint8)[None, :, None], (10, 12, 3))
    (src / "b.png").write_bytes(tf.io.encode_png(png_image).numpy())
    (src / "c.jpg").write_bytes(jpeg)
    out = str(tmp_path / "proc")
    # An earlier run with another shard count left files that readers would glob.
    stale = file_names.unlabeled_shard_path(out, 0, 5)
    tfrecords.write_tfrecord(stale, [])
    assert proc_imagenet.write_unlabeled_images(str(src / "*"), out, num_shards=2) == 3
    files = data_input.unlabeled_files(os.path.join(out, "unlabeled"))
    assert [os.path.basename(f) for f in files] == ["extra-00000-of-00002", "extra-00001-of-00002"]
    records = [r for f in files for r in read(f)]
    images = [r["image/encoded"].bytes_list.value[0] for r in records]
    assert images[0] == jpeg and images[2] == jpeg
    decoded = tf.io.decode_jpeg(images[1]).numpy()
    assert decoded.shape == (10, 12, 3)
    assert np.abs(decoded.astype(int) - png_image).max() < 20
    assert all(len(r["probabilities"].float_list.value) == 1000 for r in records)


def write_unlabeled_with_script(pattern, out, num_shards):
    """Runs proc_imagenet.py writing only the image files matching `pattern`."""
    return run_script(
        "proc_imagenet.py",
        "--skip_labeled",
        f"--unlabeled_glob={pattern}",
        f"--output_dir={out}",
        f"--num_unlabeled_shards={num_shards}",
    )


def image_folder(path, num_images=5):
    path.mkdir()
    rng = np.random.default_rng(1)
    for i in range(num_images):
        (path / f"img{i}.JPEG").write_bytes(
            tfrecords.encode_jpeg(rng.integers(0, 255, (12, 16, 3)))
        )
    return path


@pytest.mark.slow
@pytest.mark.e2e
def test_script_writes_unlabeled_images(tmp_path):
    src = image_folder(tmp_path / "images")
    out = tmp_path / "proc"
    result = write_unlabeled_with_script(f"{src}/*.JPEG", out, num_shards=2)
    assert result.returncode == 0, result.stderr[-3000:]
    files = data_input.unlabeled_files(str(out / "unlabeled"))
    records = [r for f in files for r in read(f)]
    assert len(files) == 2 and len(records) == 5
    # Unknown true class: image/class/label 0.
    assert {r["image/class/label"].int64_list.value[0] for r in records} == {0}


@pytest.mark.slow
@pytest.mark.e2e
@pytest.mark.parametrize("damage", ["not an image", "truncated JPEG"])
def test_script_names_a_file_that_is_not_an_image(tmp_path, damage):
    src = image_folder(tmp_path / "images")
    out = tmp_path / "proc"
    assert proc_imagenet.write_unlabeled_images(f"{src}/*", str(out), num_shards=3) == 5
    earlier = {f: open(f, "rb").read() for f in data_input.unlabeled_files(str(out / "unlabeled"))}
    bad = src / "img3.JPEG"  # among the JPEGs, after some good ones
    if damage == "truncated JPEG":
        bad.write_bytes((src / "img0.JPEG").read_bytes()[:200])
    else:
        bad.write_bytes(b"GIF89a, but not really an image")
    result = write_unlabeled_with_script(f"{src}/*", out, num_shards=3)
    assert result.returncode == 1, result.stderr[-3000:]
    message = result.stderr.strip().splitlines()[-1]
    assert message.startswith(f"proc_imagenet.py: error: {bad} is not a decodable image (")
    assert "Traceback" not in result.stderr
    # Nothing half-written: the earlier shards are unchanged, no temporary files.
    assert sorted(os.listdir(out / "unlabeled")) == sorted(os.path.basename(f) for f in earlier)
    for path, data in earlier.items():
        assert open(path, "rb").read() == data


def test_empty_or_unreadable_image_files_are_named(tmp_path):
    empty = tmp_path / "empty.jpg"
    empty.write_bytes(b"")
    with pytest.raises(ValueError, match=f"{empty} is not a decodable image"):
        proc_imagenet.image_file_record(str(empty))
    with pytest.raises(ValueError, match=f"Cannot read image file {tmp_path}"):
        proc_imagenet.image_file_record(str(tmp_path))  # a folder
