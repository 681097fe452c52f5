"""Nothing silently wrong: each case fails with a message naming the file or flag.

Every CLI case runs the real entry point as a subprocess and checks its exit
status and message, and that nothing already written was changed.
"""

import json
import os
import shutil
import subprocess
import sys
import time

import numpy as np
import pytest
import tensorflow as tf
from conftest import NUM_CLASSES, ROOT, TINY_OVERRIDES, class_image, tiny_config

import atomic_files
import checkpoints
import data_input
import file_names
import predict_label
import run_lock
import task_info
import tfrecords
import train_lib

pytestmark = [pytest.mark.slow, pytest.mark.e2e]

STRATEGY = tf.distribute.get_strategy()
BASE = ["--use_tpu=False", "--use_bfloat16=False", "--task_name=mnist"]
TINY = ["--width_coefficient=0.1", "--depth_coefficient=0.1"]


def run(script, *args, timeout=300):
    return subprocess.run(
        [sys.executable, os.path.join(ROOT, script), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
    )


def run_main(*args):
    return run("main.py", *BASE, *args)


def assert_fails(out, *messages):
    text = out.stderr + out.stdout
    assert out.returncode != 0, text[-3000:]
    for message in messages:
        assert message in text, (message, text[-3000:])


def snapshot(directory):
    """{relative path: bytes} of every file under `directory`."""
    out = {}
    for root, _, names in os.walk(directory):
        for name in names:
            path = os.path.join(root, name)
            with open(path, "rb") as f:
                out[os.path.relpath(path, directory)] = f.read()
    return out


def write_records(path, examples):
    tfrecords.write_tfrecord(path, (e.SerializeToString() for e in examples))


def labeled_dir(tmp_path, name, labels=None, bad_record=None):
    """A labeled train/dev/test set; `labels` (1-based) or `bad_record` go into train file 1."""
    data_dir = tmp_path / name
    rng = np.random.default_rng(0)
    for subset in ("train", "dev", "test"):
        for shard in range(2):
            examples = [
                tfrecords.labeled_example(tfrecords.encode_jpeg(class_image(i % 10, rng)), i % 10)
                for i in range(8)
            ]
            records = [e.SerializeToString() for e in examples]
            if subset == "train" and shard == 1:
                if labels is not None:
                    records = [_with_label(examples[i], lab) for i, lab in enumerate(labels)]
                if bad_record is not None:
                    records[3] = bad_record
            tfrecords.write_tfrecord(
                file_names.labeled_shard_path(str(data_dir), subset, shard, 2), iter(records)
            )
    atomic_files.write_json(
        str(data_dir / "dataset_info.json"), {"train": 16, "dev": 16, "test": 16}
    )
    return str(data_dir)


def _with_label(example, label):
    copy = tf.train.Example()
    copy.CopyFrom(example)
    copy.features.feature["image/class/label"].int64_list.value[:] = [label]
    return copy.SerializeToString()


# ---------------------------------------------------------------------------
# Flags.


@pytest.mark.parametrize(
    "flag",
    [
        "--train_steps=0",
        "--train_batch_size=0",
        "--eval_batch_size=-8",
        "--iterations_per_loop=0",
        "--save_checkpoints_steps=0",
    ],
)
def test_counts_must_be_positive(flag, tmp_path):
    out = run_main("--mode=train", f"--model_dir={tmp_path}/m", flag)
    assert_fails(out, f"--{flag.split('=')[0][2:]} must be a positive integer")
    assert not (tmp_path / "m").exists()


@pytest.mark.parametrize(
    "flag, message",
    [
        ("--augment_name=v2", "--augment_name='v2': expected 'none' or one of ['v1']."),
        ("--unl_aug=randaug", "--unl_aug='randaug': expected 'none' or one of ['v1']."),
    ],
)
def test_unknown_augmentation_is_a_usage_error(flag, message, tiny_data, tmp_path):
    out = run_main(
        "--mode=train", f"--label_data_dir={tiny_data}", f"--model_dir={tmp_path}/m", flag
    )
    assert_fails(out, message)
    assert "Traceback" not in out.stderr
    assert not (tmp_path / "m").exists()


# ---------------------------------------------------------------------------
# Labels and targets.


def test_labeled_label_out_of_range_names_the_file(tmp_path):
    """Label 0 (a 0-based label written as is) stops training, naming the file and record."""
    data_dir = labeled_dir(tmp_path, "data", labels=[1, 2, 0, 4, 5, 6, 7, 8])
    bad_file = file_names.labeled_shard_path(data_dir, "train", 1, 2)
    out = run_main(
        "--mode=train",
        f"--label_data_dir={data_dir}",
        f"--model_dir={tmp_path}/m",
        "--train_steps=2",
        "--train_batch_size=16",
        "--iterations_per_loop=1",
        *TINY,
    )
    assert_fails(
        out, f"{bad_file}: record 2 cannot be used: key 'image/class/label' is 0: expected 1..10"
    )
    assert not tf.io.gfile.glob(f"{tmp_path}/m/ckpt-*")


def test_label_past_the_last_class_stops_training(tmp_path):
    data_dir = labeled_dir(tmp_path, "data", labels=[1, 2, 3, 4, 5, NUM_CLASSES + 1, 7, 8])
    config = tiny_config(
        tmp_path / "m", data_dir, train_steps=2, train_batch_size=16, iterations_per_loop=1
    )
    with pytest.raises(data_input.DataError, match=r"00002: record 5 .*'image/class/label' is 11"):
        train_lib.train(config, STRATEGY)


def test_eval_label_out_of_range_names_the_file(teacher, tmp_path):
    """Evaluation reads dev/test: a label of 11 fails instead of scoring a miss."""
    data_dir = labeled_dir(tmp_path, "data")
    bad = file_names.labeled_shard_path(data_dir, "dev", 0, 2)
    records = [r.numpy() for r in tf.data.TFRecordDataset(bad)]
    example = tf.train.Example.FromString(records[5])
    records[5] = _with_label(example, NUM_CLASSES + 1)
    tfrecords.write_tfrecord(bad, iter(records))
    config = tiny_config(teacher[0].model_dir, data_dir, eval_subsets=("dev",))
    with pytest.raises(data_input.DataError, match=r"dev-00000-of-00002: record 5 .*1\.\.10"):
        train_lib.evaluate_model(
            teacher[1].ema_model, teacher[1].description, STRATEGY, config, subsets=["dev"]
        )


def test_stored_pseudo_label_out_of_range_fails(tiny_data, tmp_path):
    rng = np.random.default_rng(0)
    examples = []
    for i in range(16):
        probs = np.full([NUM_CLASSES], 0.1, np.float32)
        examples.append(
            tfrecords.pseudo_labeled_example(
                tfrecords.encode_jpeg(class_image(i % 10, rng)), probs, label=i % 10
            )
        )
    examples[4].features.feature["label"].int64_list.value[:] = [NUM_CLASSES]
    write_records(str(tmp_path / "pseudo" / "train-0-00000-of-00001"), examples)
    config = tiny_config(
        tmp_path / "m",
        tiny_data,
        train_steps=2,
        train_batch_size=8,
        iterations_per_loop=1,
        unlabel_ratio=2,
        unlabel_data_dir=str(tmp_path / "pseudo"),
        use_cache=False,
    )
    with pytest.raises(data_input.DataError, match=r"train-0-00000-of-00001: record 4 .*0\.\.9"):
        train_lib.train(config, STRATEGY)


def test_placeholder_targets_stop_before_the_first_step(tiny_data, tmp_path):
    """Raw unlabeled records (all-zero probabilities) without a teacher: run predict first."""
    out = run_main(
        "--mode=train",
        f"--label_data_dir={tiny_data}",
        f"--model_dir={tmp_path}/m",
        f"--unlabel_data_dir={tiny_data}/unlabeled",
        "--unlabel_ratio=1",
        "--train_steps=2",
        "--train_batch_size=8",
        *TINY,
    )
    assert_fails(out, "extra-00000-of-00002", "all-zero probabilities", "Run the prediction")
    assert not tf.io.gfile.glob(f"{tmp_path}/m/ckpt-*")


def test_incomplete_filter_output_is_refused(tiny_data, tmp_path):
    """A student on filter output whose final stats are missing (a shard not done) stops."""
    rng = np.random.default_rng(0)
    out_dir = tmp_path / "filtered"
    examples = [
        tfrecords.pseudo_labeled_example(
            tfrecords.encode_jpeg(class_image(i % 10, rng)), np.eye(NUM_CLASSES)[i % 10]
        )
        for i in range(8)
    ]
    data_file = str(out_dir / "data" / "train-0-00000-of-00002")
    write_records(data_file, examples)
    atomic_files.write_json(str(out_dir / "threshold.json"), {"0": 0.5})
    args = [
        "--mode=train",
        f"--label_data_dir={tiny_data}",
        f"--unlabel_data_dir={out_dir}/data",
        "--unlabel_ratio=1",
        "--train_steps=1",
        "--train_batch_size=8",
        *TINY,
    ]
    out = run_main(*args, f"--model_dir={tmp_path}/m1")
    assert_fails(out, "final_stats.json is missing", "--check_filter_stats=False")
    # Final stats listing a second file that is not there.
    size = os.path.getsize(data_file)
    atomic_files.write_json(
        str(out_dir / "stats" / "final_stats.json"),
        {
            "files": {
                "train-0-00000-of-00002": {"num_records": 8, "num_bytes": size},
                "train-0-00001-of-00002": {"num_records": 8, "num_bytes": size},
            }
        },
    )
    out = run_main(*args, f"--model_dir={tmp_path}/m2")
    assert_fails(out, "train-0-00001-of-00002 is listed in", "but missing")
    out = run_main(*args, f"--model_dir={tmp_path}/m3", "--check_filter_stats=False")
    assert out.returncode == 0, out.stderr[-3000:]


# ---------------------------------------------------------------------------
# Resume, checkpoints and locks.


def test_failed_resume_changes_nothing(tiny_data, tmp_path):
    model_dir = tmp_path / "m"
    common = [
        "--mode=train",
        f"--label_data_dir={tiny_data}",
        f"--model_dir={model_dir}",
        "--train_batch_size=8",
        "--iterations_per_loop=2",
        "--save_checkpoints_steps=2",
        "--depth_coefficient=0.1",
    ]
    out = run_main(*common, "--train_steps=2", "--width_coefficient=0.1")
    assert out.returncode == 0, out.stderr[-3000:]
    before = snapshot(model_dir)
    out = run_main(*common, "--train_steps=4", "--width_coefficient=0.2")
    assert_fails(
        out,
        "cannot resume",
        "width_coefficient: 0.1 in model_params.txt, 0.2 now",
        "Nothing was changed",
    )
    assert snapshot(model_dir) == before


def test_truncated_latest_checkpoint_falls_back_to_previous(tiny_data, tmp_path):
    config = tiny_config(tmp_path, tiny_data, train_steps=4, iterations_per_loop=2)
    config.save_checkpoints_steps = 2
    train_lib.train(config, STRATEGY)
    (data_file,) = tf.io.gfile.glob(str(tmp_path / "ckpt-4.data-*"))
    with open(data_file, "r+b") as f:
        f.truncate(100)
    state = train_lib.TrainState(config, STRATEGY)
    state.restore_or_initialize()
    assert state.step == 2


def test_second_training_in_a_model_dir_fails_naming_the_holder(tiny_data, tmp_path):
    model_dir = tmp_path / "m"
    model_dir.mkdir()
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    try:
        with open(model_dir / train_lib.LOCK_FILE, "w") as f:
            json.dump({"host": os.uname().nodename, "pid": holder.pid, "start_time": "t0"}, f)
        out = run_main(
            "--mode=train",
            f"--label_data_dir={tiny_data}",
            f"--model_dir={model_dir}",
            "--train_steps=1",
            "--train_batch_size=8",
            *TINY,
        )
        assert_fails(out, "is in use by another run", f"pid {holder.pid}", "started t0")
        assert sorted(os.listdir(model_dir)) == [train_lib.LOCK_FILE]
    finally:
        holder.kill()
        holder.wait()


def test_stale_lock_is_taken_over(tmp_path, caplog):
    """The lock of a process that has exited is taken over with a warning."""
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    path = str(tmp_path / "lock")
    with open(path, "w") as f:
        json.dump({"host": os.uname().nodename, "pid": dead.pid, "start_time": "t0"}, f)
    with run_lock.RunLock(path, "--model_dir=x"):
        assert atomic_files.read_json(path)["pid"] == os.getpid()
    assert "Taking over the stale lock" in caplog.text
    assert not os.path.exists(path)


def test_run_lock_is_exclusive_in_process(tmp_path):
    path = str(tmp_path / "lock")
    with run_lock.RunLock(path, "--model_dir=x"):
        with pytest.raises(RuntimeError, match=f"pid {os.getpid()}"):
            run_lock.RunLock(path, "--model_dir=x").acquire()
    assert not os.path.exists(path)


# ---------------------------------------------------------------------------
# The network comes from its checkpoint.


def test_eval_and_predict_use_the_checkpoints_size_and_normalization(teacher, tmp_path):
    """Flags that describe another network or task do not change eval or predictions."""
    t_config, t_state, results, _ = teacher
    wrong = tiny_config(
        t_config.model_dir,
        t_config.label_data_dir,
        task_name="svhn",
        input_image_size=64,
        override_params={"width_coefficient": 0.5},
    )
    loaded = checkpoints.load_model(t_config.model_dir, what="x", default_task_name="svhn")
    assert loaded.image_size == 32 and loaded.description["task_name"] == "mnist"
    assert loaded.mean_rgb == task_info.get_task_info("mnist").mean_rgb
    got = train_lib.evaluate(dataclasses_replace(wrong, model_dir=str(tmp_path / "copy")), STRATEGY)
    assert got == results

    shutil.copytree(os.path.join(t_config.label_data_dir, "unlabeled"), tmp_path / "unl")
    outputs = {}
    for name, config in (("right", t_config), ("wrong", wrong)):
        predict_label.run_prediction(
            dataclasses_replace(config, label_data_dir=str(tmp_path / "unl")),
            STRATEGY,
            predict_ckpt_path=t_config.model_dir,
            output_dir=str(tmp_path / name / "pred"),
            info_dir=str(tmp_path / name / "info"),
            num_shards=2,
            shard_id="0,1",
            file_prefix="extra",
        )
        outputs[name] = snapshot(tmp_path / name / "pred")
    assert outputs["right"] == outputs["wrong"]


def dataclasses_replace(config, **kwargs):
    import dataclasses

    copy = dataclasses.replace(config, **kwargs)
    if "model_dir" in kwargs and not os.path.exists(kwargs["model_dir"]):
        shutil.copytree(config.model_dir, kwargs["model_dir"])
    return copy


# ---------------------------------------------------------------------------
# Stale predictions.


@pytest.fixture(scope="module")
def two_checkpoints(tiny_data, tmp_path_factory):
    """Two tiny model_dirs trained from different seeds: (dir a, dir b)."""
    dirs = []
    for seed in (0, 1):
        model_dir = tmp_path_factory.mktemp(f"ckpt{seed}")
        config = tiny_config(model_dir, tiny_data, train_steps=2, iterations_per_loop=2, seed=seed)
        train_lib.set_seed(seed)
        state = train_lib.TrainState(config, STRATEGY)
        state.restore_or_initialize()
        train_lib.write_run_files(config, state)
        train_lib.train(config, STRATEGY, state=state)
        dirs.append(str(model_dir))
    return dirs


def test_predictions_record_their_checkpoint_and_refuse_another(
    two_checkpoints, tiny_data, tmp_path
):
    a, b = two_checkpoints
    common = [
        "--mode=predict",
        f"--label_data_dir={tiny_data}/unlabeled",
        "--file_prefix=extra",
        "--num_shards=2",
        "--shard_id=0,1",
        "--eval_batch_size=8",
        f"--info_dir={tmp_path}/info",
        f"--output_dir={tmp_path}/pred",
    ]
    out = run_main(*common, f"--predict_ckpt_path={a}")
    assert out.returncode == 0, out.stderr[-3000:]
    info = atomic_files.read_json(file_names.info_path(str(tmp_path / "info"), 1, 2, 0))
    provenance = info["provenance"]
    assert info["image_num"] == 32 and provenance["input_records"] == 32
    assert provenance["checkpoint"] == os.path.join(a, "ckpt-2")
    assert provenance["global_step"] == 2
    assert provenance["fingerprint"] == checkpoints.fingerprint(os.path.join(a, "ckpt-2"))
    assert provenance["model"]["width_coefficient"] == TINY_OVERRIDES["width_coefficient"]
    assert provenance["input_file"].endswith("extra-00001-of-00002")
    first = snapshot(tmp_path)

    # The same checkpoint again: finished shards are skipped, nothing changes.
    out = run_main(*common, f"--predict_ckpt_path={a}")
    assert out.returncode == 0 and "exists, skipping" in out.stderr
    assert snapshot(tmp_path) == first

    # Another checkpoint into the same folders: an error naming both, nothing written.
    out = run_main(*common, f"--predict_ckpt_path={b}")
    assert_fails(out, os.path.join(a, "ckpt-2"), os.path.join(b, "ckpt-2"), "--overwrite")
    assert snapshot(tmp_path) == first

    # --overwrite replaces them; a fresh folder gets the same bytes (deterministic records).
    out = run_main(*common, f"--predict_ckpt_path={b}", "--overwrite")
    assert out.returncode == 0, out.stderr[-3000:]
    replaced = atomic_files.read_json(file_names.info_path(str(tmp_path / "info"), 0, 2, 0))
    assert replaced["provenance"]["checkpoint"] == os.path.join(b, "ckpt-2")
    fresh = [c.replace(str(tmp_path), str(tmp_path / "fresh")) for c in common]
    out = run_main(*fresh, f"--predict_ckpt_path={b}")
    assert out.returncode == 0, out.stderr[-3000:]
    assert snapshot(tmp_path / "pred") == snapshot(tmp_path / "fresh" / "pred")


def test_predict_names_a_truncated_or_non_image_shard(two_checkpoints, tmp_path):
    rng = np.random.default_rng(0)
    unl = tmp_path / "unl"
    good = [
        tfrecords.unlabeled_example(tfrecords.encode_jpeg(class_image(1, rng)), 10)
        for _ in range(6)
    ]
    write_records(str(unl / "extra-00000-of-00002"), good)
    bad = list(good)
    bad[2] = tfrecords.unlabeled_example(b"this is not an image", 10)
    write_records(str(unl / "extra-00001-of-00002"), bad)
    common = [
        "--mode=predict",
        f"--label_data_dir={unl}",
        "--file_prefix=extra",
        "--num_shards=2",
        f"--info_dir={tmp_path}/info",
        f"--output_dir={tmp_path}/pred",
        f"--predict_ckpt_path={two_checkpoints[0]}",
    ]
    out = run_main(*common, "--shard_id=1")
    assert_fails(
        out,
        "extra-00001-of-00002: record 2 cannot be used: key 'image/encoded' is not a decodable",
    )
    path = str(unl / "extra-00000-of-00002")
    with open(path, "r+b") as f:
        f.truncate(os.path.getsize(path) - 10)
    out = run_main(*common, "--shard_id=0")
    assert_fails(
        out,
        "extra-00000-of-00002: record 5 cannot be used: the file is truncated or corrupted here",
    )
    assert not os.path.exists(file_names.prediction_path(str(tmp_path / "pred"), 0, 2, 0))


def test_training_names_a_truncated_labeled_file(tmp_path):
    data_dir = labeled_dir(tmp_path, "data")
    path = file_names.labeled_shard_path(data_dir, "train", 0, 2)
    with open(path, "r+b") as f:
        f.truncate(os.path.getsize(path) // 2)
    out = run_main(
        "--mode=train",
        f"--label_data_dir={data_dir}",
        f"--model_dir={tmp_path}/m",
        "--train_steps=2",
        "--train_batch_size=8",
        "--use_cache=False",
        *TINY,
    )
    assert_fails(out, "train-00000-of-00002: record", "cannot be used")


def test_missing_key_names_the_file(tiny_data, tmp_path):
    data_dir = labeled_dir(tmp_path, "data")
    bad = tf.train.Example(
        features=tf.train.Features(feature={"image/encoded": tfrecords.bytes_feature(b"x")})
    ).SerializeToString()
    data_dir = labeled_dir(tmp_path, "data2", bad_record=bad)
    error = data_input.locate_bad_record(data_input.labeled_files(data_dir, "train"), "labeled")
    assert "train-00001-of-00002: record 3" in str(error) and "image/class/label" in str(error)


# ---------------------------------------------------------------------------
# Temporary files and exit statuses.


def test_temporary_files_are_exclusive_and_cleaned(tmp_path):
    target = str(tmp_path / "out.json")
    planted = tmp_path / "elsewhere"
    planted.write_text("keep")
    os.symlink(planted, str(tmp_path / "link"))
    with pytest.raises(FileExistsError):
        atomic_files.create_exclusive(str(tmp_path / "link"))
    # A temporary file of a dead process on this host is removed; a live one's is kept.
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    host = os.uname().nodename
    stale = f"{target}.tmp-{host}-{dead.pid}-abcd"
    live = f"{target}.tmp-{host}-{os.getpid()}-ef01"
    for path in (stale, live):
        open(path, "w").close()
    atomic_files.write_json(target, {"a": 1})
    assert not os.path.exists(stale) and os.path.exists(live)
    assert planted.read_text() == "keep" and atomic_files.read_json(target) == {"a": 1}


def test_main_modes_exit_zero(teacher, tmp_path):
    t_config = teacher[0]
    out = run_main(
        "--mode=eval",
        f"--model_dir={t_config.model_dir}",
        f"--label_data_dir={t_config.label_data_dir}",
        "--eval_batch_size=16",
    )
    assert out.returncode == 0 and "Eval results" in out.stderr, out.stderr[-3000:]
    out = run_main(
        "--mode=export", f"--model_dir={t_config.model_dir}", f"--export_dir={tmp_path}/export"
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert os.path.exists(tmp_path / "export" / "saved_model.pb")


def test_convert_ckpt_exit_status_and_garbage_h5(tmp_path):
    garbage = tmp_path / "weights.h5"
    garbage.write_bytes(b"not an hdf5 file" * 10)
    out = run("convert_ckpt.py", f"--input_path={garbage}", f"--output_dir={tmp_path}/out")
    assert_fails(out, f"--input_path={garbage} is not a readable HDF5")
    assert not (tmp_path / "out").exists()
    import keras

    keras.utils.set_random_seed(0)
    source = keras.applications.EfficientNetB0(weights=None, classes=7)
    weights = str(tmp_path / "b0.weights.h5")
    source.save_weights(weights)
    started = time.time()
    out = run(
        "convert_ckpt.py",
        f"--input_path={weights}",
        f"--output_dir={tmp_path}/converted",
        "--input_image_size=64",
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert "Converted keras weights" in out.stdout
    assert os.path.getmtime(tmp_path / "converted" / "model_params.txt") >= started - 1


def test_reassign_records_its_checkpoint_and_refuses_another(two_checkpoints, tiny_data, tmp_path):
    a, b = two_checkpoints
    rng = np.random.default_rng(2)
    filtered = tmp_path / "filtered"
    examples = [
        tfrecords.pseudo_labeled_example(
            tfrecords.encode_jpeg(class_image(i % 10, rng)), np.eye(NUM_CLASSES)[0]
        )
        for i in range(5)
    ]
    write_records(str(filtered / "train-0-00000-of-00001"), examples)
    config = tiny_config(a, str(filtered))

    def reassign(checkpoint, **kwargs):
        return predict_label.run_prediction(
            config,
            STRATEGY,
            predict_ckpt_path=checkpoint,
            output_dir=str(tmp_path / "out"),
            info_dir=None,
            num_shards=1,
            shard_id="0",
            reassign_label=True,
            file_prefix="train",
            **kwargs,
        )

    assert reassign(a) == {0: 5}
    record = atomic_files.read_json(
        str(tmp_path / "out" / "provenance" / "train-0-00000-of-00001.json")
    )
    assert record["provenance"]["checkpoint"] == os.path.join(a, "ckpt-2")
    assert record["provenance"]["input_records"] == 5
    before = snapshot(tmp_path / "out")
    assert reassign(a) == {0: None}
    with pytest.raises(ValueError, match="was made by the checkpoint .*--overwrite"):
        reassign(b)
    assert snapshot(tmp_path / "out") == before
    assert reassign(b, overwrite=True) == {0: 5}
