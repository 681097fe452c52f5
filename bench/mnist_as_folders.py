r"""Writes MNIST as folders of PNG files, the input of local_scripts/custom/ (docs/own_data.md).

The same subsets as the MNIST demo (proc_mnist.make_mnist_splits, seed 0; the
sizes below are the defaults of --labeled_per_class and --num_dev):
  labeled/<digit>/*.png    100 training images per digit
  dev/<digit>/*.png        5,000 held-out training images
  test/<digit>/*.png       the 10,000 test images
  unlabeled/<digit>/*.png  the other 54,000 training images, by true digit
                           (--held_out_labels, for UNLABELED_CLASS_DIR), or
  unlabeled/<k>/*.png      in folders of 1,000 without labels (--noheld_out_labels)
Images are the 28x28 grayscale digits as they are in the wheel. A finished
folder (its .done marker) is not rewritten.

Usage:
  python bench/mnist_as_folders.py --output_dir=/tmp/mnist_png
  LABELED_DIR=/tmp/mnist_png/labeled DEV_DIR=/tmp/mnist_png/dev \
    TEST_DIR=/tmp/mnist_png/test UNLABELED_CLASS_DIR=/tmp/mnist_png/unlabeled \
    bash local_scripts/custom/prepro.sh
"""

import os
import sys
import time

import numpy as np
from absl import app, flags

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import proc_mnist  # noqa: E402

FOLDER_SIZE = 1000  # images per folder of the unlabeled images without labels

flags.DEFINE_string("output_dir", None, "Root of the folders.", required=True)
flags.DEFINE_bool("held_out_labels", True, "Unlabeled images in class folders (true labels).")
flags.DEFINE_string("cache_dir", proc_mnist.DEFAULT_CACHE_DIR, "Where the MNIST wheel is.")
flags.DEFINE_integer("labeled_per_class", proc_mnist.LABELED_PER_CLASS, "Labeled images per digit.")
flags.DEFINE_integer("num_dev", proc_mnist.NUM_DEV, "Dev images held out of the training images.")
FLAGS = flags.FLAGS


def write_subset(root, name, images, labels, indices, by_class):
    """Writes images[indices] as PNG files under root/name/<class or chunk>/."""
    from PIL import Image

    folder = os.path.join(root, name)
    marker = os.path.join(folder, ".done")
    if os.path.exists(marker):
        print(f"{folder}: done earlier")
        return
    start = time.time()
    for k, i in enumerate(indices):
        sub = str(labels[i]) if by_class else str(k // FOLDER_SIZE)
        os.makedirs(os.path.join(folder, sub), exist_ok=True)
        Image.fromarray(images[i]).save(os.path.join(folder, sub, f"{i:05d}.png"))
    open(marker, "w").close()
    print(f"{folder}: {len(indices)} PNG files in {time.time() - start:.0f} s")


def main(argv):
    del argv
    data = proc_mnist.load_mnist_wheel(os.path.expanduser(FLAGS.cache_dir))
    splits = proc_mnist.make_mnist_splits(data, FLAGS.labeled_per_class, FLAGS.num_dev)
    sources = {
        "labeled": ("train_images", "train_labels", True),
        "dev": ("train_images", "train_labels", True),
        "test": ("test_images", "test_labels", True),
        "unlabeled": ("train_images", "train_labels", FLAGS.held_out_labels),
    }
    subset_of = {"labeled": "train", "dev": "dev", "test": "test", "unlabeled": "extra"}
    for name, (images, labels, by_class) in sources.items():
        indices = np.asarray(splits[subset_of[name]].order)
        write_subset(
            FLAGS.output_dir, name, data[images], np.asarray(data[labels]), indices, by_class
        )


if __name__ == "__main__":
    app.run(main)
