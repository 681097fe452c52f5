"""A full disk during prediction, checkpoint writing and proc_folder.py.

Each entry point runs with its output on a small tmpfs that is full (or is
filled right before a checkpoint is saved), mounted in a user and mount
namespace of its own (`unshare`), so the real writes fail with ENOSPC. The
run must end with one message naming the full path and what was kept, exit
status 1, no traceback, and no half-written file.
"""

import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
from conftest import ROOT, TINY_TRAIN_FLAGS, tiny_config

import train_lib

STRATEGY = tf.distribute.get_strategy()
# Mounts a tmpfs of $SIZE at $MNT, optionally fills it, runs the command,
# then lists what the run left there (the mount ends with the namespace).
WRAPPER = r"""
set -u
mount -t tmpfs -o size="$SIZE" tmpfs "$MNT" || exit 97
if [ "$FILL" = 1 ]; then dd if=/dev/zero of="$MNT/fill" bs=4096 2>/dev/null; fi
"$@"
status=$?
(cd "$MNT" && find . | sort) >"$LISTING"
cat "$MNT"/m/checkpoint >"$LISTING.checkpoint" 2>/dev/null
exit $status
"""


def _can_mount_tmpfs():
    if shutil.which("unshare") is None:
        return False
    probe = subprocess.run(
        ["unshare", "--user", "--map-root-user", "--mount", "sh", "-c", "mount -t tmpfs t /mnt"],
        capture_output=True,
        check=False,
    )
    return probe.returncode == 0


pytestmark = [
    pytest.mark.slow,
    pytest.mark.e2e,
    pytest.mark.skipif(
        not _can_mount_tmpfs(), reason="needs unshare with user and mount namespaces"
    ),
]


def run_on_tmpfs(tmp_path, command, size="16m", fill=True):
    """Runs `command` with a tmpfs at tmp_path/mnt; returns (process, listing, checkpoint)."""
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    listing = tmp_path / "listing"
    env = dict(os.environ, MNT=str(mnt), SIZE=size, FILL=str(int(fill)), LISTING=str(listing))
    out = subprocess.run(
        ["unshare", "--user", "--map-root-user", "--mount", "sh", "-c", WRAPPER, "sh", *command],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
        env=env,
    )
    assert out.returncode != 97, out.stderr
    files = listing.read_text().split() if listing.exists() else []
    state = tmp_path / "listing.checkpoint"
    return out, files, state.read_text() if state.exists() else ""


def assert_one_message(out, script, path):
    assert out.returncode == 1, out.stderr[-3000:]
    last = out.stderr.strip().splitlines()[-1]
    assert last.startswith(f"{script}: error: no space left on the device of {path}"), last
    assert "Kept: " in last and "Traceback" not in out.stderr


def test_prediction_on_a_full_disk(tiny_data, tmp_path):
    teacher = tmp_path / "teacher"
    config = tiny_config(teacher, tiny_data, train_steps=1)
    state = train_lib.TrainState(config, STRATEGY)
    train_lib.write_run_files(config, state)
    train_lib.train(config, STRATEGY, state=state)
    output_dir = tmp_path / "mnt" / "predict_label"
    command = [
        sys.executable,
        os.path.join(ROOT, "main.py"),
        *TINY_TRAIN_FLAGS,
        "--mode=predict",
        f"--predict_ckpt_path={teacher}",
        f"--label_data_dir={tiny_data}/unlabeled",
        "--file_prefix=extra",
        "--num_shards=2",
        "--shard_id=0,1",
        f"--output_dir={output_dir}",
        f"--info_dir={tmp_path / 'mnt' / 'info'}",
    ]
    out, files, _ = run_on_tmpfs(tmp_path, command)
    assert_one_message(out, "main.py", output_dir)
    assert "the 0 finished prediction files" in out.stderr
    assert not [f for f in files if ".tmp-" in f], files


def test_checkpoint_on_a_full_disk(tiny_data, tmp_path):
    # The disk fills up right before the checkpoint of step 4 (ckpt-2 fits).
    prelude = (
        "import sys; sys.path.insert(0, sys.argv[1])\n"
        "import train_lib\n"
        "save, mnt = train_lib.TrainState.save, sys.argv[2]\n"
        "def fill_then_save(self):\n"
        "    if self.step == 4:\n"
        "        import subprocess\n"
        "        subprocess.run(['dd', 'if=/dev/zero', 'of=' + mnt + '/fill', 'bs=4096'],"
        " capture_output=True)\n"
        "    return save(self)\n"
        "train_lib.TrainState.save = fill_then_save\n"
        "import runpy\n"
        "sys.argv = ['main.py'] + sys.argv[3:]\n"
        "runpy.run_path(sys.argv[0], run_name='__main__')\n"
    )
    mnt = tmp_path / "mnt"
    model_dir = mnt / "m"
    command = [
        sys.executable,
        "-c",
        prelude,
        ROOT,
        str(mnt),
        *TINY_TRAIN_FLAGS,
        f"--label_data_dir={tiny_data}",
        f"--model_dir={model_dir}",
        "--train_batch_size=8",
        "--train_steps=6",
        "--iterations_per_loop=2",
        "--save_checkpoints_steps=2",
    ]
    out, files, state = run_on_tmpfs(tmp_path, command, fill=False)
    assert_one_message(out, "main.py", model_dir)
    assert f"Kept: {model_dir}/ckpt-2 and the checkpoints before it; a re-run resumes" in out.stderr
    assert 'model_checkpoint_path: "ckpt-2"' in state
    assert not [f for f in files if "ckpt-4" in f], files
    assert "./m/ckpt-2.index" in files and "./m/train.lock" not in files


def test_proc_folder_on_a_full_disk(tmp_path):
    from PIL import Image

    rng = np.random.default_rng(0)
    for name in ("cat", "dog"):
        folder = tmp_path / "images" / name
        folder.mkdir(parents=True)
        for i in range(3):
            pixels = rng.integers(0, 255, (16, 16, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(folder / f"{i}.png")
    output_dir = tmp_path / "mnt" / "proc"
    command = [
        sys.executable,
        os.path.join(ROOT, "proc_folder.py"),
        f"--labeled_dir={tmp_path / 'images'}",
        f"--output_dir={output_dir}",
        "--num_workers=1",
    ]
    out, files, _ = run_on_tmpfs(tmp_path, command)
    assert_one_message(out, "proc_folder.py", output_dir)
    assert f"the 0 finished shards in {output_dir}" in out.stderr
    assert not [f for f in files if ".tmp-" in f], files
