"""bench/mnist_as_folders.py: MNIST (here a fake wheel) written as the PNG folders of docs/own_data.md."""

import os

import numpy as np
import pytest
from conftest import run_script
from PIL import Image
from test_proc_mnist import make_digits, mnist_pickle, write_fake_wheel

import proc_mnist

pytestmark = [pytest.mark.slow, pytest.mark.e2e]


def test_writes_the_demo_subsets_as_class_folders(tmp_path):
    train_images, train_labels = make_digits(200, 0)
    test_images, test_labels = make_digits(30, 1)
    data = dict(
        train_images=train_images,
        train_labels=train_labels,
        test_images=test_images,
        test_labels=test_labels,
    )
    cache = str(tmp_path / "cache")
    write_fake_wheel(cache, mnist_pickle(data, num_valid=50))
    out = tmp_path / "png"
    args = [f"--output_dir={out}", f"--cache_dir={cache}", "--labeled_per_class=3", "--num_dev=40"]
    result = run_script("bench/mnist_as_folders.py", *args)
    assert result.returncode == 0, result.stderr
    loaded = proc_mnist.load_mnist_wheel(cache)
    splits = proc_mnist.make_mnist_splits(loaded, 3, 40)
    counts = {}
    for name, subset, images, labels in (
        ("labeled", "train", "train_images", "train_labels"),
        ("dev", "dev", "train_images", "train_labels"),
        ("test", "test", "test_images", "test_labels"),
        ("unlabeled", "extra", "train_images", "train_labels"),
    ):
        files = sorted(
            os.path.join(root, f) for root, _, fs in os.walk(out / name) for f in fs if f != ".done"
        )
        counts[name] = len(files)
        assert len(files) == len(splits[subset].order)
        for path in files:
            index = int(os.path.basename(path)[:-4])
            digit = os.path.basename(os.path.dirname(path))
            assert int(digit) == loaded[labels][index]  # the class folder is the true digit
            np.testing.assert_array_equal(np.asarray(Image.open(path)), loaded[images][index])
    assert counts == {"labeled": 30, "dev": 40, "test": 30, "unlabeled": 130}
    again = run_script("bench/mnist_as_folders.py", *args)
    assert again.returncode == 0 and again.stdout.count("done earlier") == 4
