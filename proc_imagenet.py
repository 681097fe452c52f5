"""Writes ImageNet (ILSVRC 2012) in the TFRecord layout of the scripts (SPEC §7).

Output under `--output_dir`:
  train-%05d-of-01024        1,281,167 labeled records
  validation-%05d-of-00128   50,000 labeled records
  dataset_info.json          {subset: num_images}
Keys: `image/encoded` (the JPEG bytes, not re-encoded) and `image/class/label`
(1-based: the class index + 1, classes in sorted WordNet id order, as TFDS
and the published data have them).

The images come from TFDS `imagenet2012`, which needs the two archives
ILSVRC2012_img_train.tar and ILSVRC2012_img_val.tar (downloaded by hand from
image-net.org after registering) in `--manual_dir`. TFDS prepares its copy
once (hours; it re-encodes the few PNG and CMYK files as RGB JPEG), then
this writer streams it into shards, never holding more than one image.

`--unlabeled_glob` also writes image files (e.g. your own unlabeled
collection) as `unlabeled/extra-%05d-of-%05d` records for predict.sh; JPEG
files are kept as they are, other formats are re-encoded as JPEG. Every file
is decoded once to check it: a file that is not an image stops the run with
an error naming it. Their `image/class/label` is 0 (true class unknown).

Shards are written under temporary names and renamed only once every shard
of a subset is complete, so a failure leaves an earlier output untouched.

Usage:
  python proc_imagenet.py --manual_dir=/path/to/tars --output_dir=data/imagenet/proc
"""

import concurrent.futures
import itertools
import os
import re
import sys

import numpy as np
import tensorflow as tf
from absl import app, flags, logging

import task_info
import utils
from proc_svhn import SETTINGS_FILE, output_complete

TFDS_NAME = "imagenet2012"
TFDS_SPLITS = {"train": "train", "validation": "validation"}  # our subset -> TFDS split
NUM_CLASSES = 1000
_JPEG_MAGIC = b"\xff\xd8\xff"
# Image files decoded (checked) at a time, in parallel threads.
_CHECK_CHUNK = 256


def _remove_other_shards(paths):
    """Deletes `{prefix}-*` files next to `paths` that are not among them.

    Readers glob `{prefix}-*`, so shards of an earlier run with another shard
    count (or temporary files of a killed one) would be read as data.
    """
    keep = set(paths)
    prefix = paths[0].rsplit("-", 3)[0]
    for path in tf.io.gfile.glob(prefix + "-*"):
        if path not in keep:
            logging.info("Removing stale file %s", path)
            tf.io.gfile.remove(path)


def write_streamed(records, paths, num_records):
    """Writes `num_records` serialized records from an iterator into `paths`, in order.

    Shard i gets records [bounds[i], bounds[i + 1]) with the same linspace
    boundaries as proc_svhn's writer. Every shard is written under a
    temporary name first; only when all are complete do they replace the
    files under `paths` (and stale shards of another shard count are
    removed), so an error while reading the source changes no output file.

    Returns:
      The number of records written.

    Raises:
      RuntimeError: the source ended early. Errors of the source pass through.
    """
    bounds = np.linspace(0, num_records, len(paths) + 1).astype(np.int64)
    progress = utils.Progress(num_records, "images", prefix="written ")
    total = 0
    pending = []  # (temporary path, final path) of complete shards
    try:
        for path, start, end in zip(paths, bounds[:-1], bounds[1:], strict=True):
            tmp = utils.tmp_path(path)
            tf.io.gfile.makedirs(os.path.dirname(path))
            pending.append((tmp, path))
            count = 0
            with tf.io.TFRecordWriter(tmp) as writer:
                for record in itertools.islice(records, int(end - start)):
                    writer.write(record)
                    count += 1
            if count != end - start:
                raise RuntimeError(
                    f"{path}: expected {end - start} records, the source ended at {total + count}."
                )
            total += count
            progress.update(count)
        for tmp, path in pending:
            tf.io.gfile.rename(tmp, path, overwrite=True)
        pending = []
        _remove_other_shards(paths)
    finally:
        for tmp, _ in pending:
            if tf.io.gfile.exists(tmp):
                tf.io.gfile.remove(tmp)
    progress.update(0, force=True)
    return total


def _tfds_examples(builder, split):
    """(JPEG bytes, 0-based label) of a TFDS split in file order, images left encoded."""
    import tensorflow_datasets as tfds

    ds = builder.as_dataset(
        split=split, shuffle_files=False, decoders={"image": tfds.decode.SkipDecoding()}
    )
    return ds, ((ex["image"], int(ex["label"])) for ex in tfds.as_numpy(ds))


def process_imagenet(
    output_dir,
    manual_dir=None,
    tfds_data_dir=None,
    num_shards=None,
    overwrite=False,
):
    """Prepares TFDS imagenet2012 if needed and writes train/validation shards.

    Args:
      output_dir: output directory.
      manual_dir: folder of the ILSVRC2012 tar files (only needed if TFDS has
        not prepared imagenet2012 in `tfds_data_dir` yet).
      tfds_data_dir: TFDS data_dir; default TFDS' own.
      num_shards: {subset: number of files}; default 1024 train, 128 validation.
      overwrite: rewrite even if the complete output exists.

    Returns:
      {subset: number of images}.
    """
    import tensorflow_datasets as tfds

    num_shards = dict(task_info.get_task_info("imagenet").num_files, **(num_shards or {}))
    settings = {"source": f"tfds:{TFDS_NAME}", "num_shards": num_shards}
    if not overwrite and output_complete(output_dir, num_shards, settings):
        logging.info("Complete output already in %s; skipping (--overwrite rewrites).", output_dir)
        return utils.read_json(os.path.join(output_dir, task_info.DATASET_INFO_FILE))
    builder = tfds.builder(TFDS_NAME, data_dir=tfds_data_dir)
    builder.download_and_prepare(
        download_config=tfds.download.DownloadConfig(manual_dir=manual_dir)
    )
    info_path = os.path.join(output_dir, task_info.DATASET_INFO_FILE)
    if tf.io.gfile.exists(info_path):  # Written last: its presence marks a complete output.
        tf.io.gfile.remove(info_path)
    counts = {}
    for subset, split in TFDS_SPLITS.items():
        ds, examples = _tfds_examples(builder, split)
        num = builder.info.splits[split].num_examples if split in builder.info.splits else 0
        if not num:  # Unknown split size (e.g. mocked TFDS): count first.
            num = int(ds.reduce(np.int64(0), lambda n, _: n + 1).numpy())
        paths = [
            utils.labeled_shard_path(output_dir, subset, i, num_shards[subset])
            for i in range(num_shards[subset])
        ]
        logging.info("Writing %s: %d images in %d shards.", subset, num, len(paths))
        records = (
            utils.labeled_example(image, label).SerializeToString() for image, label in examples
        )
        counts[subset] = write_streamed(records, paths, num)
    utils.write_json(os.path.join(output_dir, SETTINGS_FILE), settings)
    utils.write_json(info_path, counts)
    logging.info("Wrote %s to %s", counts, output_dir)
    return counts


def _op_text(error):
    """A TensorFlow error message without the graph-function names around it."""
    text = getattr(error, "message", None) or str(error)
    text = re.sub(r"\{\{function_node [^}]*\}\}\s*", "", text)
    return re.sub(r"\s*\[Op:[^\]]*\].*$", "", text).strip()


def image_file_record(path):
    """The serialized unlabeled record of one image file.

    JPEG files keep their bytes; other formats are re-encoded as JPEG. Every
    file is decoded, so that a broken file is caught here rather than when
    the teacher or the student reads it.

    Raises:
      ValueError: the file cannot be read or is not a decodable image; the
        message names it.
    """
    try:
        with tf.io.gfile.GFile(path, "rb") as f:
            data = f.read()
    except (OSError, tf.errors.OpError) as e:
        raise ValueError(f"Cannot read image file {path}: {_op_text(e)}") from e
    try:
        image = tf.io.decode_image(data, channels=3, expand_animations=False)
    except tf.errors.OpError as e:
        raise ValueError(
            f"{path} is not a decodable image ({_op_text(e)}); remove it from the files "
            "--unlabeled_glob matches."
        ) from e
    if not data.startswith(_JPEG_MAGIC):
        data = utils.encode_jpeg(image.numpy())
    return utils.unlabeled_example(data, NUM_CLASSES).SerializeToString()


def write_unlabeled_images(pattern, output_dir, num_shards=128):
    """Writes the image files matching `pattern` as raw unlabeled records.

    Returns:
      The number of images written to `{output_dir}/unlabeled/extra-*`.

    Raises:
      FileNotFoundError: `pattern` matches no file.
      ValueError: a file is not an image (nothing is written then).
    """
    files = sorted(tf.io.gfile.glob(pattern))
    if not files:
        raise FileNotFoundError(f"--unlabeled_glob={pattern!r} matches no file.")

    def records():
        # Decoding (the check) dominates; TensorFlow's ops release the GIL,
        # so threads decode in parallel. Chunks bound the images in memory.
        with concurrent.futures.ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
            for start in range(0, len(files), _CHECK_CHUNK):
                yield from pool.map(image_file_record, files[start : start + _CHECK_CHUNK])

    paths = [utils.unlabeled_shard_path(output_dir, i, num_shards) for i in range(num_shards)]
    return write_streamed(records(), paths, len(files))


def define_flags():
    flags.DEFINE_string("output_dir", "data/imagenet/proc", "Where the TFRecords are written.")
    flags.DEFINE_string(
        "manual_dir", None, "Folder of ILSVRC2012_img_train.tar and ILSVRC2012_img_val.tar."
    )
    flags.DEFINE_string("tfds_data_dir", None, "TFDS data_dir; default TFDS' own.")
    flags.DEFINE_integer("num_train_shards", 1024, "Number of train files.")
    flags.DEFINE_integer("num_validation_shards", 128, "Number of validation files.")
    flags.DEFINE_bool("overwrite", False, "Rewrite even if the complete output exists.")
    flags.DEFINE_string(
        "unlabeled_glob", None, "Also write these image files as unlabeled/extra-* records."
    )
    flags.DEFINE_integer("num_unlabeled_shards", 128, "Number of unlabeled files.")
    flags.DEFINE_bool("skip_labeled", False, "Only write --unlabeled_glob.")


def main(argv):
    del argv
    try:
        _run(flags.FLAGS)
    except (ValueError, OSError, RuntimeError) as e:
        # The messages name the file; a traceback would only bury them.
        logging.error("%s", e)
        sys.exit(f"proc_imagenet.py: error: {e}")


def _run(fl):
    if not fl.skip_labeled:
        process_imagenet(
            fl.output_dir,
            manual_dir=fl.manual_dir,
            tfds_data_dir=fl.tfds_data_dir,
            num_shards={"train": fl.num_train_shards, "validation": fl.num_validation_shards},
            overwrite=fl.overwrite,
        )
    if fl.unlabeled_glob:
        count = write_unlabeled_images(fl.unlabeled_glob, fl.output_dir, fl.num_unlabeled_shards)
        logging.info("Wrote %d unlabeled images to %s/unlabeled", count, fl.output_dir)


if __name__ == "__main__":
    define_flags()
    app.run(main)
