"""Writes your own images (folders, lists, globs) or a TFDS dataset as a task.

Output under `--output_dir` (docs/method.md, "Record formats"; docs/own_data.md):
  train-*, dev-*, test-*   labeled records, 1-based image/class/label, JPEG
  unlabeled/extra-*        unlabeled records (true label + 1 when known, else 0)
  dataset_info.json        {"splits": {subset: count}, "num_classes", "class_names",
                            "median_size": [h, w], "mean_rgb", "stddev_rgb",
                            "random_flip", "num_files": {subset: shards}, "task_name"}
  skipped.txt              files that are not readable images, with the reason

Sources:
  --labeled_dir=DIR     DIR/<class>/... (searched recursively); class index =
                        position in the sorted folder names; --dev_dir and
                        --test_dir hold the same class folders, or
                        --dev_fraction of each class is held out (--seed).
  --unlabeled_dir, --unlabeled_glob, --unlabeled_list   unlabeled images.
  --unlabeled_class_dir=DIR   unlabeled images whose classes you know, in the
                        class folders of --labeled_dir: the classes are kept
                        as true labels only, so the loop's report measures the
                        pseudo labels (accuracy per class, confusion matrix).
  --tfds_name=NAME      any TFDS image-classification dataset, with
                        --tfds_labeled_split, --tfds_test_split, --tfds_unlabeled_split.

RGB JPEG files are copied byte for byte; every other image (PNG, BMP, GIF,
WebP, grayscale, RGBA, palette, CMYK, 16-bit) becomes an RGB JPEG.

Usage:
  python proc_folder.py --labeled_dir=my/labeled --unlabeled_dir=my/unlabeled \\
      --output_dir=data/custom/proc
"""

import glob
import hashlib
import io
import multiprocessing
import os
import re
import typing

import numpy as np
from absl import app, flags, logging

import atomic_files
import dataset_writer
import disk_full
import progress_log
import task_info
import tfrecords

TASK_NAME = "custom"
SUBSETS = ("train", "dev", "test", dataset_writer.UNLABELED_SUBSET)
SKIPPED_FILE = "skipped.txt"
# Per-shard statistics and skipped files next to the shards, so that a
# resumed run that keeps a finished shard still knows what it held.
SIDECAR_DIR = ".proc_folder"
# Images per shard when --num_{subset}_shards is not given.
IMAGES_PER_SHARD = 2000
# Larger images are skipped (listed in skipped.txt) from their header alone:
# decoding one needs 3 bytes a pixel at once (a 10000x10000 image: 300 MB),
# in proc_folder and again in every training step that reads it. 40
# megapixels leave room for any camera photo.
MAX_IMAGE_PIXELS = 40_000_000
# Pixels per block when summing an image's statistics in float64, which
# bounds that copy to 24 MB whatever the image's size.
_STATS_BLOCK_PIXELS = 1 << 20
# 16-bit samples scaled to 8 bits: 65535 -> 255.
_SIXTEEN_BIT_SCALE = 257.0


class FolderSettings(typing.NamedTuple):
    """The options that determine the written data (recorded in proc_settings.json)."""

    labeled_dir: str | None = None
    dev_dir: str | None = None
    test_dir: str | None = None
    dev_fraction: float = 0.0
    unlabeled_dir: str | None = None
    unlabeled_glob: str | None = None
    unlabeled_list: str | None = None
    unlabeled_class_dir: str | None = None
    tfds_name: str | None = None
    tfds_labeled_split: str = "train"
    tfds_test_split: str | None = "test"
    tfds_unlabeled_split: str | None = None
    random_flip: bool = True
    seed: int = 0


class ShardJob(typing.NamedTuple):
    """One shard to write: its items are (path or encoded array, 0-based label or -1)."""

    subset: str
    shard: int
    num_shards: int
    items: list
    output_dir: str
    num_classes: int
    jpeg_quality: int
    strict: bool


# ---------------------------------------------------------------------------
# Images.


def _to_rgb_array(image):
    """A PIL image of any mode -> uint8 [H, W, 3]; transparency over white."""
    from PIL import Image

    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        pixels = np.asarray(image, np.float64)
        pixels = np.clip(np.rint(pixels / _SIXTEEN_BIT_SCALE), 0, 255).astype(np.uint8)
        return np.repeat(pixels[..., None], 3, axis=-1)
    if image.mode == "F":
        pixels = np.clip(np.rint(np.asarray(image)), 0, 255).astype(np.uint8)
        return np.repeat(pixels[..., None], 3, axis=-1)
    if image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info:
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return np.asarray(Image.alpha_composite(background, rgba).convert("RGB"))
    return np.asarray(image.convert("RGB"))


def encode_pil(pixels, quality):
    """uint8 [H, W, 3] -> JPEG bytes (Pillow: no TensorFlow in the workers' hot loop)."""
    from PIL import Image

    out = io.BytesIO()
    Image.fromarray(pixels, "RGB").save(out, format="JPEG", quality=quality, subsampling=0)
    return out.getvalue()


def convert_image(data, quality):
    """Encoded image bytes -> (RGB JPEG bytes, uint8 [H, W, 3] pixels).

    An RGB JPEG is kept byte for byte; anything else Pillow reads is
    converted (first frame of an animation).

    Raises:
      ValueError: the bytes are not an image Pillow can decode.
    """
    from PIL import Image, UnidentifiedImageError

    try:
        image = Image.open(io.BytesIO(data))
        width, height = image.size
        # The header alone says the size: a too large image is never decoded.
        too_large = width * height > MAX_IMAGE_PIXELS
        if not too_large:
            image.load()
    except UnidentifiedImageError as e:
        raise ValueError("not an image format Pillow can decode") from e
    except Image.DecompressionBombError as e:
        raise ValueError(f"too large to decode ({e})") from e
    except (OSError, SyntaxError, ValueError) as e:
        raise ValueError(f"cannot be decoded ({type(e).__name__}: {e})") from e
    if too_large:
        raise ValueError(_too_large(width, height))
    if image.format == "JPEG" and image.mode == "RGB":
        return data, np.asarray(image)
    pixels = np.ascontiguousarray(_to_rgb_array(image))
    return encode_pil(pixels, quality), pixels


def _too_large(width, height):
    return (
        f"too large: {width}x{height} = {width * height:,} pixels, more than the "
        f"{MAX_IMAGE_PIXELS:,} proc_folder.py takes (MAX_IMAGE_PIXELS); downscale it"
    )


def _array_to_jpeg(array, quality):
    """A TFDS image [H, W, C] uint8 -> (JPEG bytes, RGB pixels)."""
    array = np.asarray(array, np.uint8)
    if array.shape[0] * array.shape[1] > MAX_IMAGE_PIXELS:
        raise ValueError(_too_large(array.shape[1], array.shape[0]))
    if array.ndim == 2:
        array = array[..., None]
    if array.shape[-1] == 1:
        array = np.repeat(array, 3, axis=-1)
    elif array.shape[-1] == 4:
        from PIL import Image

        array = _to_rgb_array(Image.fromarray(array, "RGBA"))
    pixels = np.ascontiguousarray(array[..., :3])
    return encode_pil(pixels, quality), pixels


# ---------------------------------------------------------------------------
# Statistics: sums per shard, combined at the end.


def empty_stats():
    """Per-shard pixel sums (float64: exact for any realistic count) and sizes."""
    return {"count": 0, "sum": [0.0] * 3, "sumsq": [0.0] * 3, "sizes": []}


def add_to_stats(stats, pixels):
    """Adds one image's pixels to `stats`, a block of rows at a time."""
    height, width = pixels.shape[:2]
    rows = max(1, _STATS_BLOCK_PIXELS // max(1, width))
    for start in range(0, height, rows):
        flat = pixels[start : start + rows].reshape(-1, 3).astype(np.float64)
        stats["count"] += len(flat)
        stats["sum"] = [a + b for a, b in zip(stats["sum"], flat.sum(0), strict=True)]
        stats["sumsq"] = [a + b for a, b in zip(stats["sumsq"], (flat**2).sum(0), strict=True)]
    stats["sizes"].append([height, width])


def combine_stats(parts):
    """(mean_rgb, stddev_rgb, median [h, w]) of the per-shard `parts`."""
    count = sum(p["count"] for p in parts)
    total = np.sum([p["sum"] for p in parts], axis=0)
    total_sq = np.sum([p["sumsq"] for p in parts], axis=0)
    mean = total / count
    std = np.sqrt(np.maximum(total_sq / count - mean**2, 0.0))
    sizes = np.array([s for p in parts for s in p["sizes"]])
    median = [float(np.median(sizes[:, 0])), float(np.median(sizes[:, 1]))]
    return [float(v) for v in mean], [float(v) for v in std], median


# ---------------------------------------------------------------------------
# Listing.


def _walk_files(folder):
    """Every file below `folder`, recursively, in sorted order (hidden names skipped)."""
    for root, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(files):
            if not name.startswith("."):
                yield os.path.join(root, name)


def list_class_folders(folder, flag, class_names=None):
    """{class name: sorted file paths} of `folder`/<class>/...

    Args:
      folder: the labeled folder.
      flag: the flag that named it, for messages.
      class_names: the training classes; a dev/test folder may not add any.

    Raises:
      ValueError: no class folders, an empty class folder, or a class not in train.
    """
    if not os.path.isdir(folder):
        raise ValueError(f"--{flag}={folder} is not a folder.")
    names = sorted(d for d in os.listdir(folder) if os.path.isdir(os.path.join(folder, d)))
    if not names:
        raise ValueError(
            f"--{flag}={folder} has no class sub-folders (expected {folder}/<class>/*)."
        )
    if class_names is not None:
        unknown = [n for n in names if n not in class_names]
        if unknown:
            raise ValueError(
                f"--{flag}={folder}: class folder(s) {unknown} are not in --labeled_dir "
                f"(classes {class_names})."
            )
    classes = {}
    for name in names:
        files = list(_walk_files(os.path.join(folder, name)))
        if not files:
            raise ValueError(f"--{flag}: class folder {os.path.join(folder, name)} is empty.")
        classes[name] = files
    return classes


def labeled_items(classes, class_names):
    """[(path, 0-based label)] of {class: paths}, labels by position in `class_names`."""
    index = {name: i for i, name in enumerate(class_names)}
    return [(path, index[name]) for name, paths in classes.items() for path in paths]


def split_dev(items, fraction, seed):
    """(train, dev): `fraction` of each class held out with RandomState(seed)."""
    rng = np.random.RandomState(seed)
    train, dev = [], []
    labels = np.array([label for _, label in items])
    for label in sorted(set(labels.tolist())):
        members = np.flatnonzero(labels == label)
        members = members[rng.permutation(len(members))]
        num_dev = int(round(fraction * len(members)))
        dev += [items[i] for i in members[:num_dev]]
        train += [items[i] for i in members[num_dev:]]
    return train, dev


def unlabeled_paths(settings):
    """Sorted unlabeled file paths of --unlabeled_dir, --unlabeled_glob and --unlabeled_list."""
    paths = []
    if settings.unlabeled_dir:
        if not os.path.isdir(settings.unlabeled_dir):
            raise ValueError(f"--unlabeled_dir={settings.unlabeled_dir} is not a folder.")
        paths += _walk_files(settings.unlabeled_dir)
    if settings.unlabeled_glob:
        paths += sorted(
            p for p in glob.iglob(settings.unlabeled_glob, recursive=True) if os.path.isfile(p)
        )
    if settings.unlabeled_list:
        if not os.path.isfile(settings.unlabeled_list):
            raise ValueError(f"--unlabeled_list={settings.unlabeled_list} is not a file.")
        with open(settings.unlabeled_list) as f:
            paths += [line.strip() for line in f if line.strip()]
    return paths


def folder_sources(settings):
    """(class names, {subset: [(path, label)]}) of the folder flags; validated before writing."""
    if not settings.labeled_dir:
        raise ValueError("Pass --labeled_dir (one sub-folder per class) or --tfds_name.")
    train_classes = list_class_folders(settings.labeled_dir, "labeled_dir")
    class_names = sorted(train_classes)
    items = {"train": labeled_items(train_classes, class_names)}
    for subset, folder in (("dev", settings.dev_dir), ("test", settings.test_dir)):
        if folder:
            classes = list_class_folders(folder, f"{subset}_dir", class_names)
            items[subset] = labeled_items(classes, class_names)
    if settings.dev_fraction:
        if settings.dev_dir:
            raise ValueError("Pass --dev_dir or --dev_fraction, not both.")
        if not 0 < settings.dev_fraction < 1:
            raise ValueError(f"--dev_fraction={settings.dev_fraction}: expected 0 < f < 1.")
        items["train"], items["dev"] = split_dev(
            items["train"], settings.dev_fraction, settings.seed
        )
    # Shards mix classes; the order is fixed by the seed.
    rng = np.random.RandomState(settings.seed)
    items["train"] = [items["train"][i] for i in rng.permutation(len(items["train"]))]
    unlabeled = [(path, -1) for path in unlabeled_paths(settings)]
    if settings.unlabeled_class_dir:
        # Held-out labels: stored as the records' true labels, which training
        # never reads; the filter measures the pseudo labels against them.
        classes = list_class_folders(
            settings.unlabeled_class_dir, "unlabeled_class_dir", class_names
        )
        unlabeled += labeled_items(classes, class_names)
    if unlabeled:
        items[dataset_writer.UNLABELED_SUBSET] = unlabeled
    return class_names, items


def fingerprint(items):
    """A hash of the items' paths, sizes and modification times: other inputs rewrite."""
    digest = hashlib.sha256()
    for path, label in items:
        if isinstance(path, str):
            try:
                stat = os.stat(path)
                digest.update(f"{path}\0{label}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
            except OSError:
                digest.update(f"{path}\0{label}\0missing\n".encode())
    return digest.hexdigest()


# ---------------------------------------------------------------------------
# Writing.


def sidecar_path(output_dir, subset, shard, num_shards):
    """The statistics file of one shard."""
    return os.path.join(output_dir, SIDECAR_DIR, f"{subset}-{shard:05d}-of-{num_shards:05d}.json")


def _encode_item(source, quality):
    if isinstance(source, str):
        with open(source, "rb") as f:
            data = f.read()
        return convert_image(data, quality)
    return _array_to_jpeg(source, quality)


def _records(job, stats, skipped):
    for source, label in job.items:
        try:
            jpeg, pixels = _encode_item(source, job.jpeg_quality)
        except (ValueError, OSError) as e:
            if job.strict:
                raise ValueError(f"{source}: {e} (--strict)") from e
            skipped.append([str(source), str(e)])
            continue
        add_to_stats(stats, pixels)
        if job.subset == dataset_writer.UNLABELED_SUBSET:
            example = tfrecords.unlabeled_example(jpeg, job.num_classes, int(label))
        else:
            example = tfrecords.labeled_example(jpeg, label)
        yield example.SerializeToString()


def write_shard(job):
    """Writes one shard (and its statistics first); returns its statistics.

    The statistics file is written before the shard, so a shard on disk always
    has one: a resumed run keeps both.
    """
    stats, skipped = empty_stats(), []
    path = dataset_writer.shard_paths(job.output_dir, job.subset, job.num_shards)[job.shard]
    records = list(_records(job, stats, skipped))
    stats["skipped"] = skipped
    stats["records"] = len(records)
    atomic_files.write_json(
        sidecar_path(job.output_dir, job.subset, job.shard, job.num_shards), stats, None
    )
    tfrecords.write_tfrecord(path, records)
    return stats


def _finished_stats(job):
    path = dataset_writer.shard_paths(job.output_dir, job.subset, job.num_shards)[job.shard]
    sidecar = sidecar_path(job.output_dir, job.subset, job.shard, job.num_shards)
    if os.path.exists(path) and os.path.exists(sidecar):
        return atomic_files.read_json(sidecar)
    return None


def shard_jobs(items, num_shards, output_dir, num_classes, writer, strict):
    """The ShardJobs of every subset; items of shard i are bounds[i]:bounds[i + 1]."""
    jobs = []
    for subset, subset_items in items.items():
        count = num_shards[subset]
        bounds = dataset_writer.shard_bounds(len(subset_items), count)
        for shard in range(count):
            jobs.append(
                ShardJob(
                    subset,
                    shard,
                    count,
                    subset_items[bounds[shard] : bounds[shard + 1]],
                    output_dir,
                    num_classes,
                    writer.jpeg_quality,
                    strict,
                )
            )
    return jobs


def run_jobs(jobs, num_workers, keep_finished):
    """{(subset, shard): stats} of all jobs, finished shards kept when `keep_finished`."""
    results, todo = {}, []
    for job in jobs:
        stats = _finished_stats(job) if keep_finished else None
        if stats is not None:
            results[(job.subset, job.shard)] = stats
        else:
            todo.append(job)
    done = sum(len(j.items) for j in jobs) - sum(len(j.items) for j in todo)
    if done:
        logging.info("Keeping %d finished shards (%d images).", len(results), done)
    progress = progress_log.Progress(
        sum(len(j.items) for j in jobs), "images", start=done, prefix="converted "
    )
    if num_workers > 1 and len(todo) > 1:
        # spawn: TensorFlow is not fork-safe once imported.
        with multiprocessing.get_context("spawn").Pool(min(num_workers, len(todo))) as pool:
            for job, stats in zip(todo, pool.imap(write_shard, todo), strict=True):
                results[(job.subset, job.shard)] = stats
                progress.update(len(job.items))
    else:
        for job in todo:
            results[(job.subset, job.shard)] = write_shard(job)
            progress.update(len(job.items))
    progress.update(0, force=True)
    return results


def default_num_shards(items, overrides):
    """{subset: shards}: the flag's value, else one per IMAGES_PER_SHARD images."""
    counts = {}
    for subset, subset_items in items.items():
        value = (overrides or {}).get(subset)
        counts[subset] = int(value) if value else max(1, -(-len(subset_items) // IMAGES_PER_SHARD))
    return counts


def write_skipped(output_dir, results):
    """Writes skipped.txt (path<TAB>reason a line); returns the number of skipped files."""
    lines = [
        f"{path}\t{reason}\n" for key in sorted(results) for path, reason in results[key]["skipped"]
    ]
    with open(os.path.join(output_dir, SKIPPED_FILE), "w") as f:
        f.writelines(lines)
    if lines:
        logging.warning(
            "Skipped %d files that are not readable images: see %s.",
            len(lines),
            os.path.join(output_dir, SKIPPED_FILE),
        )
    return len(lines)


def dataset_info(task_name, class_names, results, num_shards, settings):
    """The dataset_info.json content of the written shards."""
    splits = {
        subset: sum(s["records"] for (sub, _), s in results.items() if sub == subset)
        for subset in num_shards
    }
    if not splits.get("train"):
        raise ValueError("No readable labeled training image at all: see skipped.txt.")
    train = [s for (sub, _), s in results.items() if sub == "train"]
    mean, std, median = combine_stats(train)
    return {
        "task_name": task_name,
        "splits": splits,
        "num_classes": len(class_names),
        "class_names": list(class_names),
        "median_size": median,
        "small_image_model": task_info.is_small_image(median),
        "mean_rgb": mean,
        "stddev_rgb": std,
        "random_flip": bool(settings.random_flip),
        "num_files": num_shards,
    }


# ---------------------------------------------------------------------------
# TFDS source.


def _tfds_items(name, split, data_dir, unlabeled):
    """[(image array, 0-based label or -1)] of one TFDS split, as encoded arrays."""
    arrays = dataset_writer.load_tfds_split(name, split, data_dir)
    if "image" not in arrays:
        raise ValueError(f"TFDS {name}/{split} has no 'image' feature: not image classification.")
    labels = arrays.get("label", np.full(len(arrays["image"]), -1))
    labels = np.where(np.asarray(labels) < 0, -1, labels).astype(np.int64)
    if not unlabeled and (labels < 0).any():
        raise ValueError(f"TFDS {name}/{split}: labeled split with unknown labels.")
    return list(zip(arrays["image"], labels.tolist(), strict=True))


def tfds_sources(settings, data_dir=None):
    """(class names, {subset: [(array, label)]}) of the TFDS flags."""
    import tensorflow_datasets as tfds

    builder = tfds.builder(settings.tfds_name, data_dir=data_dir)
    features = builder.info.features
    label = features["label"] if "label" in features else None
    if label is None or not hasattr(label, "names"):
        raise ValueError(f"--tfds_name={settings.tfds_name}: no ClassLabel 'label' feature.")
    items = {"train": _tfds_items(settings.tfds_name, settings.tfds_labeled_split, data_dir, False)}
    if settings.dev_fraction:
        items["train"], items["dev"] = split_dev(
            items["train"], settings.dev_fraction, settings.seed
        )
    if settings.tfds_test_split:
        items["test"] = _tfds_items(settings.tfds_name, settings.tfds_test_split, data_dir, False)
    if settings.tfds_unlabeled_split:
        items[dataset_writer.UNLABELED_SUBSET] = _tfds_items(
            settings.tfds_name, settings.tfds_unlabeled_split, data_dir, True
        )
    return list(label.names), items


# ---------------------------------------------------------------------------
# The whole write.


def process_folder(
    output_dir,
    settings,
    writer,
    task_name=TASK_NAME,
    num_workers=1,
    strict=False,
    tfds_data_dir=None,
):
    """Lists the sources, then writes every shard, skipped.txt and dataset_info.json.

    Args:
      output_dir: output directory.
      settings: `FolderSettings`.
      writer: `dataset_writer.WriterOptions` (num_shards overrides by subset).
      task_name: recorded in dataset_info.json.
      num_workers: parallel processes converting shards.
      strict: fail on the first unreadable file instead of skipping it.
      tfds_data_dir: TFDS data_dir of the TFDS route.

    Returns:
      The dataset_info.json content.
    """
    if settings.tfds_name:
        if settings.labeled_dir:
            raise ValueError("Pass --labeled_dir or --tfds_name, not both.")
        class_names, items = tfds_sources(settings, tfds_data_dir)
        inputs = f"tfds:{settings.tfds_name}"
    else:
        class_names, items = folder_sources(settings)
        inputs = {subset: fingerprint(subset_items) for subset, subset_items in items.items()}
    num_shards = default_num_shards(items, writer.num_shards)
    recorded = dict(
        settings._asdict(),
        task_name=task_name,
        inputs=inputs,
        num_shards=num_shards,
        jpeg_quality=writer.jpeg_quality,
        unlabeled_labels=dataset_writer.UNLABELED_LABELS,
    )
    if not writer.overwrite and dataset_writer.output_complete(output_dir, num_shards, recorded):
        logging.info(
            "Complete output already in %s; skipping. Pass --overwrite to rewrite.", output_dir
        )
        return atomic_files.read_json(os.path.join(output_dir, task_info.DATASET_INFO_FILE))
    keep = dataset_writer.begin_output(output_dir, recorded) and not writer.overwrite
    for subset, count in num_shards.items():
        dataset_writer.remove_stale_shards(output_dir, subset, count)
    jobs = shard_jobs(items, num_shards, output_dir, len(class_names), writer, strict)
    results = run_jobs(jobs, num_workers, keep)
    write_skipped(output_dir, results)
    info = dataset_info(task_name, class_names, results, num_shards, settings)
    dataset_writer.finish_output(output_dir, info)
    return info


# ---------------------------------------------------------------------------
# Command line.


def define_flags():
    """Defines the command-line flags (only when run as a script)."""
    dataset_writer.define_writer_flags(dict.fromkeys(SUBSETS))
    flags.adopt_module_key_flags(dataset_writer)
    flags.DEFINE_string("task_name", TASK_NAME, "Task name recorded in dataset_info.json.")
    flags.DEFINE_string("labeled_dir", None, "Labeled images: one sub-folder per class.")
    flags.DEFINE_string("dev_dir", None, "Dev images, with the class folders of --labeled_dir.")
    flags.DEFINE_string("test_dir", None, "Test images, with the class folders of --labeled_dir.")
    flags.DEFINE_float("dev_fraction", 0.0, "Fraction of each class held out as dev (--seed).")
    flags.DEFINE_string("unlabeled_dir", None, "Unlabeled images, searched recursively.")
    flags.DEFINE_string("unlabeled_glob", None, "Unlabeled images: a glob (** recursive).")
    flags.DEFINE_string("unlabeled_list", None, "Unlabeled images: a file of paths, one a line.")
    flags.DEFINE_string(
        "unlabeled_class_dir",
        None,
        "Unlabeled images in the class folders of --labeled_dir: their classes are never "
        "trained on, only kept as true labels to measure the pseudo labels.",
    )
    flags.DEFINE_string(
        "tfds_name", None, "A TFDS image-classification dataset instead of folders."
    )
    flags.DEFINE_string("tfds_labeled_split", "train", "TFDS split of the labeled images.")
    flags.DEFINE_string("tfds_test_split", "test", "TFDS split of the test images ('' for none).")
    flags.DEFINE_string("tfds_unlabeled_split", None, "TFDS split of the unlabeled images.")
    flags.DEFINE_string("tfds_data_dir", None, "TFDS data_dir; default: TFDS' own.")
    flags.DEFINE_bool("random_flip", True, "Whether training may flip images left-right.")
    flags.DEFINE_integer("seed", 0, "Seed of the dev hold-out and of the training order.")
    flags.DEFINE_integer("num_workers", os.cpu_count() or 1, "Parallel conversion processes.")
    flags.DEFINE_bool("strict", False, "Fail on an unreadable file instead of skipping it.")


def kept(output_dir):
    """What a run stopped by a full disk kept in `output_dir`, for its message."""
    shards = [
        name
        for name in (os.listdir(output_dir) if os.path.isdir(output_dir) else [])
        if re.fullmatch(r".*-\d{5}-of-\d{5}", name)
    ]
    return f"the {len(shards)} finished shards in {output_dir}; a re-run with the same flags keeps them"


def main(argv):
    """Writes the dataset as the flags say; a bad input exits with status 1 and a message."""
    del argv
    fl = flags.FLAGS
    settings = dataset_writer.settings_from_flags(FolderSettings, fl)
    settings = settings._replace(tfds_test_split=settings.tfds_test_split or None)
    writer = dataset_writer.writer_options_from_flags(fl, SUBSETS)
    if fl.num_workers < 1:
        raise app.UsageError(f"--num_workers={fl.num_workers}: expected >= 1.")
    with (
        dataset_writer.exit_on_errors("proc_folder.py"),
        disk_full.exit_on_full_disk("proc_folder.py", fl.output_dir, lambda: kept(fl.output_dir)),
    ):
        info = process_folder(
            fl.output_dir,
            settings,
            writer,
            fl.task_name,
            fl.num_workers,
            fl.strict,
            fl.tfds_data_dir,
        )
    print(
        f"proc_folder.py: wrote {info['splits']} ({info['num_classes']} classes) to {fl.output_dir}"
    )


if __name__ == "__main__":
    define_flags()
    app.run(main)
