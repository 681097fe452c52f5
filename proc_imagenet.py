"""Writes ImageNet (ILSVRC 2012) in the TFRecord layout (docs/method.md, "Record formats").

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
import os
import re

import numpy as np
import tensorflow as tf
from absl import app, flags, logging

import dataset_writer
import task_info
import tfrecords

TASK_NAME = "imagenet"
TFDS_NAME = "imagenet2012"
TFDS_SPLITS = {"train": "train", "validation": "validation"}  # our subset -> TFDS split
NUM_CLASSES = task_info.get_task_info(TASK_NAME).num_classes
NUM_UNLABELED_SHARDS = 128
_JPEG_MAGIC = b"\xff\xd8\xff"
# Image files decoded (checked) at a time, in parallel threads.
_CHECK_CHUNK = 256


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
      num_shards: {subset: number of files}; default task_info's (1024
        train, 128 validation).
      overwrite: rewrite even if the complete output exists.

    Returns:
      {subset: number of images}.
    """
    import tensorflow_datasets as tfds

    num_shards = dataset_writer.num_shards_for(TASK_NAME, num_shards)
    settings = {"source": f"tfds:{TFDS_NAME}", "num_shards": num_shards}
    counts = dataset_writer.complete_output_counts(output_dir, num_shards, settings, overwrite)
    if counts is not None:
        return counts
    builder = tfds.builder(TFDS_NAME, data_dir=tfds_data_dir)
    builder.download_and_prepare(
        download_config=tfds.download.DownloadConfig(manual_dir=manual_dir)
    )
    dataset_writer.begin_output(output_dir, settings)
    counts = {}
    for subset, split in TFDS_SPLITS.items():
        ds, examples = _tfds_examples(builder, split)
        num = builder.info.splits[split].num_examples if split in builder.info.splits else 0
        if not num:  # Unknown split size (e.g. mocked TFDS): count first.
            num = int(ds.reduce(np.int64(0), lambda n, _: n + 1).numpy())
        logging.info("Writing %s: %d images in %d shards.", subset, num, num_shards[subset])
        records = (
            tfrecords.labeled_example(image, label).SerializeToString() for image, label in examples
        )
        counts[subset] = dataset_writer.write_streamed(
            records, output_dir, subset, num_shards[subset], num
        )
    dataset_writer.finish_output(output_dir, counts)
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
        data = tfrecords.encode_jpeg(image.numpy())
    return tfrecords.unlabeled_example(data, NUM_CLASSES).SerializeToString()


def write_unlabeled_images(pattern, output_dir, num_shards=NUM_UNLABELED_SHARDS):
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

    return dataset_writer.write_streamed(
        records(), output_dir, dataset_writer.UNLABELED_SUBSET, num_shards, len(files)
    )


def define_flags():
    """Defines the command-line flags (only when run as a script, so importing is side-effect free)."""
    flags.DEFINE_string(
        "manual_dir", None, "Folder of ILSVRC2012_img_train.tar and ILSVRC2012_img_val.tar."
    )
    flags.DEFINE_string("tfds_data_dir", None, "TFDS data_dir; default TFDS' own.")
    flags.DEFINE_string(
        "unlabeled_glob", None, "Also write these image files as unlabeled/extra-* records."
    )
    flags.DEFINE_bool("skip_labeled", False, "Only write --unlabeled_glob.")
    dataset_writer.define_writer_flags(
        dict(task_info.get_task_info(TASK_NAME).num_files, unlabeled=NUM_UNLABELED_SHARDS),
        default_output_dir="data/imagenet/proc",
        jpeg_quality_flag=False,
    )
    flags.adopt_module_key_flags(dataset_writer)


def main(argv):
    """Writes ImageNet and/or image files as the flags say; errors exit with status 1 and a message."""
    del argv
    fl = flags.FLAGS
    with dataset_writer.exit_on_errors("proc_imagenet.py"):
        if not fl.skip_labeled:
            process_imagenet(
                fl.output_dir,
                manual_dir=fl.manual_dir,
                tfds_data_dir=fl.tfds_data_dir,
                num_shards=dataset_writer.num_shards_from_flags(fl, TFDS_SPLITS),
                overwrite=fl.overwrite,
            )
        if fl.unlabeled_glob:
            count = write_unlabeled_images(
                fl.unlabeled_glob, fl.output_dir, fl.num_unlabeled_shards
            )
            logging.info("Wrote %d unlabeled images to %s/unlabeled", count, fl.output_dir)


if __name__ == "__main__":
    define_flags()
    app.run(main)
