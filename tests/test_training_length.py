"""Training length in epochs (training_length.py, main.py --train_epochs): by hand and end to end."""

import os
import re
import shutil

import numpy as np
import pytest
from conftest import TINY_TRAIN_FLAGS, run_script, write_labeled_subset


def test_steps_for_epochs_by_hand():
    import training_length

    # 64 epochs of 1,000 images at 64 per step: exactly 1,000 steps, not 1,001.
    assert training_length.steps_for_epochs(64, 1000, 64) == 1000
    # 3 epochs: 46.875 steps, rounded up so every image is seen 3 times.
    assert training_length.steps_for_epochs(3, 1000, 64) == 47
    # A student's epoch of 50,000 pseudo labels at 32 x 2 unlabeled per step.
    assert training_length.steps_for_epochs(1, 50_000, 32 * 2.0) == 782
    assert training_length.steps_for_epochs(0.001, 10, 64) == 1
    for args, name in (((0, 10, 8), "epochs"), ((1, 0, 8), "num_images"), ((1, 10, -8), "images")):
        with pytest.raises(ValueError, match=name):
            training_length.steps_for_epochs(*args)


def _filter_output(root, total):
    import atomic_files

    data = os.path.join(root, "data")
    os.makedirs(os.path.join(root, "stats"))
    os.makedirs(data)
    atomic_files.write_json(os.path.join(root, "threshold.json"), {"0": 0.3})
    if total is not None:
        atomic_files.write_json(
            os.path.join(root, "stats", "final_stats.json"), {"total_cnt": total}
        )
    return data


@pytest.mark.slow
def test_unlabeled_images_are_counted_from_the_best_source(tiny_data, tmp_path):
    import training_length

    # A proc_* folder's unlabeled/ records: its dataset_info.json one level up.
    unlabeled = os.path.join(tiny_data, "unlabeled")
    assert training_length.num_unlabeled_images(unlabeled) == 64
    # Records without any description: read and counted.
    bare = str(tmp_path / "bare")
    shutil.copytree(unlabeled, bare)
    assert training_length.num_unlabeled_images(bare) == 64
    # A filter output: its final stats, whatever its files hold.
    filtered = _filter_output(str(tmp_path / "filter"), 1234)
    assert training_length.num_unlabeled_images(filtered) == 1234
    # Several directories, as --unlabel_data_dir separates them.
    assert training_length.num_unlabeled_images(f"{filtered};{bare};") == 1234 + 64
    # A filter output whose pass 2 has not finished is not guessed at.
    unfinished = _filter_output(str(tmp_path / "unfinished"), None)
    with pytest.raises(ValueError, match=r"final_stats.json.*--train_steps"):
        training_length.num_unlabeled_images(unfinished)
    with pytest.raises(FileNotFoundError, match="no train-\\* or extra-\\* files"):
        training_length.num_unlabeled_images(str(tmp_path / "filter"))


def _train_epochs(data_dir, model_dir, *flags):
    result = run_script(
        "main.py",
        *TINY_TRAIN_FLAGS,
        f"--label_data_dir={data_dir}",
        f"--model_dir={model_dir}",
        "--train_batch_size=16",
        "--iterations_per_loop=50",
        "--save_checkpoints_steps=1000",
        "--eval_subsets=dev",
        *flags,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    if any(flag.startswith("--train_steps=") for flag in flags):
        assert "--train_steps=7 is ignored: --train_epochs=1.5 sets the length." in result.stderr
    steps = re.search(r"--train_epochs: (\d+) steps \(([^)]*)\)", result.stderr)
    assert steps, result.stderr[-3000:]
    return int(steps.group(1)), steps.group(2)


@pytest.mark.slow
@pytest.mark.e2e
def test_teacher_steps_follow_the_labeled_set(tiny_data, tmp_path):
    """One --train_epochs gives twice the steps on twice the labeled images."""
    import atomic_files

    small = str(tmp_path / "small")
    rng = np.random.default_rng(1)
    for subset, n in (("train", 48), ("dev", 10)):
        write_labeled_subset(small, subset, n, 1, rng)
    atomic_files.write_json(os.path.join(small, "dataset_info.json"), {"train": 48, "dev": 10})
    # 1.5 epochs at 16 per step: 200 images -> 18.75 -> 19 steps; 48 -> 4.5 -> 5.
    for data_dir, images, steps in ((tiny_data, 200, 19), (small, 48, 5)):
        model_dir = str(tmp_path / f"model{images}")
        got, what = _train_epochs(data_dir, model_dir, "--train_epochs=1.5", "--train_steps=7")
        assert (got, what) == (steps, f"1.5 epochs of {images} labeled images at 16 per step")
        assert os.path.exists(os.path.join(model_dir, f"ckpt-{steps}.index"))
        assert atomic_files.read_json(os.path.join(model_dir, "FLAGS.json"))["train_steps"] == steps


@pytest.mark.slow
@pytest.mark.e2e
def test_student_steps_follow_the_unlabeled_set(tiny_data, teacher, tmp_path):
    """A student's epochs count its unlabeled images: 64 at 16 x 2 per step is 2 steps."""
    student = str(tmp_path / "student")
    got, what = _train_epochs(
        tiny_data,
        student,
        "--train_epochs=1",
        "--unlabel_ratio=2",
        f"--unlabel_data_dir={os.path.join(tiny_data, 'unlabeled')}",
        f"--teacher_model_path={teacher[0].model_dir}",
    )
    assert (got, what) == (2, "1 epochs of 64 unlabeled images at 32 per step")
    assert os.path.exists(os.path.join(student, "ckpt-2.index"))


@pytest.mark.slow
@pytest.mark.e2e
def test_bad_train_epochs_is_a_usage_error(tiny_data, tmp_path):
    result = run_script(
        "main.py",
        *TINY_TRAIN_FLAGS,
        f"--label_data_dir={tiny_data}",
        f"--model_dir={tmp_path / 'm'}",
        "--train_epochs=0",
    )
    assert result.returncode == 1
    assert "--train_epochs=0.0: expected > 0." in result.stderr
    assert not os.path.exists(tmp_path / "m")
