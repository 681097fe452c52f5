"""The filter's counts and decisions in NumPy: bins, thresholds, copy rates, stats files.

The algorithm and the files are described in docs/pseudo_labels.md
("Filtering and balancing"). This module computes; it reads and writes no
file and does not import TensorFlow: the stats files appear here as the JSON
objects they hold, which filter_unlabel_data.py reads and writes. The
per-image work (labels, bins, copies) runs in TensorFlow, in
filter_pipeline.py, on the constants defined here.
"""

import dataclasses
import hashlib
import json
from typing import NamedTuple

import numpy as np
from absl import logging

# Bin edges t = i / 100. Selection compares flag values with the float64 grid
# (so --min_threshold=0.3 hits t = 0.30 exactly); images are binned in float32,
# the precision of the stored probabilities, so that a stored probability equal
# to float32(0.3) lands in the 0.30 bin rather than just below it.
THRESHOLDS = np.arange(101) / 100.0
THRESHOLDS_F32 = THRESHOLDS.astype(np.float32)
NUM_BINS = len(THRESHOLDS)

# Key of the provenance in the pass-1 stats, next to the class ids; class ids
# are digits, so it can never be taken for one.
PROVENANCE_KEY = "provenance"
MAX_LISTED = 20


class FilterError(ValueError):
    """Inputs are missing or inconsistent; the message names the file(s)."""


def class_key(label):
    """The key of class `label` in every stats file: its decimal id."""
    return str(int(label))


def listed(items, limit=MAX_LISTED):
    """'a, b, c ...': the first `limit` items, for messages."""
    items = [str(i) for i in items]
    return ", ".join(items[:limit]) + (" ..." if len(items) > limit else "")


# ---------------------------------------------------------------------------
# Provenance: which checkpoint predicted.


def parse_provenance(raw, where):
    """The provenance dict kept from the `provenance` of an info or stats file.

    Raises:
      FilterError: `raw` lacks the checkpoint or fingerprint, or has a
        malformed step or EMA flag; the message names `where`.
    """
    fingerprint = raw.get("fingerprint") if isinstance(raw, dict) else None
    checkpoint = raw.get("checkpoint") if isinstance(raw, dict) else None
    if not isinstance(fingerprint, str) or not fingerprint or not isinstance(checkpoint, str):
        raise FilterError(
            f"{where}: 'provenance' must be an object with the 'checkpoint' prefix and a "
            f"non-empty 'fingerprint' string, got {json.dumps(raw)[:200]}"
        )
    step = raw.get("global_step")
    step = -1 if step is None else step  # -1: unknown, as predict_label.py writes it
    use_ema = raw.get("use_ema")
    if (
        not isinstance(step, int)
        or isinstance(step, bool)
        or not (use_ema is None or isinstance(use_ema, bool))
    ):
        raise FilterError(
            f"{where}: provenance 'global_step' must be an integer and 'use_ema' a boolean, "
            f"got {step!r} and {use_ema!r}"
        )
    return {
        "checkpoint": checkpoint,
        "global_step": step,
        "fingerprint": fingerprint,
        "use_ema": use_ema,
    }


def same_checkpoint(a, b):
    """Whether two provenances name the same weights."""
    # The fingerprint identifies the weights; EMA and raw weights of one
    # checkpoint predict differently, so they count as different sources.
    return a["fingerprint"] == b["fingerprint"] and a.get("use_ema") == b.get("use_ema")


def describe_provenance(provenance):
    """'ckpt/teacher/ckpt-3000 (step 3000, fingerprint 1a2b3c4d5e6f, EMA weights)'."""
    if provenance is None:
        return "an unknown checkpoint (info files without provenance)"
    step = provenance.get("global_step", -1)
    parts = [
        f"step {step}" if step is not None and step >= 0 else "step unknown",
        f"fingerprint {provenance['fingerprint'][:12]}",
    ]
    if provenance.get("use_ema") is not None:
        parts.append("EMA weights" if provenance["use_ema"] else "raw weights")
    return f"{provenance['checkpoint']} ({', '.join(parts)})"


def common_provenance(sources, what, hint):
    """The one checkpoint that all `sources` come from.

    Args:
      sources: list of (where, provenance or None); `where` names a shard and
        its file, e.g. "shard 3 (/data/prelim_stats_00003_0.json)".
      what: what the sources are, for messages, e.g. "the pass-1 stats".
      hint: how to fix a mix, appended to the error.

    Returns:
      (provenance, where): the shared provenance and the first source that
      has it; (None, None) when no source knows its checkpoint.

    Raises:
      FilterError: two sources come from different checkpoints; the message
        names each checkpoint (prefix and step) and one source of each.
    """
    groups = []  # [provenance, [where, ...]]
    unknown = []
    for where, provenance in sources:
        if provenance is None:
            unknown.append(where)
            continue
        for group in groups:
            if same_checkpoint(group[0], provenance):
                group[1].append(where)
                break
        else:
            groups.append([provenance, [where]])
    if len(groups) > 1:
        described = "; ".join(
            f"{describe_provenance(p)} for {len(places)} of them, e.g. {places[0]}"
            for p, places in groups[:4]
        )
        raise FilterError(
            f"{what} come from {len(groups)} different checkpoints: {described}. {hint}"
        )
    if unknown and groups:
        logging.warning(
            "%d of %d of %s do not say which checkpoint predicted (written by an older "
            "predict_label.py), e.g. %s; assuming %s",
            len(unknown),
            len(sources),
            what,
            unknown[0],
            describe_provenance(groups[0][0]),
        )
    if not groups:
        return None, None
    return groups[0][0], groups[0][1][0]


# ---------------------------------------------------------------------------
# Pass-1 stats: {class: [[t, count] x 101]} per shard and task.


def counts_to_json(counts, keep_empty):
    """{class: [[t, count], ...]}, the layout of the published stats files."""
    thresholds = THRESHOLDS.tolist()
    return {
        class_key(c): list(map(list, zip(thresholds, row.tolist(), strict=True)))
        for c, row in enumerate(counts)
        if keep_empty or row.any()
    }


def prelim_stats_to_json(counts, provenance=None):
    """A pass-1 stats file: the classes with images, and the provenance when known."""
    obj = counts_to_json(counts, keep_empty=False)
    if provenance is not None:
        obj[PROVENANCE_KEY] = provenance
    return obj


def prelim_stats_from_json(obj, num_classes, where):
    """The counts [num_classes, NUM_BINS] and provenance (or None) of a pass-1 stats file.

    Raises:
      FilterError: `obj` is not in the layout of prelim_stats_to_json; the
        message names `where`.
    """
    obj = dict(obj)
    raw_provenance = obj.pop(PROVENANCE_KEY, None)
    provenance = None if raw_provenance is None else parse_provenance(raw_provenance, where)
    counts = np.zeros([num_classes, NUM_BINS], np.int64)
    for uid, pairs in obj.items():
        if not uid.isdigit() or int(uid) >= num_classes:
            raise FilterError(
                f"{where}: class {uid!r} is not in [0, --num_label_classes={num_classes})"
            )
        try:
            bins = [t for t, _ in pairs]
            counts[int(uid)] = [n for _, n in pairs]
        except (TypeError, ValueError) as e:
            raise FilterError(f"{where}: class {uid} is not a list of [t, count] pairs") from e
        if bins != THRESHOLDS.tolist():
            raise FilterError(f"{where}: class {uid} does not have the 101 bins 0.00 ... 1.00")
    return counts, provenance


def cumulative_counts(counts):
    """Per class and bin i, the images in bins i and above (total_counts_sum.json)."""
    return np.cumsum(counts[:, ::-1], axis=1)[:, ::-1]


# ---------------------------------------------------------------------------
# Thresholds and copy rates.


@dataclasses.dataclass(frozen=True)
class BalancingSettings:
    """What pass 2 keeps and how often (docs/pseudo_labels.md, "Filtering and balancing").

    Attributes:
      num_image: target number of images per class over all shards.
      min_threshold: lowest confidence threshold considered.
      max_prob: images above this probability are dropped, thresholds must be below it.
      upsample: repeat the images of classes with fewer than num_image images.
      use_top: stop lowering a class's threshold once num_image images are reached.
      use_all: keep every image with probability >= min_threshold exactly once.
    """

    num_image: int
    min_threshold: float = 0.0
    max_prob: float = 2.0
    upsample: bool = True
    use_top: bool = True
    use_all: bool = False


def select_thresholds(total_counts, settings):
    """Picks the confidence threshold of every class.

    Per class, walks the thresholds t < max_prob, t >= min_threshold from the
    top down, accumulating bin counts, and stops at the first t where the count
    reaches num_image (with use_top and not use_all), else at the lowest
    eligible t.

    Args:
      total_counts: int array [num_classes, NUM_BINS] summed over all shards.
      settings: a BalancingSettings.

    Returns:
      (threshold_idx, total_image): per class, the index into THRESHOLDS of the
      selected t and the number N of images with t <= prob counted under it.

    Raises:
      FilterError: no threshold satisfies min_threshold <= t < max_prob.
    """
    eligible = (THRESHOLDS < settings.max_prob) & (THRESHOLDS >= settings.min_threshold)
    if not eligible.any():
        raise FilterError(
            f"no threshold t in 0.00..1.00 has --min_threshold={settings.min_threshold} <= t < "
            f"--max_prob={settings.max_prob}"
        )
    lowest = int(np.flatnonzero(eligible)[0])
    # cum[c, i]: images of class c in eligible bins at or above bin i.
    cum = cumulative_counts(total_counts * eligible)
    threshold_idx = np.full(len(total_counts), lowest, np.int64)
    if settings.use_top and not settings.use_all:
        reached = (cum >= settings.num_image) & eligible
        highest = NUM_BINS - 1 - np.argmax(reached[:, ::-1], axis=1)
        threshold_idx = np.where(reached.any(axis=1), highest, threshold_idx)
    total_image = cum[np.arange(len(cum)), threshold_idx]
    return threshold_idx, total_image


def copy_rates(total_image, settings):
    """Expected copies of each kept image per class: num_image / N (capped at 1 without upsample)."""
    total_image = np.asarray(total_image, np.float64)
    if settings.use_all:
        return np.ones_like(total_image)
    rates = np.divide(
        float(settings.num_image),
        total_image,
        out=np.zeros_like(total_image),
        where=total_image > 0,
    )
    return rates if settings.upsample else np.minimum(rates, 1.0)


def check_kept(total_counts, threshold_idx, total_image, settings):
    """Warns for each class that keeps no image; FilterError when no class keeps any."""
    predicted = total_counts.sum(axis=1)
    if not total_image.any():
        raise FilterError(
            f"no image would be kept: none of the {int(predicted.sum())} predictions has a top-1 "
            f"probability in [--min_threshold={settings.min_threshold}, "
            f"--max_prob={settings.max_prob}]. Lower --min_threshold, or train the teacher longer."
        )
    empty = np.flatnonzero(total_image == 0)
    for c in empty[:MAX_LISTED]:
        if not predicted[c]:
            logging.warning("class %d keeps no image: no image is predicted as class %d", c, c)
            continue
        logging.warning(
            "class %d keeps no image: %d images are predicted as class %d, none with probability "
            "in [%.2f, --max_prob=%s] (--min_threshold=%s)",
            c,
            predicted[c],
            c,
            THRESHOLDS[threshold_idx[c]],
            settings.max_prob,
            settings.min_threshold,
        )
    if len(empty):
        logging.warning(
            "%d of %d classes keep no image: %s", len(empty), len(total_image), listed(empty)
        )


@dataclasses.dataclass(frozen=True)
class Selection:
    """What pass 2 keeps, the same for every shard: see make_selection.

    Attributes:
      threshold_idx: int [num_classes], per class the index into THRESHOLDS
        of its threshold.
      total_image: int [num_classes], per class the images at or above it
        over all counted shards.
      rates: float64 [num_classes], the expected copies of each kept image.
      max_prob: images above this probability are dropped.
      num_label_classes: length of every probability vector.
      stats_shards: shards 0..stats_shards-1 were counted (and are totaled
        in the final stats).
      num_filter_tasks: filter tasks per shard.
      provenance: the checkpoint all pass-1 stats come from, None if unknown.
      provenance_source: the first stats file naming it, for messages.
    """

    threshold_idx: np.ndarray
    total_image: np.ndarray
    rates: np.ndarray
    max_prob: float
    num_label_classes: int
    stats_shards: int
    num_filter_tasks: int
    provenance: dict | None = None
    provenance_source: str | None = None


def make_selection(
    total_counts, settings, *, stats_shards, num_filter_tasks, provenance=None, source=None
):
    """Thresholds and copy rates of every class from the pass-1 counts of all shards.

    Args:
      total_counts: int [num_classes, NUM_BINS], the pass-1 counts summed
        over shards 0..stats_shards-1 and every filter task.
      settings: a BalancingSettings.
      stats_shards: number of shards counted.
      num_filter_tasks: filter tasks per shard.
      provenance: the checkpoint that predicted, None if unknown.
      source: the first stats file naming it, for messages.

    Returns:
      A Selection.

    Raises:
      FilterError: no image would be kept, or no threshold is eligible.
    """
    threshold_idx, total_image = select_thresholds(total_counts, settings)
    check_kept(total_counts, threshold_idx, total_image, settings)
    rates = copy_rates(total_image, settings)
    for c, (i, n, rate) in enumerate(zip(threshold_idx, total_image, rates, strict=True)):
        logging.debug(
            "class %d: threshold %.2f, %d images, %.3f copies each", c, THRESHOLDS[i], n, rate
        )
    logging.info(
        "%d classes upsampled, %d downsampled (target %d images per class); predictions of %s",
        int(np.sum((total_image < settings.num_image) & (total_image > 0))),
        int(np.sum(total_image > settings.num_image)),
        settings.num_image,
        describe_provenance(provenance),
    )
    return Selection(
        threshold_idx=threshold_idx,
        total_image=total_image,
        rates=rates,
        max_prob=settings.max_prob,
        num_label_classes=len(total_counts),
        stats_shards=stats_shards,
        num_filter_tasks=num_filter_tasks,
        provenance=provenance,
        provenance_source=source,
    )


_MIX_1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX_2 = np.uint64(0x94D049BB133111EB)
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)


def _splitmix64(x):
    """SplitMix64's finalizer on uint64 arrays (wrapping arithmetic)."""
    x = x + _GOLDEN
    x = (x ^ (x >> np.uint64(30))) * _MIX_1
    x = (x ^ (x >> np.uint64(27))) * _MIX_2
    return x ^ (x >> np.uint64(31))


def record_uniforms(seed, shard_id, positions):
    """The U[0, 1) draw of each record that decides its extra copy: a pure function of its key.

    A record's key is (seed, the shard it was read from, its position in that
    shard's input file). Because the draw depends on nothing else (not on the
    prediction workers, filter tasks or a runner's splits), the script path
    and beam_pseudo_label.py keep the same records with the same copy counts.

    Args:
      seed: the --seed flag.
      shard_id: the input shard.
      positions: int array [n] of record positions in the shard (0-based).

    Returns:
      float64 [n] in [0, 1): 53 random bits of a hash of the key.
    """
    with np.errstate(over="ignore"):
        key = _splitmix64(_splitmix64(np.uint64(int(seed) % 2**64)) ^ np.uint64(int(shard_id)))
        mixed = _splitmix64(key ^ np.asarray(positions, np.int64).astype(np.uint64))
    return (mixed >> np.uint64(11)).astype(np.float64) * 2.0**-53


def selection_id(selection, seed):
    """A short hash of everything that determines pass 2's output, given the inputs."""
    key = json.dumps(
        [
            np.asarray(selection.threshold_idx).tolist(),
            [float(r).hex() for r in selection.rates],
            float(selection.max_prob).hex(),
            selection.num_label_classes,
            selection.stats_shards,
            selection.num_filter_tasks,
            selection.provenance and selection.provenance["fingerprint"],
            selection.provenance and selection.provenance.get("use_ema"),
            int(seed),
        ]
    )
    return hashlib.sha256(key.encode()).hexdigest()[:16]


def threshold_json(selection):
    """threshold.json: {class: [t, N]}, and the provenance when known."""
    thresholds = {
        class_key(c): [float(THRESHOLDS[i]), int(n)]
        for c, (i, n) in enumerate(zip(selection.threshold_idx, selection.total_image, strict=True))
    }
    if selection.provenance is not None:
        thresholds[PROVENANCE_KEY] = selection.provenance
    return thresholds


def num_image_across_cat_json(selection, num_image):
    """num_image_across_cat.json: the images kept over all classes, at most num_image each."""
    return {"num_image_across_cat": int(np.minimum(selection.total_image, num_image).sum())}


# ---------------------------------------------------------------------------
# Pass-2 counts of one shard and task, and its stats file.


class ShardCounts:
    """Per-class counts of one shard's pass 2, summed batch by batch.

    Attributes:
      seen_bins: int [num_classes, NUM_BINS], every image's bin, as pass 1
        counts them.
      before: int [num_classes], the images that pass their class's threshold.
      after: int [num_classes], the records written, copies counted.
      true_before, true_after: int [2, num_classes], per pseudo label the
        images (before) or records (after) whose true class is known (row 0)
        and those whose true class is the pseudo label (row 1).
      true_invalid: images whose true label is outside 1..num_classes.
      confusion_before, confusion_after: the confusion matrix of the images
        (before) or records (after) with a known true class, sparse:
        {true class * num_classes + pseudo label: count}.
    """

    _KEYS = ("seen_bins", "before", "after", "true_before", "true_after", "true_invalid")

    def __init__(self, num_classes):
        self.num_classes = num_classes
        self.confusion_before = {}
        self.confusion_after = {}
        self.seen_bins = np.zeros([num_classes, NUM_BINS], np.int64)
        self.before = np.zeros([num_classes], np.int64)
        self.after = np.zeros([num_classes], np.int64)
        self.true_before = np.zeros([2, num_classes], np.int64)
        self.true_after = np.zeros([2, num_classes], np.int64)
        self.true_invalid = 0

    def add(self, batch):
        """Adds the counts of one batch: a dict with this class's attribute names as keys."""
        for key in self._KEYS:
            setattr(self, key, getattr(self, key) + batch[key])
        pairs = batch.get("true_pairs")
        if pairs is not None and len(pairs):
            add_sparse_counts(self.confusion_before, pairs, np.ones(len(pairs), np.int64))
            add_sparse_counts(self.confusion_after, pairs, batch["true_pair_copies"])

    def merge(self, other):
        """Adds the counts of another ShardCounts of the same classes; returns self."""
        for key in self._KEYS:
            setattr(self, key, getattr(self, key) + getattr(other, key))
        for name in ("confusion_before", "confusion_after"):
            table = getattr(self, name)
            for key, count in getattr(other, name).items():
                table[key] = table.get(key, 0) + count
        return self

    def confusion_json(self):
        """{"before_filtering", "after_balancing"}: [[true class, pseudo label, count], ...]."""
        return {
            key: sparse_to_triples(table, self.num_classes)
            for key, table in (
                ("before_filtering", self.confusion_before),
                ("after_balancing", self.confusion_after),
            )
        }

    def true_labels_json(self):
        """Per pseudo label [images with a known true class, correct], before and after."""

        def rows(counts):
            return {
                class_key(c): [int(counts[0, c]), int(counts[1, c])]
                for c in np.flatnonzero(counts[0])
            }

        return {
            "before_filtering": rows(self.true_before),
            "after_balancing": rows(self.true_after),
            "invalid": int(self.true_invalid),
            "confusion": self.confusion_json(),
        }


def add_sparse_counts(table, keys, weights):
    """Adds `weights` at `keys` into the dict `table` (zero weights leave no entry)."""
    unique, inverse = np.unique(np.asarray(keys, np.int64), return_inverse=True)
    sums = np.bincount(inverse, weights=np.asarray(weights, np.float64)).astype(np.int64)
    for key, count in zip(unique.tolist(), sums.tolist(), strict=True):
        if count:
            table[key] = table.get(key, 0) + count


def sparse_to_triples(table, num_classes):
    """[[row, column, count], ...] of a sparse {row * num_classes + column: count}, sorted."""
    return [[k // num_classes, k % num_classes, int(table[k])] for k in sorted(table)]


def triples_to_sparse(triples, num_classes, table=None):
    """Adds [[row, column, count], ...] into a sparse dict (a new one by default)."""
    table = {} if table is None else table
    for row, column, count in triples:
        if not (0 <= row < num_classes and 0 <= column < num_classes):
            raise ValueError(
                f"confusion entry {[row, column, count]} outside {num_classes} classes"
            )
        key = int(row) * num_classes + int(column)
        table[key] = table.get(key, 0) + int(count)
    return table


def shard_stats_json(counts, *, num_input_images, output_file, num_records, num_bytes, **keys):
    """A pass-2 stats file (stats/stats_%05d_%d.json).

    Args:
      counts: the ShardCounts of the shard and task.
      num_input_images: images of the task's prediction workers.
      output_file: basename of the data file written.
      num_records: records written to it.
      num_bytes: its size.
      **keys: further keys, stored as given (provenance, selection_id).

    Returns:
      The JSON object: `before_balancing` and `after_balancing` {class:
      count} of the classes with images, the arguments above and, when some
      record carries a true label, `true_labels`.
    """
    stats = {
        "before_balancing": {class_key(c): int(n) for c, n in enumerate(counts.before) if n},
        "after_balancing": {class_key(c): int(n) for c, n in enumerate(counts.after) if n},
        "num_input_images": int(num_input_images),
        "num_kept_images": int(counts.before.sum()),
        "num_output_records": int(num_records),
        "output_file": output_file,
        "num_output_bytes": int(num_bytes),
        **keys,
    }
    if counts.true_before[0].any() or counts.true_invalid:
        stats["true_labels"] = counts.true_labels_json()
    return stats


# ---------------------------------------------------------------------------
# Final stats: the totals of every shard's stats file.


class ShardStats(NamedTuple):
    """What the final stats take from one pass-2 stats file: see read_shard_stats.

    Attributes:
      where: the stats file, for messages.
      shard: its shard.
      counts: the ShardCounts it recorded (seen_bins are not recorded: zeros).
      output_file: the basename of its data file.
      num_bytes: the data file's size.
      num_records: the records in it.
      num_input_images: the images of the shard's task.
      provenance: the checkpoint that predicted, or None.
    """

    where: str
    shard: int
    counts: ShardCounts
    output_file: str
    num_bytes: int
    num_records: int
    num_input_images: int
    provenance: dict | None


def _per_class(counts_json, num_classes):
    counts = np.zeros([num_classes], np.int64)
    for uid, n in counts_json.items():
        counts[int(uid)] += n
    return counts


def _recorded_counts(obj, num_classes):
    """The ShardCounts of a pass-2 stats file's JSON object (KeyError etc. if malformed)."""
    counts = ShardCounts(num_classes)
    counts.after = _per_class(obj["after_balancing"], num_classes)
    counts.before = _per_class(obj["before_balancing"], num_classes)
    true_labels = obj.get("true_labels", {})
    for key, rows in (
        ("before_filtering", counts.true_before),
        ("after_balancing", counts.true_after),
    ):
        for uid, (known, correct) in true_labels.get(key, {}).items():
            rows[:, int(uid)] += [known, correct]
    counts.true_invalid = int(true_labels.get("invalid", 0))
    confusion = true_labels.get("confusion", {})
    for key, table in (
        ("before_filtering", counts.confusion_before),
        ("after_balancing", counts.confusion_after),
    ):
        triples_to_sparse(confusion.get(key, []), num_classes, table)
    return counts


def read_shard_stats(obj, num_classes, where, shard):
    """The ShardStats of a pass-2 stats file's JSON object.

    Raises:
      FilterError: a key is missing or malformed; the message names `where`
        and the shard to filter again.
    """
    try:
        counts = _recorded_counts(obj, num_classes)
        name, size = obj["output_file"], int(obj["num_output_bytes"])
        num_records = int(obj["num_output_records"])
        num_input_images = int(obj.get("num_input_images", 0))
    except (KeyError, ValueError, TypeError, IndexError) as e:
        raise FilterError(
            f"stats file {where} lacks or has a malformed {e}; re-run pass 2 for shard {shard}"
        ) from e
    provenance = obj.get(PROVENANCE_KEY)
    return ShardStats(where, shard, counts, name, size, num_records, num_input_images, provenance)


def _accuracy_json(known, correct):
    """{"accuracy", "num_correct", "num_images"} for counts of one or more classes."""
    known, correct = int(known), int(correct)
    return {
        "accuracy": round(correct / known, 6) if known else None,
        "num_correct": correct,
        "num_images": known,
    }


def pseudo_label_accuracy(before, after, num_without, num_invalid, confusion=None):
    """The "pseudo_label_accuracy" entry of the final stats.

    Args:
      before: int [2, num_classes]: per pseudo label, the predictions whose
        true class is known (row 0) and those equal to it (row 1).
      after: the same for the written records, copies counted.
      num_without: predictions without a true label.
      num_invalid: predictions whose true label is outside 1..num_classes.
      confusion: {"before_filtering", "after_balancing"}: the confusion
        matrices as [[true class, pseudo label, count], ...], or None.

    Returns:
      {"before_filtering": ..., "after_balancing": ...} each with the
      overall "accuracy", "num_correct", "num_images" and "per_class"
      {uid: the same} (per pseudo label: of the images labeled c, the
      fraction whose true class is c), plus "num_images_without_true_label"
      and "num_images_with_invalid_true_label", and `confusion` as given
      (when given); None when no image has a true label.
    """
    if not before[0].any():
        return None
    result = {}
    for key, counts in (("before_filtering", before), ("after_balancing", after)):
        entry = _accuracy_json(counts[0].sum(), counts[1].sum())
        entry["per_class"] = {
            class_key(c): _accuracy_json(counts[0, c], counts[1, c])
            for c in np.flatnonzero(counts[0])
        }
        result[key] = entry
    result["num_images_without_true_label"] = int(num_without)
    result["num_images_with_invalid_true_label"] = int(num_invalid)
    if confusion is not None:
        result["confusion"] = confusion
    return result


def _warn_lost_classes(after, before):
    lost = np.flatnonzero((after == 0) & (before > 0))
    for c in lost[:MAX_LISTED]:
        logging.warning(
            "class %d keeps no image: all of its %d images above the threshold were dropped by "
            "downsampling",
            c,
            before[c],
        )


def sum_counts(counts, num_classes):
    """The sum of an iterable of ShardCounts, as a new ShardCounts."""
    total = ShardCounts(num_classes)
    for c in counts:
        total.merge(c)
    return total


def final_stats(shard_stats, *, num_shards, num_filter_tasks, output_dir):
    """The final stats of a filter output from the ShardStats of every shard and task.

    Returns:
      The published keys (`cat_count`, `cat_sorted_pairs`, `total_cnt`) and
      `num_shards`, `total_replicas` (the filter tasks per shard), `files`
      ({basename of each data file: {"num_records", "num_bytes"}}),
      `provenance` (the checkpoint that predicted, or None) and, when the
      unlabeled records carry true labels, `pseudo_label_accuracy` (see
      pseudo_label_accuracy).

    Raises:
      FilterError: no shard wrote any record (the message names
        `output_dir`), or the shards come from different checkpoints.
    """
    counts = sum(s.counts.after for s in shard_stats)
    files = {
        s.output_file: {"num_records": s.num_records, "num_bytes": s.num_bytes} for s in shard_stats
    }
    if not counts.any():
        raise FilterError(
            f"no shard of {output_dir} kept any image ({len(files)} data files, all empty); "
            "lower --min_threshold or raise --num_image"
        )
    _warn_lost_classes(counts, sum(s.counts.before for s in shard_stats))
    provenance, _ = common_provenance(
        [(f"shard {s.shard} ({s.where})", s.provenance) for s in shard_stats],
        "the pass-2 stats",
        "Re-run pass 2 for the stale shards.",
    )
    pairs = sorted(
        ((class_key(c), int(n)) for c, n in enumerate(counts)), key=lambda x: (-x[1], int(x[0]))
    )
    final = {
        "cat_count": dict(pairs),
        "cat_sorted_pairs": [list(p) for p in pairs],
        "total_cnt": int(counts.sum()),
        "num_shards": num_shards,
        "total_replicas": num_filter_tasks,
        "files": files,
        PROVENANCE_KEY: provenance,
    }
    true_before = sum(s.counts.true_before for s in shard_stats)
    num_invalid = sum(s.counts.true_invalid for s in shard_stats)
    num_without = sum(s.num_input_images for s in shard_stats) - true_before[0].sum() - num_invalid
    accuracy = pseudo_label_accuracy(
        true_before,
        sum(s.counts.true_after for s in shard_stats),
        num_without,
        num_invalid,
        sum_counts(
            (s.counts for s in shard_stats), shard_stats[0].counts.num_classes
        ).confusion_json(),
    )
    if accuracy is not None:
        final["pseudo_label_accuracy"] = accuracy
    return final
