"""proc_imagenet.py on mocked TFDS imagenet2012 and on a few image files."""

import os

import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

import data_input
import proc_imagenet
import utils


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
    assert utils.read_json(os.path.join(out, "dataset_info.json")) == counts
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
    jpeg = utils.encode_jpeg(rng.integers(0, 255, (20, 30, 3)))
    (src / "a.jpg").write_bytes(jpeg)
    png_image = np.broadcast_to(np.arange(0, 240, 20, dtype=np.uint8)[None, :, None], (10, 12, 3))
    (src / "b.png").write_bytes(tf.io.encode_png(png_image).numpy())
    (src / "c.jpg").write_bytes(jpeg)
    out = str(tmp_path / "proc")
    # An earlier run with another shard count left files that readers would glob.
    stale = utils.unlabeled_shard_path(out, 0, 5)
    utils.write_tfrecord(stale, [])
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
