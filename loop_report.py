r"""Results of a Noisy Student loop (local_scripts/loop.sh): JSON, PNG, table.

Reads the output folder of loop.sh:
  round0_teacher/, round<r>_student/   eval_results.json, model_params.txt, FLAGS.json
  round<r>_pseudo/prelim_stats/total_counts.json   teacher's predicted classes
  round<r>_pseudo/filter_data/stats/final_stats.json   after filtering and balancing
  .done/<step>                          seconds each step took
and writes
  results.json   {"rounds": [{"round", "role", "model_name", "test_top_1",
                  "dev_top_1", "train_top_1", "num_pseudo_labeled", ...}, ...],
                  "wall_seconds", "step_seconds", "settings"}
  summary.png    test accuracy per round; per round, the pseudo-label class
                 histogram before and after filtering/balancing (class names
                 from the data's dataset_info.json when --setting=data_dir=... names it)
  round<r>_pseudo/pseudo_labels.png   per class its most confident kept images
                 and those just above its threshold, and the class histogram
and prints a table of accuracy per round.

When the unlabeled records carry their true labels (proc_mnist.py and
proc_svhn.py keep them), the filter's final stats hold the accuracy of the
pseudo labels; each student round then also reports
"pseudo_label_accuracy_before" (all predictions of its teacher),
"pseudo_label_accuracy_after" (the filtered, balanced records it trained on,
copies counted) and the same per class (per pseudo label:
"pseudo_label_accuracy_per_class_before" / "_after", None for a class
without images) and the confusion matrices ("pseudo_label_confusion_before" /
"_after": [[true class, pseudo label, count], ...]); the table shows the two
overall values, a second table each class, and
round<r>_pseudo/pseudo_label_accuracy.png draws both.

Usage:
  python loop_report.py --output_dir=output/mnist_demo --rounds=2
"""

import json
import os
import sys

from absl import app, flags

import file_names
import task_info

RESULTS_FILE = "results.json"
SUMMARY_FILE = "summary.png"

# Settings of each training run worth stating, read from its FLAGS.json.
TRAIN_SETTINGS = (
    "model_name",
    "width_coefficient",
    "depth_coefficient",
    "dropout_rate",
    "stochastic_depth_rate",
    "train_steps",
    "train_epochs",
    "train_batch_size",
    "unlabel_ratio",
    "teacher_softmax_temp",
    "augment_name",
    "randaug_mag",
    "randaug_layer",
    "base_learning_rate",
    "final_base_lr",
    "weight_decay",
    "label_smoothing",
    "moving_average_decay",
    "init_model_path",
    "num_train_images",
    "seed",
    "deterministic",
)


def _read_json(path, default=None):
    if not os.path.exists(path):
        return default
    with open(path) as f:
        return json.load(f)


def model_dir(output_dir, round_index):
    name = "round0_teacher" if round_index == 0 else f"round{round_index}_student"
    return os.path.join(output_dir, name)


def pseudo_dir(output_dir, round_index):
    return os.path.join(output_dir, f"round{round_index}_pseudo")


def prelim_stats_dir(output_dir, round_index):
    """The filter's pass-1 statistics of a round (filter_unlabel.sh's --prelim_stats_dir)."""
    return os.path.join(pseudo_dir(output_dir, round_index), "prelim_stats")


def filter_dir(output_dir, round_index):
    """The filter's output of a round (its --output_dir): data/, stats/, threshold.json."""
    return os.path.join(pseudo_dir(output_dir, round_index), "filter_data")


def describe_model(params):
    """'efficientnet-b0 (width 0.25, depth 0.25)' from a model_params.txt dict."""
    if not params:
        return None
    overrides = params.get("override_params") or {}
    parts = []
    for key, label in (("width_coefficient", "width"), ("depth_coefficient", "depth")):
        value = params.get(key, overrides.get(key))
        if value is not None:
            parts.append(f"{label} {value:g}")
    name = params.get("model_name", "?")
    return f"{name} ({', '.join(parts)})" if parts else name


def class_histograms(output_dir, round_index, num_classes):
    """(before, after): per-class pseudo-label counts before and after filtering/balancing.

    Before: the teacher's predicted class of every unlabeled image (pass-1
    statistics summed over confidence bins). After: records per class in the
    filtered, balanced data (upsampled images counted once per copy).
    """
    total = _read_json(file_names.total_counts_path(prelim_stats_dir(output_dir, round_index)), {})
    before = [0] * num_classes
    for uid, bins in total.items():
        before[int(uid)] = int(sum(count for _, count in bins))
    final = _read_json(file_names.final_stats_path(filter_dir(output_dir, round_index)), {})
    after = [0] * num_classes
    for uid, count in final.get("cat_count", {}).items():
        after[int(uid)] = int(count)
    return before, after, int(final.get("total_cnt", 0))


def pseudo_label_accuracy(output_dir, round_index, num_classes):
    """Accuracy of a round's pseudo labels against the true labels, from the final stats.

    Returns:
      {"pseudo_label_accuracy_before", "pseudo_label_accuracy_after": overall
      accuracy, "pseudo_label_accuracy_per_class_before", "..._after": lists
      [num_classes] of per-class accuracy or None,
      "pseudo_label_confusion_before", "..._after": the confusion matrices
      as [[true class, pseudo label, count], ...]}; all None when the
      unlabeled records had no true labels (or the stats predate them).
    """
    final = _read_json(file_names.final_stats_path(filter_dir(output_dir, round_index)), {})
    accuracy = final.get("pseudo_label_accuracy") or {}
    out = {}
    for when, key in (("before", "before_filtering"), ("after", "after_balancing")):
        entry = accuracy.get(key) or {}
        per_class = [None] * num_classes
        for uid, value in (entry.get("per_class") or {}).items():
            if int(uid) < num_classes:
                per_class[int(uid)] = value.get("accuracy")
        out[f"pseudo_label_accuracy_{when}"] = entry.get("accuracy")
        out[f"pseudo_label_accuracy_per_class_{when}"] = per_class if entry else None
        confusion = accuracy.get("confusion") or {}
        out[f"pseudo_label_confusion_{when}"] = confusion.get(key) if entry else None
    return out


def step_seconds(output_dir):
    """{step: seconds} recorded by loop.sh (and demo.sh) in .done/."""
    done = os.path.join(output_dir, ".done")
    out = {}
    if os.path.isdir(done):
        for name in sorted(os.listdir(done)):
            with open(os.path.join(done, name)) as f:
                text = f.read().strip()
            try:
                out[name] = round(float(text), 1)
            except ValueError:
                continue
    return out


def images_trained(flags_json):
    """Images a training run processed: steps x (labeled + unlabeled images per step).

    The loop's compute in a unit that does not depend on the machine; None
    when its FLAGS.json lacks the step count or batch size.
    """
    steps, batch = flags_json.get("train_steps"), flags_json.get("train_batch_size")
    if steps is None or batch is None:
        return None
    last_steps = flags_json.get("train_last_step_num")
    if last_steps is not None and last_steps >= 0:
        steps = last_steps  # fine-tuning: only the last steps are trained
    return int(round(steps * batch * (1 + float(flags_json.get("unlabel_ratio") or 0))))


def _top1(results, subset):
    value = (results or {}).get(subset, {}).get("top_1_accuracy")
    return None if value is None else float(value)


def collect(output_dir, rounds, settings=None):
    """The results.json dict of a loop output folder.

    Raises:
      FileNotFoundError: a round's model has no eval_results.json.
    """
    entries = []
    train_settings = {}
    num_classes = None
    for r in range(rounds + 1):
        mdir = model_dir(output_dir, r)
        results_path = os.path.join(mdir, file_names.EVAL_RESULTS_FILE)
        results = _read_json(results_path)
        if results is None:
            raise FileNotFoundError(f"{results_path} is missing: round {r} has not finished.")
        params = _read_json(os.path.join(mdir, file_names.MODEL_PARAMS_FILE), {})
        num_classes = num_classes or params.get("num_classes")
        entry = {
            "round": r,
            "role": "teacher" if r == 0 else "student",
            "model_name": describe_model(params),
            "model_dir": mdir,
            "num_params": params.get("num_params"),
            "test_top_1": _top1(results, "test"),
            "dev_top_1": _top1(results, "dev"),
            "train_top_1": _top1(results, "train"),
            "global_step": (results.get("test") or next(iter(results.values()))).get("global_step"),
            "num_pseudo_labeled": 0,
        }
        if r > 0:
            before, after, total = class_histograms(output_dir, r, num_classes or 10)
            entry.update(
                num_pseudo_labeled=total,
                pseudo_label_counts_before=before,
                pseudo_label_counts_after=after,
            )
            entry.update(pseudo_label_accuracy(output_dir, r, num_classes or 10))
        flags_json = _read_json(os.path.join(mdir, file_names.FLAGS_FILE), {})
        entry["train_images"] = images_trained(flags_json)
        entries.append(entry)
        train_settings[f"round{r}_{entry['role']}"] = {
            k: flags_json.get(k) for k in TRAIN_SETTINGS if k in flags_json
        }
    subset = compared_subset(entries)
    teacher_error = 1.0 - entries[0][f"{subset}_top_1"]
    for entry in entries[1:]:
        error = 1.0 - entry[f"{subset}_top_1"]
        ratio = round(error / teacher_error, 4) if teacher_error else None
        entry[f"{subset}_error_vs_teacher"] = ratio
    seconds = step_seconds(output_dir)
    trained = [e["train_images"] for e in entries]
    return {
        "rounds": entries,
        "train_images": None if None in trained else sum(trained),
        "wall_seconds": round(sum(seconds.values()), 1),
        "step_seconds": seconds,
        "settings": dict(settings or {}, training=train_settings),
    }


def compared_subset(entries):
    """The subset the rounds are compared on: test, or dev when a dataset has no test split.

    Raises:
      ValueError: no round was evaluated on test or dev.
    """
    for subset in ("test", "dev"):
        if all(entry.get(f"{subset}_top_1") is not None for entry in entries):
            return subset
    raise ValueError("The rounds were not all evaluated on test or dev: nothing to compare.")


def _accuracy_pair(entry):
    """'97.10 / 99.02': pseudo-label accuracy of all predictions and of the kept records."""
    before = entry.get("pseudo_label_accuracy_before")
    after = entry.get("pseudo_label_accuracy_after")
    if before is None and after is None:
        return "" if entry["role"] == "teacher" else "-"
    return " / ".join(_pct(v) for v in (before, after))


def _pct(value):
    return "-" if value is None else f"{100 * value:.2f}"


def _aligned(rows, text_column):
    """Lines of a table: a header row, a rule, the rows; `text_column` left-aligned."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = [
        "  ".join(
            c.ljust(w) if i == text_column else c.rjust(w)
            for i, (c, w) in enumerate(zip(row, widths, strict=True))
        )
        for row in rows
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return lines


def format_table(results):
    """A plain-text table of accuracy per round."""

    rows = [
        (
            "round",
            "role",
            "train %",
            "dev %",
            "test %",
            f"{compared_subset(results['rounds'])} error vs teacher",
            "pseudo-labeled",
            "pseudo-label acc % (all / kept)",
        )
    ]
    for e in results["rounds"]:
        ratio = e.get("test_error_vs_teacher", e.get("dev_error_vs_teacher"))
        change = "" if ratio is None else f"{100 * (ratio - 1):+.0f}%"
        rows.append(
            (
                str(e["round"]),
                "teacher" if e["role"] == "teacher" else f"student {e['round']}",
                _pct(e["train_top_1"]),
                _pct(e["dev_top_1"]),
                _pct(e["test_top_1"]),
                change,
                str(e["num_pseudo_labeled"]),
                _accuracy_pair(e),
            )
        )
    lines = _aligned(rows, 1)
    lines.append(f"model: {results['rounds'][0]['model_name']}")
    if results.get("train_images") is not None:
        lines.append(f"images processed by training, all rounds: {results['train_images']:,}")
    lines.append(f"time of all steps: {results['wall_seconds'] / 60:.1f} min")
    return "\n".join(lines)


# ---------------------------------------------------------------------------
# Pictures (matplotlib). Each *_figure function returns the figure, so tests
# can read its axes; draw_* saves it.

_KEPT_COLOR = "tab:orange"
_ALL_COLOR = "tab:gray"


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path):
    """Saves `fig` as a PNG at `path` atomically and closes it."""
    tmp = path + ".tmp.png"
    fig.savefig(tmp, dpi=110, bbox_inches="tight")
    _pyplot().close(fig)
    os.replace(tmp, path)


def _class_ticks(ax, class_names, axis="x"):
    many = len(class_names) > 10
    positions = list(range(len(class_names)))
    if axis == "x":
        ax.set_xticks(positions, class_names, rotation=90 if many else 0, fontsize=7)
    else:
        ax.set_yticks(positions, class_names, fontsize=7)


def summary_figure(results, class_names):
    """The summary figure: accuracy per round, then per student round the class histogram."""
    plt = _pyplot()
    rounds = results["rounds"]
    fig, axes = plt.subplots(
        1, len(rounds), figsize=(3.2 + 4.2 * (len(rounds) - 1), 3.6), squeeze=False
    )
    axes = axes[0]
    subset = compared_subset(rounds)
    names = ["teacher"] + [f"student {e['round']}" for e in rounds[1:]]
    # The train accuracy (of its own labeled images, eval mode) beside the
    # compared one: a teacher that does not fit its own labels is underfit.
    shown = [("train", "tab:gray"), (subset, "tab:blue")]
    shown = [(s, c) for s, c in shown if all(e.get(f"{s}_top_1") is not None for e in rounds)]
    width = 0.8 / len(shown)
    accs = []
    for k, (name, color) in enumerate(shown):
        values = [100 * e[f"{name}_top_1"] for e in rounds]
        accs += values
        x = [i + (k - (len(shown) - 1) / 2) * width for i in range(len(rounds))]
        bars = axes[0].bar(x, values, width, color=color, label=name)
        axes[0].bar_label(bars, fmt="%.2f", fontsize=6)
    axes[0].set_xticks(range(len(rounds)), names)
    axes[0].set_ylim(max(0.0, min(accs) - 2.0), min(100.0, max(accs) + 1.0))
    axes[0].set_ylabel("top-1 accuracy (%)")
    axes[0].set_title(f"{' and '.join(n for n, _ in shown).capitalize()} accuracy", fontsize=9)
    axes[0].legend(fontsize=6, loc="lower right")
    axes[0].tick_params(axis="x", labelsize=7)
    for ax, e in zip(axes[1:], rounds[1:], strict=True):
        before = e.get("pseudo_label_counts_before") or [0] * len(class_names)
        after = e.get("pseudo_label_counts_after") or [0] * len(class_names)
        x = range(len(class_names))
        ax.bar([i - 0.2 for i in x], before, 0.4, color=_ALL_COLOR, label="teacher's predictions")
        ax.bar([i + 0.2 for i in x], after, 0.4, color=_KEPT_COLOR, label="after filter + balance")
        _class_ticks(ax, class_names)
        ax.set_ylabel("images")
        title = f"Round {e['round']}: pseudo labels per class"
        if e.get("pseudo_label_accuracy_before") is not None:
            title += f"\naccuracy {_accuracy_pair(e)} % (all / kept)"
        ax.set_title(title, fontsize=9)
        ax.legend(fontsize=6)
    fig.suptitle(
        f"{rounds[0]['model_name']}; steps took {results['wall_seconds'] / 60:.1f} min", fontsize=8
    )
    fig.tight_layout()
    return fig


def draw_summary(results, path, class_names=None):
    """Writes summary.png (see summary_figure)."""
    num_classes = len((results["rounds"][-1].get("pseudo_label_counts_before")) or [])
    names = class_names or [str(c) for c in range(num_classes)]
    _save(summary_figure(results, names), path)


def confusion_matrix(triples, num_classes):
    """The dense [true class, pseudo label] counts of [[true, pseudo, count], ...]."""
    import numpy as np

    matrix = np.zeros([num_classes, num_classes], np.int64)
    for true, pseudo, count in triples or []:
        matrix[true, pseudo] += count
    return matrix


def pseudo_label_accuracy_figure(entry, class_names):
    """Per-class pseudo-label accuracy (before and after filtering) and the confusion matrices.

    The matrices' rows are the true classes, their columns the pseudo labels;
    each row is shown as fractions of its true class (the numbers are counts).
    """
    import numpy as np

    plt = _pyplot()
    num_classes = len(class_names)
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.6))
    x = np.arange(num_classes)
    for offset, when, color, label in (
        (-0.2, "before", _ALL_COLOR, "all predictions"),
        (0.2, "after", _KEPT_COLOR, "kept (copies counted)"),
    ):
        values = entry.get(f"pseudo_label_accuracy_per_class_{when}") or [None] * num_classes
        heights = [np.nan if v is None else 100 * v for v in values]
        axes[0].bar(x + offset, heights, 0.4, color=color, label=label)
    _class_ticks(axes[0], class_names)
    axes[0].set_ylabel("pseudo-label accuracy (%)")
    axes[0].set_xlabel("pseudo label")
    axes[0].set_title(
        f"Round {entry['round']}: accuracy per pseudo label, {_accuracy_pair(entry)} % overall",
        fontsize=9,
    )
    axes[0].legend(fontsize=7)
    for ax, when, title in (
        (axes[1], "before", "all predictions"),
        (axes[2], "after", "kept records"),
    ):
        matrix = confusion_matrix(entry.get(f"pseudo_label_confusion_{when}"), num_classes)
        rows = matrix.sum(axis=1, keepdims=True)
        shown = np.divide(matrix, rows, out=np.zeros(matrix.shape), where=rows > 0)
        image = ax.imshow(shown, cmap="Blues", vmin=0, vmax=1)
        if num_classes <= 12:
            for (i, j), count in np.ndenumerate(matrix):
                if count:
                    ax.text(
                        j,
                        i,
                        str(count),
                        ha="center",
                        va="center",
                        fontsize=6,
                        color="white" if shown[i, j] > 0.5 else "black",
                    )
        _class_ticks(ax, class_names)
        _class_ticks(ax, class_names, axis="y")
        ax.set_xlabel("pseudo label")
        ax.set_ylabel("true class")
        ax.set_title(f"Confusion matrix, {title}", fontsize=9)
        fig.colorbar(image, ax=ax, fraction=0.046, label="fraction of the true class")
    fig.tight_layout()
    return fig


FLAGS = flags.FLAGS


def define_flags():
    """The entry point's flags (defined only when run as a script, so that the
    module can be imported beside other entry points that own flags of the
    same names, such as filter_unlabel_data's --output_dir)."""
    flags.DEFINE_string("output_dir", None, "Output folder of loop.sh.")
    flags.DEFINE_integer("rounds", 2, "Noisy-student rounds after the teacher.")
    flags.DEFINE_multi_string(
        "setting", [], "key=value pairs stored under results.json 'settings'."
    )
    flags.DEFINE_bool("png", True, "Also write summary.png.")


PSEUDO_LABELS_FILE = "pseudo_labels.png"
PSEUDO_LABEL_ACCURACY_FILE = "pseudo_label_accuracy.png"
# Images per row of pseudo_labels.png: the most confident kept ones, and the
# least confident kept ones (just above the class's threshold).
PICTURE_IMAGES = 8


def pseudo_label_examples(output_dir, round_index, num_classes, per_row=PICTURE_IMAGES):
    """{class: (most confident, least confident)} kept images of a round, as [(prob, jpeg)].

    Streams the filtered records (filter_data/data/) keeping only 2 *
    `per_row` images per class; upsampled copies count once.
    """
    import heapq

    import tensorflow as tf

    files = sorted(
        tf.io.gfile.glob(
            os.path.join(file_names.filtered_dir(filter_dir(output_dir, round_index)), "*")
        )
    )
    top = {c: [] for c in range(num_classes)}
    bottom = {c: [] for c in range(num_classes)}
    seen = set()
    for raw in tf.data.TFRecordDataset(files):
        feature = tf.train.Example.FromString(raw.numpy()).features.feature
        jpeg = feature["image/encoded"].bytes_list.value[0]
        if jpeg in seen:
            continue
        seen.add(jpeg)
        label, prob = feature["label"].int64_list.value[0], feature["prob"].float_list.value[0]
        if label >= num_classes:
            continue
        heap = top[label]
        (heapq.heappush if len(heap) < per_row else heapq.heappushpop)(heap, (prob, jpeg))
        heap = bottom[label]
        (heapq.heappush if len(heap) < per_row else heapq.heappushpop)(heap, (-prob, jpeg))
    return {
        c: (sorted(top[c], reverse=True), sorted(((-p, j) for p, j in bottom[c]), reverse=True))
        for c in range(num_classes)
    }


def draw_pseudo_labels(output_dir, round_index, class_names, path):
    """pseudo_labels.png of a round: per class its most confident and its threshold-side images,
    and the class histogram before and after balancing (matplotlib)."""
    import io

    from PIL import Image

    plt = _pyplot()
    num_classes = len(class_names)
    examples = pseudo_label_examples(output_dir, round_index, num_classes)
    before, after, _ = class_histograms(output_dir, round_index, num_classes)
    rows = 2 * num_classes
    fig = plt.figure(figsize=(PICTURE_IMAGES * 0.9 + 1.5, rows * 0.9 + 3.5))
    grid = fig.add_gridspec(rows + 4, PICTURE_IMAGES, hspace=0.35)
    for c, name in enumerate(class_names):
        for row, (kind, images) in enumerate(
            zip(("top", "near threshold"), examples[c], strict=True)
        ):
            for i in range(PICTURE_IMAGES):
                ax = fig.add_subplot(grid[2 * c + row, i])
                ax.set_xticks([]), ax.set_yticks([])
                if i < len(images):
                    prob, jpeg = images[i]
                    ax.imshow(Image.open(io.BytesIO(jpeg)).convert("RGB"))
                    ax.set_title(f"{prob:.2f}", fontsize=6, pad=1)
                else:
                    ax.axis("off")
                if i == 0:
                    ax.set_ylabel(
                        f"{name}\n{kind}", fontsize=6, rotation=0, ha="right", va="center"
                    )
    ax = fig.add_subplot(grid[rows + 1 :, :])
    x = range(num_classes)
    ax.bar([i - 0.2 for i in x], before, width=0.4, label="teacher's predictions")
    ax.bar([i + 0.2 for i in x], after, width=0.4, label="after filtering + balancing")
    ax.set_xticks(list(x), class_names, rotation=45 if num_classes > 10 else 0, fontsize=7)
    ax.set_ylabel("images")
    ax.legend(fontsize=7)
    fig.suptitle(f"Round {round_index}: pseudo labels (confidence above each image)")
    _save(fig, path)


def class_names_of(settings, num_classes):
    """The data's class names (proc_folder.py's dataset_info.json), else the class indices."""
    names = (settings.get("labeled_data") or {}).get("class_names")
    if names and len(names) == num_classes:
        return [str(n) for n in names]
    return [str(i) for i in range(num_classes)]


def write_pseudo_label_pictures(output_dir, results):
    """Writes the pictures of every student round's pseudo labels; returns their paths.

    round<r>_pseudo/pseudo_labels.png: the kept images per class and the class
    histogram. round<r>_pseudo/pseudo_label_accuracy.png, when the unlabeled
    records carry true labels: accuracy per class and the confusion matrices.
    """
    paths = []
    for entry in results["rounds"]:
        r = entry["round"]
        num_classes = len(entry.get("pseudo_label_counts_before") or [])
        if r == 0 or not num_classes:
            continue
        names = class_names_of(results.get("settings") or {}, num_classes)
        if os.path.isdir(file_names.filtered_dir(filter_dir(output_dir, r))):
            path = os.path.join(pseudo_dir(output_dir, r), PSEUDO_LABELS_FILE)
            draw_pseudo_labels(output_dir, r, names, path)
            paths.append(path)
        if entry.get("pseudo_label_confusion_before") is not None:
            path = os.path.join(pseudo_dir(output_dir, r), PSEUDO_LABEL_ACCURACY_FILE)
            _save(pseudo_label_accuracy_figure(entry, names), path)
            paths.append(path)
    return paths


def format_per_class_table(entry, class_names):
    """Per pseudo label of a student round: images before/after, accuracy before/after."""
    before = entry.get("pseudo_label_accuracy_per_class_before") or []
    after = entry.get("pseudo_label_accuracy_per_class_after") or []
    rows = [("class", "predicted", "kept", "accuracy % (all)", "accuracy % (kept)")]
    for c, name in enumerate(class_names):
        rows.append(
            (
                name,
                str(entry["pseudo_label_counts_before"][c]),
                str(entry["pseudo_label_counts_after"][c]),
                _pct(before[c] if c < len(before) else None),
                _pct(after[c] if c < len(after) else None),
            )
        )
    return f"round {entry['round']} pseudo labels per class:\n" + "\n".join(_aligned(rows, 0))


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    if not FLAGS.output_dir:
        raise app.UsageError("--output_dir is required.")
    settings = {}
    for item in FLAGS.setting:
        key, sep, value = item.partition("=")
        if not sep:
            raise app.UsageError(f"--setting={item!r}: expected key=value.")
        settings[key] = value
    data_dir = settings.get("data_dir")
    if data_dir:
        settings["labeled_data"] = _read_json(os.path.join(data_dir, task_info.DATASET_INFO_FILE))
        settings["data_preparation"] = _read_json(os.path.join(data_dir, task_info.SETTINGS_FILE))
    try:
        results = collect(FLAGS.output_dir, FLAGS.rounds, settings)
    except FileNotFoundError as e:
        sys.exit(f"loop_report.py: error: {e}")
    path = os.path.join(FLAGS.output_dir, RESULTS_FILE)
    with open(path + ".tmp", "w") as f:
        json.dump(results, f, indent=2)
    os.replace(path + ".tmp", path)
    num_classes = len(results["rounds"][-1].get("pseudo_label_counts_before") or [])
    class_names = class_names_of(settings, num_classes)
    if FLAGS.png:
        draw_summary(results, os.path.join(FLAGS.output_dir, SUMMARY_FILE), class_names)
        for picture in write_pseudo_label_pictures(FLAGS.output_dir, results):
            print(f"Wrote {picture}")
    print(format_table(results))
    for entry in results["rounds"][1:]:
        if entry.get("pseudo_label_accuracy_before") is not None:
            print(format_per_class_table(entry, class_names))
    print(f"Wrote {path}" + (f" and {SUMMARY_FILE}" if FLAGS.png else ""))


if __name__ == "__main__":
    define_flags()
    app.run(main)
