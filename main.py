r"""Train, evaluate and predict with EfficientNet teachers and noisy students.

Flag names and defaults are those of the published Noisy Student code, so its
scripts keep working. Examples:

  # Supervised teacher on SVHN:
  python main.py --use_tpu=False --task_name=svhn --mode=train \
      --label_data_dir=data/svhn/proc --model_dir=ckpt/teacher \
      --train_batch_size=128 --train_steps=20000
  # Noisy student with the teacher running on the fly:
  python main.py --use_tpu=False --task_name=svhn --mode=train_and_eval \
      --label_data_dir=data/svhn/proc --unlabel_data_dir=data/svhn/proc/unlabeled \
      --unlabel_ratio=5 --teacher_model_name=efficientnet-b0 \
      --teacher_model_path=ckpt/teacher --teacher_softmax_temp=1 \
      --augment_name=v1 --randaug_mag=5 --model_dir=ckpt/student

SIGTERM or SIGINT (Ctrl-C) during --mode=train or train_and_eval stops the
training after the running step, saves a checkpoint of that step, releases
the model_dir's train.lock, logs "preempted at step N, checkpoint saved" and
exits with status 75; running the same command again resumes from step N.
"""

import dataclasses
import sys

from absl import app, flags, logging

import precision

FLAGS = flags.FLAGS

# --- Task, data, model -------------------------------------------------------
flags.DEFINE_string(
    "task_name",
    "imagenet",
    "Task: sets classes, image size, etc. Built in: imagenet, svhn, mnist; any other name "
    "(e.g. custom) is read from the dataset_info.json of proc_folder.py in --label_data_dir.",
)
flags.DEFINE_string("label_data_dir", None, "Directory of labeled {subset}-%05d-of-%05d TFRecords.")
flags.DEFINE_string("model_dir", None, "Directory for checkpoints, summaries and run settings.")
flags.DEFINE_bool("init_model", False, "Accepted for compatibility; --init_model_path suffices.")
flags.DEFINE_string(
    "init_model_path", None, "Checkpoint (prefix or model_dir) whose EMA weights start the student."
)
flags.DEFINE_string("model_name", "efficientnet-b0", "efficientnet-b0 ... b7 or efficientnet-l2.")
flags.DEFINE_enum(
    "mode",
    "train_and_eval",
    ["train", "eval", "train_and_eval", "predict", "export"],
    "What to run.",
)
flags.DEFINE_integer("train_steps", 109474, "Training steps (multiplied by --train_ratio).")
flags.DEFINE_float(
    "train_epochs",
    None,
    "If set, the training length in epochs of the data the run learns from, replacing "
    "--train_steps: of the labeled images, or of the unlabeled images when --unlabel_ratio > 0 "
    "(a student). Multiplied by --train_ratio.",
)
flags.DEFINE_integer(
    "input_image_size", None, "Input resolution; default from the model table (32 for svhn/mnist)."
)
flags.DEFINE_float("train_ratio", 1.0, "Multiplies --train_steps and the decay epochs.")
flags.DEFINE_integer("train_batch_size", 4096, "Global labeled batch size.")
flags.DEFINE_integer("eval_batch_size", 8, "Global eval/predict batch size.")
flags.DEFINE_integer("num_train_images", None, "Labeled training images; default from the data.")
flags.DEFINE_integer(
    "num_eval_images", None, "Accepted for compatibility: eval counts every image."
)
flags.DEFINE_integer(
    "num_test_images", None, "Accepted for compatibility: eval counts every image."
)
flags.DEFINE_integer("steps_per_eval", 3000, "train_and_eval: training steps between evals.")
flags.DEFINE_integer(
    "iterations_per_loop", 1000, "Training steps inside one compiled loop call (between logs)."
)
flags.DEFINE_integer("num_label_classes", 1000, "Number of classes (set by --task_name).")
flags.DEFINE_float("base_learning_rate", 0.016, "Learning rate per 256 images.")
flags.DEFINE_float("final_base_lr", None, "If set, decay so the base LR ends at this value.")
flags.DEFINE_float("moving_average_decay", 0.9999, "Maximum EMA decay of the weights.")
flags.DEFINE_float("weight_decay", 1e-5, "L2 weight decay on non-batch-norm weights.")
flags.DEFINE_float("label_smoothing", 0.1, "Label smoothing of hard targets.")
flags.DEFINE_float("dropout_rate", None, "Dropout before the classifier; default per model.")
flags.DEFINE_float("stochastic_depth_rate", None, "Final stochastic depth rate; default 0.2.")
flags.DEFINE_float("depth_coefficient", None, "Override the model's depth coefficient.")
flags.DEFINE_float("width_coefficient", None, "Override the model's width coefficient.")
flags.DEFINE_bool("small_image_model", False, "32x32 network variant (set by svhn/mnist).")
flags.DEFINE_integer("num_train_shards", None, "Use only the first N labeled training files.")
flags.DEFINE_bool("use_cache", True, "Cache raw training records in memory.")
flags.DEFINE_integer("keep_checkpoint_max", 5, "Checkpoints kept in --model_dir.")
flags.DEFINE_integer(
    "fix_layer_num",
    -1,
    "Fine-tuning: -1 trains everything; N >= 0 freezes the stem and the first N blocks "
    "(not trained, batch norm in inference mode, no stochastic depth).",
)
flags.DEFINE_integer(
    "num_shards_per_group",
    -1,
    "Replicas whose batch norm statistics are averaged: -1 (published): none up to 8 "
    "replicas, beyond that groups of max(8, replicas // 8); -2: all; 1: none; k: groups of k.",
)
flags.DEFINE_integer("save_checkpoints_steps", 1000, "Steps between checkpoints.")
flags.DEFINE_integer("log_step_count_steps", 64, "Steps between progress lines (at loop ends).")
flags.DEFINE_integer("train_last_step_num", -1, "Fine-tuning: train only the last N steps.")
flags.DEFINE_float(
    "label_data_sample_prob", 1, "Keep each labeled image's loss with this probability."
)
flags.DEFINE_integer(
    "seed",
    None,
    "Seed of every random draw of the run (weights, dropout, stochastic depth, shuffles, "
    "crops, RandAugment). Default: a random seed, logged and recorded in FLAGS.json.",
)
flags.DEFINE_bool(
    "deterministic",
    False,
    "Also make TensorFlow's ops deterministic, so two runs with the same flags and --seed "
    'write identical checkpoints (slower; docs/reference.md, "Reproducible runs").',
)
flags.DEFINE_list(
    "eval_subsets",
    None,
    "Labeled subsets (file prefixes) to evaluate, e.g. train,dev,test to also report the "
    "training accuracy; default from the task (svhn, mnist: dev,test; imagenet: validation).",
)
flags.DEFINE_bool(
    "use_ema",
    True,
    "Read the moving-average weights of the checkpoints given by --init_model_path, "
    "--teacher_model_path, --predict_ckpt_path, and by --model_dir for eval/export (this "
    "project's ema_model; the /ExponentialMovingAverage shadows of TF1 checkpoints). "
    "False reads the raw trained weights.",
)

# --- Noisy student -----------------------------------------------------------
flags.DEFINE_string("unlabel_data_dir", "", "Unlabeled data dir(s), ';'-separated.")
flags.DEFINE_float("unlabel_ratio", 0, "Unlabeled images per labeled image in a batch.")
flags.DEFINE_float(
    "teacher_softmax_temp", -1, "-1: hard pseudo labels; T > 0: soft labels at temperature T."
)
flags.DEFINE_string("teacher_model_name", None, "Teacher architecture (on-the-fly teacher).")
flags.DEFINE_string("teacher_model_path", None, "Teacher checkpoint prefix or model_dir.")
flags.DEFINE_string("augment_name", None, "None: crop/flip only; v1: RandAugment.")
flags.DEFINE_bool("remove_aug", False, "Train on eval-preprocessed (un-augmented) images.")
flags.DEFINE_integer("randaug_mag", 27, "RandAugment magnitude (not clipped at 10).")
flags.DEFINE_integer("randaug_layer", 2, "RandAugment ops per image.")
flags.DEFINE_string(
    "unl_aug", "default", "Augmentation of unlabeled images; default = augment_name."
)
flags.DEFINE_bool("cutout_op", True, "Include Cutout among the RandAugment ops.")
flags.DEFINE_bool(
    "check_filter_stats",
    True,
    "Before training on the output of filter_unlabel_data.py, check that its "
    "stats/final_stats.json exists (every shard finished) and lists every data file.",
)

# --- Hardware ------------------------------------------------------------------
flags.DEFINE_bool("use_tpu", True, "Use a TPU (TPUStrategy). Pass False for GPUs or CPU.")
flags.DEFINE_string("tpu", None, "TPU name or address for the cluster resolver.")
flags.DEFINE_string("gcp_project", None, "GCP project of the TPU.")
flags.DEFINE_string("tpu_zone", None, "GCE zone of the TPU.")
flags.DEFINE_string("master", None, "Ignored (TF1 session master); use --tpu.")
flags.DEFINE_bool(
    "use_bfloat16",
    True,
    "Keras mixed_bfloat16 policy (published; False: float32). --mixed_precision replaces it.",
)
flags.DEFINE_enum(
    "mixed_precision",
    None,
    list(precision.PRECISIONS),
    "Training and inference precision: float32; bfloat16 (Keras mixed_bfloat16, for TPUs "
    "and CPUs/GPUs with bfloat16 units); float16 (mixed_float16 with dynamic loss scaling, "
    "for GPUs such as T4 and V100). Logits, losses, softmax and batch-norm statistics stay "
    "float32. Default: what --use_bfloat16 says (True: bfloat16, False: float32); "
    "contradicting an explicit --use_bfloat16 is an error.",
)
flags.DEFINE_bool(
    "use_xla",
    None,
    "Compile the training step and inference with XLA (jit_compile). Default: on for "
    "GPUs and TPUs, off on CPUs, where it is slower.",
)
flags.DEFINE_bool("transpose_input", True, "Ignored: a TPUEstimator input-layout trick.")
flags.DEFINE_string("data_format", "channels_last", "Only channels_last is supported.")
flags.DEFINE_integer("num_tpu_cores", None, "Ignored: the strategy counts replicas.")
flags.DEFINE_bool("skip_host_call", False, "Ignored: summaries are written from the host loop.")

# --- Prediction (--mode=predict) -----------------------------------------------
flags.DEFINE_string("predict_ckpt_path", None, "Checkpoint prefix or model_dir to predict with.")
flags.DEFINE_string("output_dir", None, "Where train-info-* prediction files go.")
flags.DEFINE_string("info_dir", None, "Where info-*.txt image counts go.")
flags.DEFINE_integer("num_shards", 128, "Number of input shards.")
flags.DEFINE_string("shard_id", "0", "Shard(s) to predict: an id or a comma-separated list.")
flags.DEFINE_integer("total_replicas", 1, "Workers that split one shard.")
flags.DEFINE_integer("worker_id", 0, "This worker's index in [0, total_replicas).")
flags.DEFINE_bool("reassign_label", False, "Relabel filtered records, keeping their images.")
flags.DEFINE_string("data_type", "tfrecord", "Input format (tfrecord only).")
flags.DEFINE_string("file_prefix", "train", "Input files are {file_prefix}-%05d-of-%05d.")
flags.DEFINE_bool(
    "overwrite",
    False,
    "Predict again shards whose outputs were made by another checkpoint or from another "
    "input (without it, that is an error; outputs of this checkpoint are skipped).",
)

# --- Export (--mode=export) ------------------------------------------------------
flags.DEFINE_string("export_dir", None, "Where --mode=export writes the SavedModel.")

# Counts that must be positive: zero or less would train nothing, divide by
# zero or fail later with a less clear message.
_POSITIVE_FLAGS = (
    "train_steps",
    "train_batch_size",
    "eval_batch_size",
    "iterations_per_loop",
    "save_checkpoints_steps",
    "steps_per_eval",
    "log_step_count_steps",
    "keep_checkpoint_max",
    "num_shards",
    "total_replicas",
)
for _name in _POSITIVE_FLAGS:
    flags.register_validator(
        _name, lambda value: value > 0, message=f"--{_name} must be a positive integer."
    )

_IGNORED_FLAGS = {
    "master": None,
    "transpose_input": True,
    "num_tpu_cores": None,
    "skip_host_call": False,
    "init_model": False,
    "num_eval_images": None,
    "num_test_images": None,
}


def override_params_from_flags():
    """Model overrides set on the command line."""
    overrides = {}
    for name in ("dropout_rate", "stochastic_depth_rate", "depth_coefficient", "width_coefficient"):
        if FLAGS[name].value is not None:
            overrides[name] = FLAGS[name].value
    return overrides


def resolve_config():
    """Applies task defaults to the flags and returns a train_lib.TrainConfig."""
    import data_input
    import efficientnet_builder
    import task_info
    import train_lib

    try:
        info = task_info.get_task_info(FLAGS.task_name, FLAGS.label_data_dir)
    except (ValueError, OSError) as e:
        raise app.UsageError(f"--task_name: {e}") from e
    if FLAGS.task_name != "imagenet":
        # As published for svhn: the task fixes image size, model variant and classes.
        FLAGS.input_image_size = info.image_size
        FLAGS.small_image_model = info.small_image_model
        FLAGS.num_label_classes = info.num_classes
    if FLAGS.data_format != "channels_last":
        raise app.UsageError("--data_format: only channels_last is supported.")
    if FLAGS.data_type != "tfrecord":
        raise app.UsageError("--data_type: only tfrecord is supported.")
    try:
        data_input.augment_names(FLAGS.augment_name, FLAGS.unl_aug)
    except ValueError as e:
        raise app.UsageError(str(e)) from e
    for name, default in _IGNORED_FLAGS.items():
        if FLAGS[name].present and FLAGS[name].value != default:
            logging.warning("--%s is accepted for compatibility and ignored.", name)
    image_size = (
        FLAGS.input_image_size or efficientnet_builder.efficientnet_params(FLAGS.model_name)[2]
    )
    num_train_images = FLAGS.num_train_images
    if num_train_images is None:
        num_train_images = task_info.num_images(
            FLAGS.task_name, info.train_subset, FLAGS.label_data_dir
        )
    train_steps = FLAGS.train_steps
    if FLAGS.train_epochs is not None and FLAGS.mode in ("train", "train_and_eval"):
        if not FLAGS.train_epochs > 0:
            raise app.UsageError(f"--train_epochs={FLAGS.train_epochs}: expected > 0.")
        import training_length

        try:
            train_steps, what = training_length.train_steps_for_epochs(
                FLAGS.train_epochs,
                num_train_images=num_train_images,
                train_batch_size=FLAGS.train_batch_size,
                unlabel_ratio=FLAGS.unlabel_ratio,
                unlabel_data_dir=FLAGS.unlabel_data_dir,
                label_data_sample_prob=FLAGS.label_data_sample_prob,
            )
        except (ValueError, FileNotFoundError) as e:
            raise app.UsageError(f"--train_epochs: {e}") from e
        logging.info("--train_epochs: %d steps (%s).", train_steps, what)
        if FLAGS["train_steps"].present:
            # The scripts' recipes give one of the two and users the other: say
            # which one counts rather than drop one unseen.
            logging.warning(
                "--train_steps=%d is ignored: --train_epochs=%g sets the length.",
                FLAGS.train_steps,
                FLAGS.train_epochs,
            )
    train_steps = int(train_steps * FLAGS.train_ratio)
    train_last_step_num = FLAGS.train_last_step_num
    if train_last_step_num != -1:
        train_last_step_num = int(train_last_step_num * FLAGS.train_ratio)
    names = {f.name for f in dataclasses.fields(train_lib.TrainConfig)}
    values = {name: FLAGS[name].value for name in names if name in FLAGS}
    values.update(
        input_image_size=image_size,
        num_train_images=num_train_images,
        train_steps=train_steps,
        train_last_step_num=train_last_step_num,
        override_params=override_params_from_flags(),
        random_flip=info.random_flip,
        eval_subsets=tuple(FLAGS.eval_subsets or info.eval_subsets),
    )
    return train_lib.TrainConfig(**values)


def check_training_data(config):
    """Before training: warns about, or stops on, labeled data that does not fit the task.

    A batch larger than the labeled set is a warning (every batch repeats
    images). For a task read from a dataset_info.json, the training labels
    are counted: a label beyond its num_classes, or images of a single class
    only, stop the run naming the file; classes without a single training
    image are a warning naming them (the model can still learn the others).

    Raises:
      data_input.DataError: naming the dataset_info.json and what disagrees.
    """
    import atomic_files
    import data_input
    import task_info

    if config.train_batch_size > config.num_train_images:
        logging.warning(
            "--train_batch_size=%d is larger than the labeled training set (%d images): "
            "every batch repeats images. A batch of at most %d is usual.",
            config.train_batch_size,
            config.num_train_images,
            config.num_train_images,
        )
    if config.task_name in task_info.TASKS:
        return
    path = task_info.find_dataset_info(config.label_data_dir)
    if path is None:
        return
    described = atomic_files.read_json(path)
    info = task_info.task_from_dataset_info(config.task_name, described, path)
    try:
        files = data_input.labeled_files(config.label_data_dir, "train", config.num_train_shards)
    except FileNotFoundError:
        return  # Training itself reports the missing files.
    counts = data_input.count_labels(files, info.num_classes, path)
    names = described.get("class_names") or [str(c) for c in range(info.num_classes)]
    seen = [c for c, count in enumerate(counts) if count]
    if len(seen) == 1:
        raise data_input.DataError(
            f"{path}: every training image is of class {names[seen[0]]!r}: a classifier "
            "needs images of at least 2 classes."
        )
    empty = [c for c, count in enumerate(counts) if not count]
    if empty:
        logging.warning(
            "%s: %d of its %d classes have no training image: %s. The model will never "
            "learn them; add images, or rewrite the data with proc_folder.py if the file "
            "was edited.",
            path,
            len(empty),
            info.num_classes,
            ", ".join(f"{c} ({names[c]})" for c in empty),
        )


def kept_after_full_disk():
    """What a run stopped by a full disk kept, for its message."""
    import tensorflow as tf

    import file_names

    if FLAGS.mode == "predict":
        done = []
        if FLAGS.output_dir:
            pattern = file_names.shard_glob(FLAGS.output_dir, file_names.PREDICTION_PREFIX)
            done = tf.io.gfile.glob(pattern)
        return (
            f"the {len(done)} finished prediction files in --output_dir={FLAGS.output_dir}; "
            "a re-run skips their shards"
        )
    if FLAGS.mode in ("train", "train_and_eval"):
        latest = tf.train.latest_checkpoint(FLAGS.model_dir)
        if latest is None:
            return f"no checkpoint in --model_dir={FLAGS.model_dir}; a re-run starts at step 0"
        step = latest.rsplit("-", 1)[-1]
        return f"{latest} and the checkpoints before it; a re-run resumes from step {step}"
    return "every file written before (none is half-written)"


def main(argv):
    del argv
    if not FLAGS.model_dir and FLAGS.mode != "predict":
        raise app.UsageError("--model_dir is required.")
    # Checked before TensorFlow is imported: a contradiction fails at once.
    try:
        FLAGS.mixed_precision = precision.resolve_precision(
            FLAGS.mixed_precision, FLAGS.use_bfloat16, FLAGS["use_bfloat16"].present
        )
    except ValueError as e:
        raise app.UsageError(str(e)) from e
    import disk_full

    where = FLAGS.output_dir if FLAGS.mode == "predict" else FLAGS.model_dir
    if FLAGS.mode == "export":
        where = FLAGS.export_dir
    with disk_full.exit_on_full_disk("main.py", where, kept_after_full_disk):
        run(FLAGS.mode)


def run(mode):
    """Runs --mode=`mode` with the flags."""
    import train_lib

    config = resolve_config()
    if mode in ("train", "train_and_eval"):
        check_training_data(config)
    if FLAGS.seed is None:
        config.seed = train_lib.draw_seed()
        logging.info("No --seed given: using --seed=%d.", config.seed)
    train_lib.set_seed(config.seed, FLAGS.deterministic)
    if mode == "export":
        # Export needs no devices or strategy; the exported network is float32.
        import export_lib

        export_lib.export(config, FLAGS.export_dir)
        return
    train_lib.set_precision(config.precision)
    strategy = train_lib.create_strategy(
        FLAGS.use_tpu, FLAGS.tpu, FLAGS.tpu_zone, FLAGS.gcp_project
    )
    logging.info(
        "Strategy %s with %d replicas.", type(strategy).__name__, strategy.num_replicas_in_sync
    )

    if mode in ("train", "train_and_eval"):
        import preemption

        with train_lib.model_dir_lock(config.model_dir, strategy):
            if mode == "train_and_eval":
                train_lib.check_eval_results_file(config)
            state = train_lib.TrainState(config, strategy)
            # Restore (or fail) before writing anything: a run that cannot
            # resume must leave the model_dir's files as they were.
            state.restore_or_initialize()
            flags_dict = {
                k: v for k, v in FLAGS.flag_values_dict().items() if not k.startswith("?")
            }
            flags_dict.update(dataclasses.asdict(config))
            train_lib.write_run_files(config, state, flags_dict)
            try:
                with preemption.StopOnSignals(state.stop_requested):
                    if mode == "train":
                        train_lib.train(config, strategy, state=state)
                    else:
                        train_lib.train_and_evaluate(config, strategy, state=state)
            except preemption.Preempted:
                preempted = True
            else:
                preempted = False
        if preempted:
            # After the lock is released: the re-run resumes from this step.
            sys.exit(preemption.PREEMPTED_EXIT_CODE)
    elif mode == "eval":
        train_lib.evaluate(config, strategy)
    elif mode == "predict":
        import predict_label

        predict_label.run_prediction(
            config,
            strategy,
            predict_ckpt_path=FLAGS.predict_ckpt_path,
            output_dir=FLAGS.output_dir,
            info_dir=FLAGS.info_dir,
            num_shards=FLAGS.num_shards,
            shard_id=FLAGS.shard_id,
            num_prediction_workers=FLAGS.total_replicas,
            prediction_worker=FLAGS.worker_id,
            reassign_label=FLAGS.reassign_label,
            file_prefix=FLAGS.file_prefix,
            overwrite=FLAGS.overwrite,
        )


def main_naming_bad_input(argv):
    """`main`, ending on a bad input with its message instead of a traceback.

    The message of a `data_input.DataError` (file, record, key) or of a
    `checkpoints.CheckpointMismatchError` (which checkpoint, what it holds)
    already says where and what; a traceback and TensorFlow's op text before
    it would only bury it.
    """
    try:
        main(argv)
    except ValueError as e:
        # Imported here: they import TensorFlow, which a usage error must not wait for.
        import checkpoints
        import data_input

        if isinstance(e, data_input.DataError | checkpoints.CheckpointMismatchError):
            sys.exit(f"main.py: error: {e}")
        raise


if __name__ == "__main__":
    app.run(main_naming_bad_input)
