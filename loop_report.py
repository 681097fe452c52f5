r"""Results of a Noisy Student loop (local_scripts/mnist/loop.sh): JSON, PNG, table.

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
                 histogram before and after filtering/balancing
and prints a table of accuracy per round.

When the unlabeled records carry their true labels (proc_mnist.py and
proc_svhn.py keep them), the filter's final stats hold the accuracy of the
pseudo labels; each student round then also reports
"pseudo_label_accuracy_before" (all predictions of its teacher),
"pseudo_label_accuracy_after" (the filtered, balanced records it trained on,
copies counted) and the same per class (per pseudo label:
"pseudo_label_accuracy_per_class_before" / "_after", None for a class
without images), and the table shows the two overall values.

Usage:
  python loop_report.py --output_dir=output/mnist_demo --rounds=2
"""

import json
import os
import sys

from absl import app, flags

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
    root = pseudo_dir(output_dir, round_index)
    total = _read_json(os.path.join(root, "prelim_stats", "total_counts.json"), {})
    before = [0] * num_classes
    for uid, bins in total.items():
        before[int(uid)] = int(sum(count for _, count in bins))
    final = _read_json(os.path.join(root, "filter_data", "stats", "final_stats.json"), {})
    after = [0] * num_classes
    for uid, count in final.get("cat_count", {}).items():
        after[int(uid)] = int(count)
    return before, after, int(final.get("total_cnt", 0))


def pseudo_label_accuracy(output_dir, round_index, num_classes):
    """Accuracy of a round's pseudo labels against the true labels, from the final stats.

    Returns:
      {"pseudo_label_accuracy_before", "pseudo_label_accuracy_after": overall
      accuracy, "pseudo_label_accuracy_per_class_before", "..._after": lists
      [num_classes] of per-class accuracy or None}; all None when the
      unlabeled records had no true labels (or the stats predate them).
    """
    root = pseudo_dir(output_dir, round_index)
    final = _read_json(os.path.join(root, "filter_data", "stats", "final_stats.json"), {})
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
        results = _read_json(os.path.join(mdir, "eval_results.json"))
        if results is None:
            raise FileNotFoundError(
                f"{mdir}/eval_results.json is missing: round {r} has not finished."
            )
        params = _read_json(os.path.join(mdir, "model_params.txt"), {})
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
        entries.append(entry)
        flags_json = _read_json(os.path.join(mdir, "FLAGS.json"), {})
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
    return {
        "rounds": entries,
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
    return " / ".join("-" if v is None else f"{100 * v:.2f}" for v in (before, after))


def format_table(results):
    """A plain-text table of accuracy per round."""

    def pct(value):
        return "-" if value is None else f"{100 * value:.2f}"

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
                pct(e["train_top_1"]),
                pct(e["dev_top_1"]),
                pct(e["test_top_1"]),
                change,
                str(e["num_pseudo_labeled"]),
                _accuracy_pair(e),
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = [
        "  ".join(
            c.ljust(w) if i == 1 else c.rjust(w)
            for i, (c, w) in enumerate(zip(row, widths, strict=True))
        )
        for row in rows
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    lines.append(f"model: {results['rounds'][0]['model_name']}")
    lines.append(f"time of all steps: {results['wall_seconds'] / 60:.1f} min")
    return "\n".join(lines)


# ---------------------------------------------------------------------------
# PNG (Pillow, which TensorBoard already depends on).

_BLUE = (31, 119, 180)
_ORANGE = (255, 127, 14)
_GRAY = (170, 170, 170)
_GREEN = (44, 160, 44)
_BLACK = (0, 0, 0)
_GRID = (225, 225, 225)


def _font(size):
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1: one bitmap size only
        return ImageFont.load_default()


def _text(draw, xy, text, font, anchor="la", fill=_BLACK):
    draw.text(xy, text, font=font, fill=fill, anchor=anchor)


def _bar_panel(draw, box, groups, colors, y_range, font, small, title, value_fmt=None, labels=()):
    """Draws grouped bars in box = (x0, y0, x1, y1): groups[i][j] is series j of group i."""
    x0, y0, x1, y1 = box
    lo, hi = y_range
    _text(draw, ((x0 + x1) / 2, y0 - 26), title, font, anchor="ms")
    for k in range(5):
        value = lo + (hi - lo) * k / 4
        y = y1 - (y1 - y0) * k / 4
        draw.line([(x0, y), (x1, y)], fill=_GRID)
        _text(draw, (x0 - 4, y), f"{value:g}" if hi > 10 else f"{value:.1f}", small, anchor="rm")
    draw.line([(x0, y0), (x0, y1), (x1, y1)], fill=_BLACK)
    n = len(groups)
    slot = (x1 - x0) / max(n, 1)
    for i, values in enumerate(groups):
        width = slot * 0.8 / len(values)
        for j, value in enumerate(values):
            left = x0 + slot * i + slot * 0.1 + j * width
            frac = 0.0 if hi == lo else (min(max(value, lo), hi) - lo) / (hi - lo)
            top = y1 - frac * (y1 - y0)
            draw.rectangle([left, top, left + width - 1, y1], fill=colors[j % len(colors)])
            if value_fmt:
                _text(draw, (left + width / 2, top - 3), value_fmt(value), small, anchor="ms")
        if i < len(labels):
            _text(draw, (x0 + slot * (i + 0.5), y1 + 5), labels[i], small, anchor="ma")


def _nice_top(value):
    """A round axis maximum >= value whose quarters are round numbers."""
    quarter = value / 4
    scale = 10 ** max(len(str(int(quarter))) - 1, 0)
    for mult in (1, 2, 2.5, 5, 10):
        if mult * scale >= quarter:
            return 4 * mult * scale
    return 4 * 10 * scale


def draw_summary(results, path):
    """Writes the summary PNG: accuracy per round, then one histogram panel per round."""
    from PIL import Image, ImageDraw

    rounds = results["rounds"]
    panels = 1 + (len(rounds) - 1)
    width, height = 60 + 340 * panels, 430
    image = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(image)
    font, small = _font(15), _font(12)

    subset = compared_subset(rounds)
    accs = [100 * e[f"{subset}_top_1"] for e in rounds]
    lo = max(0.0, min(accs) - 1.5)
    lo = float(int(lo * 2)) / 2
    hi = min(100.0, max(accs) + 0.5)
    labels = ["teacher"] + [f"student {e['round']}" for e in rounds[1:]]
    _bar_panel(
        draw,
        (70, 60, 340, 330),
        [[a] for a in accs],
        [_BLUE],
        (lo, hi),
        font,
        small,
        f"{subset.capitalize()} accuracy (%) per round",
        value_fmt=lambda v: f"{v:.2f}",
        labels=labels,
    )
    for k, e in enumerate(rounds[1:]):
        x0 = 70 + 340 * (k + 1)
        before = e.get("pseudo_label_counts_before") or []
        after = e.get("pseudo_label_counts_after") or []
        _bar_panel(
            draw,
            (x0, 60, x0 + 290, 330),
            list(zip(before, after, strict=True)),
            [_GRAY, _ORANGE],
            (0, _nice_top(max(before + after + [1]))),
            font,
            small,
            f"Round {e['round']} pseudo labels per class",
            labels=[str(c) for c in range(len(before))],
        )
        if e.get("pseudo_label_accuracy_before") is not None:
            _text(
                draw,
                (x0 + 145, 48),
                f"pseudo-label accuracy {_accuracy_pair(e)} % (all / kept)",
                small,
                anchor="ms",
            )
    if len(rounds) > 1:
        for i, (color, label) in enumerate(
            (
                (_GRAY, "teacher's prediction, all unlabeled images"),
                (_ORANGE, "after filter + balance"),
            )
        ):
            y = 362 + 18 * i
            draw.rectangle([410, y, 422, y + 12], fill=color)
            _text(draw, (428, y + 6), label, small, anchor="lm")
    _text(
        draw,
        (10, height - 10),
        f"{rounds[0]['model_name']}; steps took {results['wall_seconds'] / 60:.1f} min",
        small,
        anchor="ls",
    )
    tmp = path + ".tmp.png"
    image.save(tmp, format="PNG")
    os.replace(tmp, path)


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
            os.path.join(pseudo_dir(output_dir, round_index), "filter_data", "data", "*")
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

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from PIL import Image

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
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)


def class_names_of(settings, num_classes):
    """The data's class names (proc_folder.py's dataset_info.json), else the class indices."""
    names = (settings.get("labeled_data") or {}).get("class_names")
    if names and len(names) == num_classes:
        return [str(n) for n in names]
    return [str(i) for i in range(num_classes)]


def write_pseudo_label_pictures(output_dir, results):
    """Writes round<r>_pseudo/pseudo_labels.png for every student round; returns the paths.

    Needs matplotlib (requirements.txt); without it the pictures are left out
    with a note, and results.json and summary.png are still written.
    """
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        print(
            "loop_report.py: matplotlib is not installed: no pseudo_labels.png (pip install matplotlib)."
        )
        return []
    paths = []
    for entry in results["rounds"]:
        r = entry["round"]
        if r == 0 or not os.path.isdir(
            os.path.join(pseudo_dir(output_dir, r), "filter_data", "data")
        ):
            continue
        num_classes = len(entry.get("pseudo_label_counts_before") or [])
        if not num_classes:
            continue
        names = class_names_of(results.get("settings") or {}, num_classes)
        path = os.path.join(pseudo_dir(output_dir, r), PSEUDO_LABELS_FILE)
        draw_pseudo_labels(output_dir, r, names, path)
        paths.append(path)
    return paths


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
        settings["labeled_data"] = _read_json(os.path.join(data_dir, "dataset_info.json"))
        settings["data_preparation"] = _read_json(os.path.join(data_dir, "proc_settings.json"))
    try:
        results = collect(FLAGS.output_dir, FLAGS.rounds, settings)
    except FileNotFoundError as e:
        sys.exit(f"loop_report.py: error: {e}")
    path = os.path.join(FLAGS.output_dir, RESULTS_FILE)
    with open(path + ".tmp", "w") as f:
        json.dump(results, f, indent=2)
    os.replace(path + ".tmp", path)
    if FLAGS.png:
        draw_summary(results, os.path.join(FLAGS.output_dir, SUMMARY_FILE))
        for picture in write_pseudo_label_pictures(FLAGS.output_dir, results):
            print(f"Wrote {picture}")
    print(format_table(results))
    print(f"Wrote {path}" + (f" and {SUMMARY_FILE}" if FLAGS.png else ""))


if __name__ == "__main__":
    define_flags()
    app.run(main)
