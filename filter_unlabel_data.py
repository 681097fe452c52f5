"""Filters teacher predictions by confidence and balances classes: the two passes.

The algorithm and every file are described in docs/pseudo_labels.md
("Prediction files", "Filtering and balancing"). In short, two passes over
the predictions of a sharded unlabeled set:

1. `--only_get_stats=1`, once per shard (and task): per predicted class, count
   the images in each top-1 probability bin [t, t + 0.01) for t = 0.00 ... 1.00
   (the last bin holds every probability >= 1.0). Writes
   `{prelim_stats_dir}/prelim_stats_%05d_%d.json`.
2. `--only_get_stats=0`, once per shard (and task), after pass 1 finished for
   every shard: sums the bins of all shards, picks a confidence threshold per
   class, and writes this shard's kept images, repeated (upsampling) or
   subsampled (downsampling) so that every class gets about `--num_image`
   images over all shards, to `{output_dir}/data/train-%d-%05d-of-%05d`.

The work of one shard may be split among `--total_replicas` filter tasks:
predictions of a shard come from W prediction workers (worker w predicted input
records w, w + W, w + 2W, ...), and task t handles workers
[t * W / total_replicas, (t + 1) * W / total_replicas). `--task=-1` is one
task, numbered 0 in file names, that handles every worker. In the code the
flags --task, --total_replicas and --total_label_replicas are `filter_task`,
`num_filter_tasks` and `num_prediction_workers`.

Every job of pass 2 computes the same thresholds from the same statistics, so
no job waits for another; random draws are seeded with (seed, shard, task), so
a re-run writes byte-identical files. Pass 2 refuses predictions of more than
one checkpoint (the provenance of the info files), and predictions that
changed since pass 1 counted them.

`--shard_id` takes one shard or a comma-separated list (`--shard_id=0,4,8`):
one process then runs the pass for each, paying TensorFlow's start-up and
pass 2's reading of every shard's stats once. Every listed shard is attempted;
a shard that fails does not stop the others, and the job exits with an error
naming each failed shard, its file and the reason. A failed shard leaves its
earlier outputs as they were: outputs are written under temporary names and
renamed only when complete.

This module holds the flags and the two passes (files, checks, stats);
filter_stats.py the NumPy counts and decisions, filter_pipeline.py the
TensorFlow work of reading, labeling and writing.
"""

import contextlib
import dataclasses
import functools
import gc
import os
import re
import sys
from typing import NamedTuple

import numpy as np
import tensorflow as tf
from absl import app, flags, logging

import atomic_files
import file_names
import filter_pipeline
import filter_stats
import progress_log
import task_info
import tfrecords
from filter_stats import NUM_BINS, PROVENANCE_KEY, FilterError


@dataclasses.dataclass(frozen=True)
class FilterFiles:
    """Where the filter reads and writes (the flags of the same names).

    Attributes:
      input_dir: the raw unlabeled records `{file_prefix}-%05d-of-%05d`.
      prediction_dir: the teacher's `train-info-%05d-of-%05d-%05d` predictions.
      info_dir: the prediction info files `info-%05d-of-%05d-%05d.txt`.
      prelim_stats_dir: pass 1's stats, and the totals of all shards.
      output_dir: pass 2's records, stats, samples and selection files.
      num_shards: the number of input shards.
      file_prefix: name prefix of the input files.
    """

    input_dir: str = ""
    prediction_dir: str = ""
    info_dir: str = ""
    prelim_stats_dir: str = ""
    output_dir: str = ""
    num_shards: int = 128
    file_prefix: str = "train"

    def input_file(self, shard):
        """The raw unlabeled records of `shard`."""
        return file_names.shard_path(self.input_dir, self.file_prefix, shard, self.num_shards)

    def prediction_file(self, shard, worker):
        """The predictions of one prediction worker for `shard`."""
        return file_names.prediction_path(self.prediction_dir, shard, self.num_shards, worker)

    def info_file(self, shard, worker):
        """The info file of one prediction worker for `shard`."""
        return file_names.info_path(self.info_dir, shard, self.num_shards, worker)

    def prelim_stats_file(self, shard, task):
        """Pass 1's counts of `shard` and `task`."""
        return file_names.prelim_stats_path(self.prelim_stats_dir, shard, task)

    def stats_file(self, shard, task):
        """Pass 2's stats of `shard` and `task`."""
        return file_names.filter_stats_path(self.output_dir, shard, task)

    def filtered_file(self, shard, task):
        """Pass 2's records of `shard` and `task`."""
        return file_names.filtered_path(self.output_dir, task, shard, self.num_shards)


def check_data_type(data_type):
    """FilterError unless `data_type` is 'tfrecord', the one input format."""
    if data_type != "tfrecord":
        raise FilterError(f"--data_type={data_type!r} is not supported; only 'tfrecord' is")


def _read_json_file(path, what):
    """The JSON object of `path`; FilterError naming the file if it is not readable JSON."""
    try:
        obj = atomic_files.read_json(path)
    except (ValueError, OSError, tf.errors.OpError) as e:
        raise FilterError(f"cannot read {what} {path}: {filter_pipeline.op_text(e)}") from e
    if not isinstance(obj, dict):
        raise FilterError(f"{what} {path} holds {type(obj).__name__}, expected a JSON object")
    return obj


# ---------------------------------------------------------------------------
# Filter tasks and prediction workers.


def discover_num_prediction_workers(files, shard_id):
    """Number W of prediction workers of a shard, from its info files.

    Returns:
      W such that exactly the info files of workers 0..W-1 exist.

    Raises:
      FilterError: no info file, or the worker ids are not 0..W-1.
    """
    pattern = files.info_file(shard_id, 0)[: -len("00000.txt")] + "*.txt"
    workers = []
    for path in tf.io.gfile.glob(pattern):
        match = re.fullmatch(r"(\d{5})\.txt", os.path.basename(path).rsplit("-", 1)[-1])
        if match:
            workers.append(int(match.group(1)))
    workers.sort()
    if not workers:
        raise FilterError(f"no prediction info file matches {pattern}")
    if workers != list(range(len(workers))):
        raise FilterError(
            f"info files matching {pattern} are for workers {workers}, expected 0..{len(workers) - 1}; "
            "pass --total_label_replicas"
        )
    return len(workers)


def task_workers(filter_task, num_filter_tasks, num_prediction_workers):
    """The task number used in file names and the prediction workers it handles.

    Args:
      filter_task: filter task in [0, num_filter_tasks), or -1 for a single task.
      num_filter_tasks: number of filter tasks per shard.
      num_prediction_workers: number W of prediction workers per shard.

    Returns:
      (task_id, workers): task_id is 0 for task -1; workers is the contiguous
      block [task_id * k, (task_id + 1) * k) with k = W / num_filter_tasks.

    Raises:
      FilterError: inconsistent task, task count and W; the message names the flags.
    """
    if num_filter_tasks < 1:
        raise FilterError(f"--total_replicas must be >= 1, got {num_filter_tasks}")
    if filter_task == -1:
        if num_filter_tasks != 1:
            raise FilterError(
                f"--task=-1 means a single task, but --total_replicas={num_filter_tasks}; "
                f"pass --task in [0, {num_filter_tasks})"
            )
        filter_task = 0
    if not 0 <= filter_task < num_filter_tasks:
        raise FilterError(
            f"--task={filter_task} is not in [0, --total_replicas={num_filter_tasks})"
        )
    if num_prediction_workers < num_filter_tasks or num_prediction_workers % num_filter_tasks:
        raise FilterError(
            f"{num_prediction_workers} prediction workers per shard cannot be split evenly "
            f"among --total_replicas={num_filter_tasks} filter tasks"
        )
    per_task = num_prediction_workers // num_filter_tasks
    return filter_task, list(range(filter_task * per_task, (filter_task + 1) * per_task))


class Info(NamedTuple):
    """What one prediction worker's info file says.

    Attributes:
      path: the info file.
      image_num: number of predictions of the worker.
      provenance: {"checkpoint", "global_step", "fingerprint", "use_ema"} of
        the checkpoint that predicted, or None for an info file of an older
        prediction run (only `image_num`).
      input_file: the input shard the worker read, if the file says so.
      input_bytes: its size then, if the file says so.
    """

    path: str
    image_num: int
    provenance: dict | None
    input_file: str | None = None
    input_bytes: int | None = None


def read_info(files, shard_id, worker):
    """Reads one prediction worker's info file.

    Returns:
      An Info.

    Raises:
      FilterError: the file is missing or malformed.
    """
    path = files.info_file(shard_id, worker)
    if not tf.io.gfile.exists(path):
        raise FilterError(f"missing prediction info file {path}")
    info = _read_json_file(path, "prediction info file")
    try:
        image_num = int(info["image_num"])
    except (ValueError, KeyError, TypeError) as e:
        raise FilterError(f"cannot read image_num from {path}: {e!r}") from e
    if image_num < 0:
        raise FilterError(f"{path}: image_num={image_num} is negative")
    raw = info.get(PROVENANCE_KEY)
    if raw is None:
        return Info(path, image_num, None)
    provenance = filter_stats.parse_provenance(raw, path)
    input_bytes = raw.get("input_bytes")
    return Info(
        path,
        image_num,
        provenance,
        raw.get("input_file"),
        input_bytes if isinstance(input_bytes, int) else None,
    )


class ShardWork(NamedTuple):
    """A filter task's share of a shard: see shard_work.

    Attributes:
      shard_id: the shard.
      task_id: the task number in file names.
      infos: {worker: Info} of the prediction workers the task handles.
      num_workers: W, the prediction workers of the shard.
      provenance: the checkpoint that predicted, None if unknown.
    """

    shard_id: int
    task_id: int
    infos: dict
    num_workers: int
    provenance: dict | None

    def num_images(self):
        """The images of the task's prediction workers."""
        return sum(info.image_num for info in self.infos.values())

    def parts(self, files):
        """The filter_pipeline.WorkerParts of the task's workers, in worker order."""
        return [
            filter_pipeline.WorkerPart(
                files.input_file(self.shard_id),
                files.prediction_file(self.shard_id, worker),
                worker,
                self.num_workers,
                info.image_num,
            )
            for worker, info in self.infos.items()
        ]


def shard_work(files, shard_id, filter_task, num_filter_tasks, num_prediction_workers):
    """The prediction workers a task handles, their info files and their common checkpoint.

    Args:
      files: the FilterFiles.
      shard_id: the shard.
      filter_task, num_filter_tasks: see task_workers.
      num_prediction_workers: W, or -1 to discover it from the info files.

    Returns:
      A ShardWork.

    Raises:
      FilterError: missing or malformed info files, inconsistent task
        settings, or workers whose predictions come from different checkpoints.
    """
    if num_prediction_workers == -1:
        num_prediction_workers = discover_num_prediction_workers(files, shard_id)
    task_id, workers = task_workers(filter_task, num_filter_tasks, num_prediction_workers)
    infos = {w: read_info(files, shard_id, w) for w in workers}
    provenance, _ = filter_stats.common_provenance(
        [
            (f"shard {shard_id} worker {w} ({info.path})", info.provenance)
            for w, info in infos.items()
        ],
        f"the prediction info files of shard {shard_id}",
        f"Predict shard {shard_id} again with one checkpoint.",
    )
    if provenance is None:
        logging.warning(
            "the info files of shard %d (e.g. %s) do not say which checkpoint predicted (written "
            "by an older predict_label.py): predictions of different checkpoints cannot be told "
            "apart",
            shard_id,
            next(iter(infos.values())).path,
        )
    return ShardWork(shard_id, task_id, infos, num_prediction_workers, provenance)


@contextlib.contextmanager
def gc_paused():
    """Pauses Python's cyclic garbage collector for the block.

    Building or parsing trees of many small lists (the JSON stats of 1000
    classes) triggers full collections, each walking the ~300k objects that
    TensorFlow creates at import: 0.6 s of a 0.8 s step. Nothing such a block
    builds is cyclic garbage.
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


# ---------------------------------------------------------------------------
# Pass 1.


class PrelimStats(NamedTuple):
    """Pass-1 result of one shard and task: see count_shard."""

    task_id: int
    counts: np.ndarray
    provenance: dict | None


def count_shard(
    files,
    shard_id,
    num_label_classes,
    *,
    filter_task=-1,
    num_filter_tasks=1,
    num_prediction_workers=-1,
):
    """Pass 1: per-class histogram of top-1 probabilities of one shard (and task).

    Args:
      files: the FilterFiles (prediction_dir, info_dir and num_shards are read).
      shard_id: shard to count.
      num_label_classes: length of every probability vector.
      filter_task: filter task, or -1 for a single task.
      num_filter_tasks: number of filter tasks per shard.
      num_prediction_workers: prediction workers per shard; -1 to discover.

    Returns:
      A PrelimStats: counts[c, i] is the number of images predicted as class
      c with top-1 probability in [t_i, t_{i+1}) (bin 100: >= 1.0);
      provenance the checkpoint that predicted (None if unknown).

    Raises:
      FilterError: a file is missing, broken, or disagrees with its info
        file, or the workers' predictions come from different checkpoints.
    """
    work = shard_work(files, shard_id, filter_task, num_filter_tasks, num_prediction_workers)
    progress = progress_log.Progress(
        work.num_images(), "predictions", prefix=f"stats shard {shard_id} task {work.task_id}: "
    )
    counts = np.zeros([num_label_classes, NUM_BINS], np.int64)
    for worker, info in work.infos.items():
        path = files.prediction_file(shard_id, worker)
        if not tf.io.gfile.exists(path):
            if info.image_num == 0:
                continue
            raise FilterError(f"missing prediction file {path}")
        worker_counts, seen = filter_pipeline.count_prediction_bins(path, num_label_classes)
        if seen != info.image_num:
            raise FilterError(
                f"{path} has {seen} predictions but {info.path} says image_num={info.image_num}"
            )
        counts += worker_counts
        progress.update(seen)
    progress.update(0, force=True)
    return PrelimStats(work.task_id, counts, work.provenance)


@gc_paused()
def write_prelim_stats(files, shard_id, prelim_stats):
    """Writes a PrelimStats as `{uid: [[t, count] x 101]}` (classes with images only).

    A known provenance is stored under "provenance" next to the classes.
    Returns the path written.
    """
    path = files.prelim_stats_file(shard_id, prelim_stats.task_id)
    obj = filter_stats.prelim_stats_to_json(prelim_stats.counts, prelim_stats.provenance)
    atomic_files.write_json(path, obj, indent=None)
    logging.info("wrote %s (%d images)", path, int(prelim_stats.counts.sum()))
    return path


@gc_paused()
def read_prelim_stats(path, num_classes):
    """Reads a pass-1 stats file.

    Returns:
      (counts, provenance): the int array [num_classes, NUM_BINS] and the
      checkpoint of the predictions (None if the file does not say).

    Raises:
      FilterError: the file is not readable or not in the layout of
        write_prelim_stats; the message names it.
    """
    obj = _read_json_file(path, "pass-1 stats file")
    return filter_stats.prelim_stats_from_json(obj, num_classes, path)


# ---------------------------------------------------------------------------
# Thresholds and balancing, from the pass-1 stats of all shards.


@gc_paused()
def load_prelim_stats(prelim_stats_dir, num_shards, num_filter_tasks, num_label_classes):
    """Sums the pass-1 counts of shards 0..num_shards-1 and tasks 0..num_filter_tasks-1.

    Returns:
      (total, provenance, where): the summed counts [num_label_classes,
      NUM_BINS], the checkpoint all stats come from (None if none says) and
      the first stats file naming it.

    Raises:
      FilterError: some stats files are missing (the message lists the shard
        ids), unreadable, or come from different checkpoints (the message
        names both, with one shard of each).
    """
    paths = {
        (shard, task): file_names.prelim_stats_path(prelim_stats_dir, shard, task)
        for shard in range(num_shards)
        for task in range(num_filter_tasks)
    }
    missing = [key for key, path in paths.items() if not tf.io.gfile.exists(path)]
    if missing:
        shards = sorted({shard for shard, _ in missing})
        listed = ", ".join(str(s) for s in shards[:50]) + (" ..." if len(shards) > 50 else "")
        raise FilterError(
            f"missing prelim stats for {len(shards)} of {num_shards} shards in "
            f"{prelim_stats_dir} (run --only_get_stats=1 for them first): shard ids {listed}"
            + (f"; missing (shard, task) pairs {missing[:20]}" if num_filter_tasks > 1 else "")
        )
    total = np.zeros([num_label_classes, NUM_BINS], np.int64)
    sources = []
    for (shard, _), path in paths.items():
        counts, provenance = read_prelim_stats(path, num_label_classes)
        total += counts
        sources.append((f"shard {shard} ({path})", provenance))
    provenance, where = filter_stats.common_provenance(
        sources,
        "the pass-1 stats",
        "Predict the stale shards again with one checkpoint, then re-run --only_get_stats=1 "
        "for them.",
    )
    return total, provenance, where


def select_for_balancing(
    files, num_label_classes, settings, *, num_filter_tasks=1, only_use_num_shards=-1
):
    """Thresholds and copy rates of every class from the pass-1 stats of all shards.

    Also writes total_counts(_sum).json, threshold.json and
    num_image_across_cat.json. A job filtering several shards calls this once.

    Args:
      files: the FilterFiles (prelim_stats_dir, output_dir and num_shards are used).
      num_label_classes: length of every probability vector.
      settings: a filter_stats.BalancingSettings.
      num_filter_tasks: number of filter tasks per shard.
      only_use_num_shards: if not -1, use the stats of shards
        0..only_use_num_shards-1 only.

    Returns:
      A filter_stats.Selection.

    Raises:
      FilterError: missing or inconsistent pass-1 stats (e.g. of different
        checkpoints), or no image would be kept; nothing is written then.
    """
    stats_shards = files.num_shards if only_use_num_shards == -1 else only_use_num_shards
    total_counts, provenance, source = load_prelim_stats(
        files.prelim_stats_dir, stats_shards, num_filter_tasks, num_label_classes
    )
    selection = filter_stats.make_selection(
        total_counts,
        settings,
        stats_shards=stats_shards,
        num_filter_tasks=num_filter_tasks,
        provenance=provenance,
        source=source,
    )
    _write_selection_files(files, total_counts, selection, settings.num_image)
    return selection


@gc_paused()
def _write_selection_files(files, total_counts, selection, num_image):
    """Writes total_counts(_sum).json and threshold.json / num_image_across_cat.json.

    Every pass-2 job writes the same bytes, atomically, so no job has to wait
    for a designated writer.
    """
    # 101 bins per class: compact JSON (indenting would take seconds per job).
    for cumulative in (False, True):
        counts = filter_stats.cumulative_counts(total_counts) if cumulative else total_counts
        atomic_files.write_json(
            file_names.total_counts_path(files.prelim_stats_dir, cumulative),
            filter_stats.counts_to_json(counts, keep_empty=True),
            indent=None,
        )
    atomic_files.write_json(
        file_names.threshold_path(files.output_dir), filter_stats.threshold_json(selection)
    )
    atomic_files.write_json(
        file_names.num_image_across_cat_path(files.output_dir),
        filter_stats.num_image_across_cat_json(selection, num_image),
    )


# ---------------------------------------------------------------------------
# Pass 2.


def _check_one_checkpoint(shard_id, work, selection, own_stats_file, own_provenance):
    """FilterError if a shard's predictions and the pass-1 stats come from different checkpoints."""
    if work.provenance is None:
        return
    first_info = next(iter(work.infos.values())).path
    for other, where, what in (
        (selection.provenance, selection.provenance_source, "the pass-1 stats"),
        (
            own_provenance,
            f"shard {shard_id} ({own_stats_file})",
            f"shard {shard_id}'s pass-1 stats",
        ),
    ):
        if other is not None and not filter_stats.same_checkpoint(work.provenance, other):
            raise FilterError(
                f"the predictions of shard {shard_id} ({first_info}) come from "
                f"{filter_stats.describe_provenance(work.provenance)}, but {what} come from "
                f"{filter_stats.describe_provenance(other)}, e.g. {where}. Predict every shard "
                "with one checkpoint, then re-run --only_get_stats=1 for the shards predicted "
                "again."
            )


def _check_input_file(infos, input_file):
    """Checks that the predictions were made on this input file.

    A changed size means other records than the predicted ones, whose pseudo
    labels would then belong to other images: an error. Another file name
    (e.g. a copy of the data elsewhere) is only a warning.
    """
    size = None
    for info in infos.values():
        if info.input_bytes is not None:
            size = tf.io.gfile.stat(input_file).length if size is None else size
            if size != info.input_bytes:
                raise FilterError(
                    f"{info.path} says its predictions were made on {info.input_file} of "
                    f"{info.input_bytes} bytes, but {input_file} has {size} bytes: the input "
                    "changed after prediction; predict this shard again"
                )
        if info.input_file and os.path.basename(info.input_file) != os.path.basename(input_file):
            logging.warning(
                "%s says its predictions are for %s, but they are filtered with %s",
                info.path,
                info.input_file,
                input_file,
            )


def _checked_pass1_counts(files, work, selection):
    """The shard's pass-1 counts (None if its stats file is gone), its inputs checked.

    Raises:
      FilterError: the input file changed since prediction, or the
        predictions, the shard's pass-1 stats and the selection come from
        different checkpoints.
    """
    shard_id = work.shard_id
    own_stats_file = files.prelim_stats_file(shard_id, work.task_id)
    own_counts, own_provenance = None, None
    if tf.io.gfile.exists(own_stats_file):
        own_counts, own_provenance = read_prelim_stats(own_stats_file, selection.num_label_classes)
    _check_one_checkpoint(shard_id, work, selection, own_stats_file, own_provenance)
    _check_input_file(work.infos, files.input_file(shard_id))
    return own_counts


def _unchanged_since_pass1(batches, counts, pass1_counts, what):
    """Yields `batches`; then FilterError if their bins differ from the pass-1 counts.

    Thresholds were chosen from the pass-1 bins; predictions changed since
    would make the balancing silently wrong. Both passes bin with
    filter_pipeline.label_and_bin, so any difference is a change of the
    predictions. Raised before the data file gets its final name.

    Args:
      batches: the record batches of a KeptRecords.
      counts: its ShardCounts, complete once `batches` is exhausted.
      pass1_counts: the shard's pass-1 counts, or None (no check).
      what: the shard and task, for the message.
    """
    yield from batches
    if pass1_counts is not None and not np.array_equal(pass1_counts, counts.seen_bins):
        raise FilterError(f"predictions of {what}; re-run --only_get_stats=1 for every shard")


def write_task_description(input_dir, output_dir):
    """Copies the task description of the unlabeled data next to the filtered data.

    A task that is not built in (proc_folder.py's) is described only by the
    dataset_info.json found from its unlabeled records. Reassign (main.py
    --mode=predict --reassign_label on `output_dir`/data) looks for it one
    level above the records it reads, as prediction does: so it goes to
    `output_dir`. A file that only counts images (the built-in tasks') is not
    copied.

    Returns:
      The written path, or None when the input has no task description.
    """
    source = task_info.find_dataset_info(input_dir)
    if source is None:
        return None
    info = atomic_files.read_json(source)
    if not isinstance(info, dict) or "num_classes" not in info:
        return None
    path = os.path.join(output_dir, task_info.DATASET_INFO_FILE)
    atomic_files.write_json(path, info)
    return path


def filter_shard(
    files,
    shard_id,
    selection,
    *,
    filter_task=-1,
    num_prediction_workers=-1,
    seed=0,
    num_samples_per_class=filter_pipeline.NUM_SAMPLES_PER_CLASS,
    shuffle_buffer_bytes=filter_pipeline.SHUFFLE_BUFFER_BYTES,
):
    """Pass 2: writes the filtered, balanced, shuffled records of one shard (and task).

    The data file is written under a temporary name and samples into a
    staging folder; both get their final names only when the whole shard
    succeeded, so a failure leaves the outputs of an earlier run untouched.

    Args:
      files: the FilterFiles.
      shard_id: shard to filter.
      selection: the filter_stats.Selection of select_for_balancing.
      filter_task: filter task, or -1 for a single task (0 in file names).
      num_prediction_workers: prediction workers per shard; -1 to discover.
      seed: random seed, combined with shard and task.
      num_samples_per_class: sample JPEGs saved per class (shard 0, task 0 only).
      shuffle_buffer_bytes: kept images are shuffled in chunks of this many bytes.

    Returns:
      The stats dict written to `stats/stats_%05d_%d.json` (see
      filter_stats.shard_stats_json).

    Raises:
      FilterError: missing, broken or inconsistent files (the message names
        the file), predictions of another checkpoint than the pass-1 stats
        or changed since pass 1, or a sample image that cannot be decoded.
    """
    input_file = files.input_file(shard_id)
    if not tf.io.gfile.exists(input_file):
        raise FilterError(f"missing input file {input_file}")
    work = shard_work(
        files, shard_id, filter_task, selection.num_filter_tasks, num_prediction_workers
    )
    pass1_counts = _checked_pass1_counts(files, work, selection)
    samples = None
    if shard_id == 0 and work.task_id == 0 and num_samples_per_class > 0:
        samples = filter_pipeline.Samples(
            os.path.join(files.output_dir, "samples"),
            input_file,
            shard_id,
            work.task_id,
            num_samples_per_class,
            selection.num_label_classes,
        )
    progress = progress_log.Progress(
        work.num_images(), "images", prefix=f"filter shard {shard_id} task {work.task_id}: "
    )
    kept = filter_pipeline.KeptRecords(
        selection,
        seed_key=(seed, shard_id, work.task_id),
        shuffle_buffer_bytes=shuffle_buffer_bytes,
        progress=progress,
        samples=samples,
    )
    num_written = _write_kept_records(files, work, kept, pass1_counts)
    progress.update(0, force=True)
    return _write_shard_stats(files, work, selection, seed, kept.counts, num_written)


def _write_kept_records(files, work, kept, pass1_counts):
    """Writes a shard's data file and commits its samples; returns the records written."""
    input_file = files.input_file(work.shard_id)
    # The input file holds the images of all W workers, not only this task's.
    num_records = work.num_images() * work.num_workers // len(work.infos)
    batches = kept.batches(
        work.parts(files), filter_pipeline.batch_size_for(input_file, num_records)
    )
    changed = (
        f"shard {work.shard_id} task {work.task_id} differ from "
        f"{files.prelim_stats_file(work.shard_id, work.task_id)}"
    )
    try:
        num_written = tfrecords.write_tfrecord_batches(
            files.filtered_file(work.shard_id, work.task_id),
            _unchanged_since_pass1(batches, kept.counts, pass1_counts, changed),
        )
        if kept.samples is not None:
            kept.samples.commit()
    finally:
        if kept.samples is not None:
            kept.samples.discard()
    return num_written


def _write_shard_stats(files, work, selection, seed, counts, num_written):
    """Writes the stats file of a filtered shard, then the final stats if it was the last."""
    output_file = files.filtered_file(work.shard_id, work.task_id)
    stats = filter_stats.shard_stats_json(
        counts,
        num_input_images=work.num_images(),
        output_file=os.path.basename(output_file),
        num_records=num_written,
        num_bytes=tf.io.gfile.stat(output_file).length,
        provenance=work.provenance or selection.provenance,
        selection_id=filter_stats.selection_id(selection, seed),
    )
    if counts.true_invalid:
        logging.warning(
            "%s: %d records have an image/class/label outside 0..%d; their true labels are ignored",
            files.input_file(work.shard_id),
            int(counts.true_invalid),
            selection.num_label_classes,
        )
    atomic_files.write_json(files.stats_file(work.shard_id, work.task_id), stats)
    logging.info(
        "wrote %s: %d records from %d images", output_file, num_written, stats["num_input_images"]
    )
    write_final_stats_if_complete(
        files.output_dir,
        selection.stats_shards,
        selection.num_filter_tasks,
        selection.num_label_classes,
        selection_id=stats["selection_id"],
    )
    return stats


def _current_shard_stats(output_dir, num_shards, num_filter_tasks, num_classes, selection_id):
    """The filter_stats.ShardStats of every shard and task, or None while some are missing."""
    paths = {
        (shard, task): file_names.filter_stats_path(output_dir, shard, task)
        for shard in range(num_shards)
        for task in range(num_filter_tasks)
    }
    missing, stale, found = [], [], []
    for (shard, _), path in paths.items():
        if not tf.io.gfile.exists(path):
            missing.append(path)
            continue
        obj = _read_json_file(path, "stats file")
        if selection_id is not None and obj.get("selection_id") != selection_id:
            stale.append(path)
            continue
        found.append(filter_stats.read_shard_stats(obj, num_classes, path, shard))
    if missing or stale:
        logging.info(
            "final stats: %d of %d stats files still missing, %d from another run",
            len(missing),
            len(paths),
            len(stale),
        )
        return None
    return found


def _check_data_file(output_dir, shard_stats):
    """FilterError unless a shard's data file has the size its stats file recorded."""
    data_file = os.path.join(file_names.filtered_dir(output_dir), shard_stats.output_file)
    found = tf.io.gfile.stat(data_file).length if tf.io.gfile.exists(data_file) else None
    if found != shard_stats.num_bytes:
        raise FilterError(
            f"cannot write final stats: {data_file} "
            + ("is missing" if found is None else f"has {found} bytes")
            + f" but {shard_stats.where} says {shard_stats.num_bytes} bytes; re-run pass 2 for "
            f"shard {shard_stats.shard}"
        )


def write_final_stats_if_complete(
    output_dir, num_shards, num_filter_tasks, num_label_classes, selection_id=None
):
    """Writes `stats/final_stats.json` once every shard's stats file exists.

    Whichever job finishes last finds all files and writes the totals; earlier
    jobs only log what is still missing (no waiting). With `selection_id`,
    stats files of another run (other settings or predictions, whose shards
    are being filtered again) count as missing.

    Returns:
      The final stats dict (see filter_stats.final_stats), or None if some
      shards are not done yet.

    Raises:
      FilterError: a stats file is unreadable, a data file differs from what
        its stats file recorded, or no shard wrote any record.
    """
    shard_stats = _current_shard_stats(
        output_dir, num_shards, num_filter_tasks, num_label_classes, selection_id
    )
    if shard_stats is None:
        return None
    for stats in shard_stats:
        _check_data_file(output_dir, stats)
    final = filter_stats.final_stats(
        shard_stats, num_shards=num_shards, num_filter_tasks=num_filter_tasks, output_dir=output_dir
    )
    atomic_files.write_json(file_names.final_stats_path(output_dir), final)
    logging.info("wrote final stats: %d records in total", final["total_cnt"])
    accuracy = final.get("pseudo_label_accuracy")
    if accuracy is not None:
        logging.info(
            "pseudo-label accuracy (true labels of %d images): %.4f before filtering, %.4f after",
            accuracy["before_filtering"]["num_images"],
            accuracy["before_filtering"]["accuracy"],
            accuracy["after_balancing"]["accuracy"] or 0.0,
        )
    return final


# ---------------------------------------------------------------------------
# Command line. The flag names are the published ones; --task,
# --total_replicas and --total_label_replicas reach the library as
# filter_task, num_filter_tasks and num_prediction_workers.

FLAGS = flags.FLAGS

flags.DEFINE_string(
    "input_dir", "", "Directory of the raw unlabeled records `{file_prefix}-%05d-of-%05d`."
)
flags.DEFINE_string(
    "prediction_dir",
    "",
    "Directory of the teacher's `train-info-%05d-of-%05d-%05d` prediction files.",
)
flags.DEFINE_string(
    "info_dir", "", "Directory of the prediction image counts `info-%05d-of-%05d-%05d.txt`."
)
flags.DEFINE_string(
    "prelim_stats_dir",
    "",
    "Directory of the per-shard probability histograms (pass 1 writes, pass 2 reads) and of "
    "total_counts.json / total_counts_sum.json.",
)
flags.DEFINE_string(
    "output_dir",
    "",
    "Output of pass 2: data/train-%d-%05d-of-%05d records, stats/, samples/, threshold.json, "
    "num_image_across_cat.json.",
)
flags.DEFINE_integer("num_shards", 128, "Number of input shards.")
flags.DEFINE_integer(
    "only_use_num_shards",
    -1,
    "If not -1, thresholds (and final stats) use only shards 0..only_use_num_shards-1.",
)
flags.DEFINE_string(
    "shard_id",
    "0",
    "Shard(s) processed by this job, in [0, num_shards): an id or a comma-separated list, "
    "e.g. 0,4,8 (TensorFlow starts once for all of them).",
)
flags.DEFINE_integer(
    "num_image", 1300, "Target number of images per class over all shards after balancing."
)
flags.DEFINE_integer(
    "total_replicas",
    1,
    "Number of filter tasks per shard; the shard's prediction workers are split evenly among them.",
)
flags.DEFINE_integer(
    "total_label_replicas",
    -1,
    "Number of prediction workers per shard (main.py --total_replicas at prediction); -1 discovers "
    "it from the info files, which must be for workers 0..W-1.",
)
flags.DEFINE_integer(
    "task",
    -1,
    "Filter task of this job in [0, total_replicas); -1 = one task (numbered 0 in file names) "
    "that handles all prediction workers of the shard.",
)
flags.DEFINE_float(
    "min_threshold", 0.0, "Lowest top-1 probability threshold; images below it are never kept."
)
flags.DEFINE_float(
    "max_prob",
    2,
    "Images whose top-1 probability exceeds this are dropped, and thresholds must be below it "
    "(the default 2 keeps everything; probabilities can exceed 1 by rounding).",
)
flags.DEFINE_integer(
    "num_label_classes", 1000, "Number of classes (length of every probability vector)."
)
flags.DEFINE_integer(
    "upsample",
    1,
    "1: repeat the images of classes with fewer than num_image images to reach about num_image; "
    "0: keep them once.",
)
flags.DEFINE_integer(
    "only_get_stats",
    0,
    "1: pass 1, write this shard's probability histogram; 0: pass 2, filter and balance this "
    "shard (needs pass 1 of every shard).",
)
flags.DEFINE_string(
    "file_prefix", "train", "Name prefix of the input files, e.g. 'extra' for SVHN."
)
flags.DEFINE_string("data_type", "tfrecord", "Input format; only 'tfrecord' is supported.")
flags.DEFINE_integer(
    "use_top",
    1,
    "1: per class, stop lowering the threshold once num_image images are reached; "
    "0: go down to min_threshold and balance by sampling.",
)
flags.DEFINE_bool(
    "use_all",
    False,
    "Keep every image with probability >= min_threshold exactly once (no balancing).",
)
flags.DEFINE_integer(
    "seed", 0, "Random seed of the sampling and shuffling, combined with shard and task."
)


def _from_flags(cls, **converters):
    """An instance of the dataclass `cls` whose fields are the flags of the same names."""
    values = {field.name: FLAGS[field.name].value for field in dataclasses.fields(cls)}
    values.update({name: convert(values[name]) for name, convert in converters.items()})
    return cls(**values)


def _check_flags():
    """Checks the flags; returns the shard ids of --shard_id."""
    check_data_type(FLAGS.data_type)
    required = ["prediction_dir", "info_dir", "prelim_stats_dir"]
    if not FLAGS.only_get_stats:
        required += ["input_dir", "output_dir"]
    empty = [f"--{name}" for name in required if not getattr(FLAGS, name)]
    if empty:
        raise FilterError(f"{', '.join(empty)} must be set")
    # Checked before the shard ids, whose range [0, num_shards) they bound.
    for name in ("num_shards", "num_label_classes", "total_replicas"):
        if FLAGS[name].value < 1:
            raise FilterError(
                f"--{name}={FLAGS[name].value}: {name} must be positive (a whole number >= 1)"
            )
    try:
        shard_ids = file_names.parse_shard_ids(FLAGS.shard_id, FLAGS.num_shards)
    except ValueError as e:
        raise FilterError(str(e)) from e
    if FLAGS.only_use_num_shards != -1 and not 0 < FLAGS.only_use_num_shards <= FLAGS.num_shards:
        raise FilterError(
            f"--only_use_num_shards={FLAGS.only_use_num_shards} is not in [1, --num_shards]"
        )
    if FLAGS.num_image < 1:
        raise FilterError(f"--num_image must be >= 1, got {FLAGS.num_image}")
    return shard_ids


def _run_pass1(shard_id, files):
    prelim_stats = count_shard(
        files,
        shard_id,
        FLAGS.num_label_classes,
        filter_task=FLAGS.task,
        num_filter_tasks=FLAGS.total_replicas,
        num_prediction_workers=FLAGS.total_label_replicas,
    )
    write_prelim_stats(files, shard_id, prelim_stats)


def _run_pass2(shard_id, files, selection):
    filter_shard(
        files,
        shard_id,
        selection,
        filter_task=FLAGS.task,
        num_prediction_workers=FLAGS.total_label_replicas,
        seed=FLAGS.seed,
    )


def _shard_runner():
    """The function that runs this job's pass on one shard id."""
    files = _from_flags(FilterFiles)
    if FLAGS.only_get_stats:
        return functools.partial(_run_pass1, files=files)
    # Once for all shards: pass 2 of 1000 classes reads ~1 MB of stats per shard.
    selection = select_for_balancing(
        files,
        FLAGS.num_label_classes,
        _from_flags(filter_stats.BalancingSettings, upsample=bool, use_top=bool),
        num_filter_tasks=FLAGS.total_replicas,
        only_use_num_shards=FLAGS.only_use_num_shards,
    )
    write_task_description(files.input_dir, files.output_dir)
    return functools.partial(_run_pass2, files=files, selection=selection)


def run_shards(run, shard_ids):
    """Runs `run(shard_id)` for every shard id, whatever happens to the others.

    Returns:
      {shard_id: error message} of the shards that failed.
    """
    failed = {}
    for shard_id in shard_ids:
        try:
            run(shard_id)
        except FilterError as e:
            logging.error("shard %d: %s", shard_id, e)
            failed[shard_id] = str(e)
        except Exception as e:  # Any failure of one shard must spare the others.
            logging.exception("shard %d failed", shard_id)
            failed[shard_id] = f"{type(e).__name__}: {filter_pipeline.op_text(e)}"
    return failed


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    try:
        shard_ids = _check_flags()
        run = _shard_runner()
    except FilterError as e:
        logging.error("%s", e)
        sys.exit(f"filter_unlabel_data.py: error: {e}")
    # A broken shard does not stop the others: the driver scripts then only
    # need to re-run the shards named here.
    failed = run_shards(run, shard_ids)
    if len(shard_ids) == 1 and failed:
        sys.exit(f"filter_unlabel_data.py: error: {failed[shard_ids[0]]}")
    if failed:
        details = "".join(f"\n  shard {shard}: {e}" for shard, e in failed.items())
        sys.exit(
            f"filter_unlabel_data.py: error: {len(failed)} of {len(shard_ids)} shards failed, "
            f"shard ids {','.join(map(str, failed))}:{details}"
        )


if __name__ == "__main__":
    app.run(main)
