"""Training and evaluation of teachers and noisy students (docs/method.md, "Training").

Everything here takes plain arguments or a `TrainConfig`; only `main.py`
reads flags. The pieces, in the order a run uses them:
`create_strategy` -> `create_model` -> `create_learning_rate_fn` ->
`TrainState` (model, EMA model, optimizer, checkpoints) -> `train_step`
inside `make_train_loop` -> `evaluate`.
"""

import contextlib
import dataclasses
import functools
import json
import math
import os
import time

import keras
import numpy as np
import tensorflow as tf
from absl import logging

import atomic_files
import bn_folding
import checkpoints
import data_input
import efficientnet_builder
import efficientnet_model
import file_names
import preemption
import preprocessing
import progress_log
import run_lock
import task_info

MODEL_PARAMS_FILE = checkpoints.MODEL_PARAMS_FILE
FLAGS_FILE = checkpoints.FLAGS_FILE
EVAL_RESULTS_FILE = file_names.EVAL_RESULTS_FILE
WARMUP_EPOCHS = 5
LR_DECAY_FACTOR = 0.97


@dataclasses.dataclass
class TrainConfig:
    """Resolved settings of a training or evaluation run (named as the published flags).

    `main.py` fills it from flags after resolving task defaults; tests build
    it directly.
    """

    model_dir: str
    label_data_dir: str
    task_name: str = "imagenet"
    model_name: str = "efficientnet-b0"
    num_label_classes: int = 1000
    input_image_size: int = 224
    small_image_model: bool = False
    override_params: dict = dataclasses.field(default_factory=dict)
    train_steps: int = 109474
    train_last_step_num: int = -1
    train_batch_size: int = 4096
    eval_batch_size: int = 8
    num_train_images: int = 1281167
    train_ratio: float = 1.0
    base_learning_rate: float = 0.016
    final_base_lr: float | None = None
    moving_average_decay: float = 0.9999
    weight_decay: float = 1e-5
    label_smoothing: float = 0.1
    label_data_sample_prob: float = 1.0
    unlabel_data_dir: str = ""
    unlabel_ratio: float = 0
    teacher_softmax_temp: float = -1
    teacher_model_name: str | None = None
    teacher_model_path: str | None = None
    init_model_path: str | None = None
    augment_name: str | None = None
    unl_aug: str = "default"
    randaug_mag: int = 27
    randaug_layer: int = 2
    cutout_op: bool = True
    remove_aug: bool = False
    random_flip: bool = True
    use_cache: bool = True
    num_train_shards: int | None = None
    iterations_per_loop: int = 1000
    save_checkpoints_steps: int = 1000
    keep_checkpoint_max: int = 5
    log_step_count_steps: int = 64
    steps_per_eval: int = 3000
    eval_subsets: tuple = ("validation",)
    use_ema: bool = True
    use_bfloat16: bool = True
    # "float32", "bfloat16" or "float16"; None: as use_bfloat16 says (`precision`).
    mixed_precision: str | None = None
    # None: XLA on GPUs and TPUs, off on CPUs (use_xla_for).
    use_xla: bool | None = None
    seed: int = 0
    check_filter_stats: bool = True
    fix_layer_num: int = -1
    num_shards_per_group: int = -1

    @property
    def max_steps(self):
        """Steps this run trains to (global step at the end)."""
        return self.train_steps if self.train_last_step_num < 0 else self.train_last_step_num

    @property
    def precision(self):
        """The run's precision: `mixed_precision`, else what `use_bfloat16` means."""
        return self.mixed_precision or ("bfloat16" if self.use_bfloat16 else "float32")

    @property
    def steps_per_epoch(self):
        return self.num_train_images / (self.train_batch_size * self.label_data_sample_prob)


# ---------------------------------------------------------------------------
# Strategy and model.


def create_strategy(use_tpu=False, tpu=None, tpu_zone=None, gcp_project=None):
    """Picks the distribution strategy.

    TPUStrategy with `use_tpu`; MultiWorkerMirroredStrategy when TF_CONFIG
    names several workers; MirroredStrategy for several local GPUs; the
    default strategy otherwise.
    """
    if use_tpu:
        try:
            resolver = tf.distribute.cluster_resolver.TPUClusterResolver(
                tpu=tpu, zone=tpu_zone, project=gcp_project
            )
            tf.config.experimental_connect_to_cluster(resolver)
            tf.tpu.experimental.initialize_tpu_system(resolver)
        except (ValueError, tf.errors.OpError) as e:
            raise RuntimeError(
                f"--use_tpu is set (the published default) but no TPU could be reached ({e}). "
                "Pass --use_tpu=False to train on GPUs or the CPU."
            ) from e
        return tf.distribute.TPUStrategy(resolver)
    cluster = json.loads(os.environ.get("TF_CONFIG", "{}")).get("cluster", {})
    if sum(len(cluster.get(k, [])) for k in ("chief", "worker")) > 1:
        return tf.distribute.MultiWorkerMirroredStrategy()
    if len(tf.config.list_logical_devices("GPU")) > 1:
        return tf.distribute.MirroredStrategy()
    return tf.distribute.get_strategy()


def is_chief(strategy):
    """Whether this process writes the run's outputs (always, except non-chief multi-workers)."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not resolver.task_type:
        return True
    has_chief = "chief" in resolver.cluster_spec().as_dict()
    if has_chief:
        return resolver.task_type == "chief"
    return resolver.task_type == "worker" and resolver.task_id == 0


def worker_scratch_dir(model_dir, strategy):
    """Where a non-chief worker saves: every worker must save (collectives), only one keeps."""
    resolver = strategy.cluster_resolver
    return os.path.join(model_dir, "workers", f"{resolver.task_type}_{resolver.task_id}")


LOCK_FILE = "train.lock"


def model_dir_lock(model_dir, strategy):
    """The lock that keeps a second training out of `model_dir` (taken by the chief only)."""
    if not is_chief(strategy):
        return contextlib.nullcontext()
    return run_lock.RunLock(os.path.join(model_dir, LOCK_FILE), f"--model_dir={model_dir}")


def set_seed(seed, deterministic=False):
    """Seeds Python, NumPy and TensorFlow; optionally makes TF's ops deterministic.

    Every random draw of a run comes from this seed: weight initialization,
    dropout and stochastic depth (Keras seed generators are seeded from
    Python's generator), the input pipeline's shuffles and per-image draws
    (crops, flips, RandAugment; see `data_input.element_seeds`) and
    in-graph draws such as `--label_data_sample_prob`'s mask.

    Args:
      seed: int seed.
      deterministic: also turn on `tf.config.experimental.enable_op_determinism`,
        so that two runs give bit-identical checkpoints (some kernels then run
        slower; docs/reference.md, "Reproducible runs").
    """
    keras.utils.set_random_seed(int(seed))
    if deterministic:
        tf.config.experimental.enable_op_determinism()


def draw_seed():
    """A fresh random seed, for runs given none (logged and recorded, so they can be repeated)."""
    return int.from_bytes(os.urandom(4), "little") & 0x7FFFFFFF


def input_seed(seed, start_step):
    """The input pipeline's seed: the run's seed, moved on when training resumes.

    A resumed run restarts its input pipeline; without this it would replay
    the shuffles and augmentations of the run's first steps.
    """
    if start_step == 0:
        return int(seed)
    return int(np.random.SeedSequence([int(seed), int(start_step)]).generate_state(1)[0])


def use_xla_for(use_xla, strategy):
    """Whether the training step and inference are compiled with XLA (`jit_compile`).

    Args:
      use_xla: `--use_xla`; None chooses by device.
      strategy: the tf.distribute strategy the step runs under.

    Returns:
      `use_xla` when given; otherwise True under a TPUStrategy or when a GPU
      is visible, False on CPUs, where XLA compiles this network's small
      kernels into slower code (docs/method.md, "XLA").
    """
    if use_xla is not None:
        return bool(use_xla)
    if isinstance(strategy, tf.distribute.TPUStrategy):
        return True
    return bool(tf.config.list_logical_devices("GPU"))


_POLICIES = {"float32": "float32", "bfloat16": "mixed_bfloat16", "float16": "mixed_float16"}


def set_precision(precision):
    """Sets Keras' global dtype policy for `precision`.

    Args:
      precision: one of `precision.PRECISIONS`: "float32" (policy float32),
        "bfloat16" (mixed_bfloat16) or "float16" (mixed_float16).
    """
    keras.mixed_precision.set_global_policy(_POLICIES[precision])


# ---------------------------------------------------------------------------
# Learning rate, losses, regularization, EMA.


class NoisyStudentLearningRate(keras.optimizers.schedules.LearningRateSchedule):
    """Linear warmup, then staircase exponential decay."""

    def __init__(self, scaled_lr, steps_per_epoch, decay_epochs, start_from_step=0):
        self.scaled_lr = float(scaled_lr)
        self.steps_per_epoch = float(steps_per_epoch)
        self.decay_epochs = float(decay_epochs)
        self.start_from_step = int(start_from_step)
        self.warmup_steps = int(WARMUP_EPOCHS * steps_per_epoch)

    def __call__(self, step):
        lr_step = tf.cast(step, tf.float32) + self.start_from_step
        decay_steps = self.steps_per_epoch * self.decay_epochs
        decayed = self.scaled_lr * tf.pow(LR_DECAY_FACTOR, tf.floor(lr_step / decay_steps))
        if self.warmup_steps <= 0:
            return decayed
        warmup = self.scaled_lr * lr_step / self.warmup_steps
        return tf.where(lr_step < self.warmup_steps, warmup, decayed)

    def get_config(self):
        return {
            "scaled_lr": self.scaled_lr,
            "steps_per_epoch": self.steps_per_epoch,
            "decay_epochs": self.decay_epochs,
            "start_from_step": self.start_from_step,
        }


def create_learning_rate_fn(config):
    """The learning-rate schedule of `config` (docs/method.md, "Training")."""
    real_batch = config.train_batch_size * config.label_data_sample_prob
    scaled_lr = config.base_learning_rate * real_batch / 256.0
    if config.final_base_lr:
        total_epochs = (
            config.train_steps * config.train_batch_size / config.num_train_images - WARMUP_EPOCHS
        )
        decay_times = math.log(config.final_base_lr / config.base_learning_rate) / math.log(
            LR_DECAY_FACTOR
        )
        decay_epochs = total_epochs / decay_times
    else:
        decay_epochs = 2.4 * config.train_ratio
    start_from_step = config.train_steps - config.max_steps
    return NoisyStudentLearningRate(
        scaled_lr, config.steps_per_epoch, decay_epochs, start_from_step
    )


def smoothed_one_hot(labels, num_classes, label_smoothing):
    """One-hot targets smoothed as tf.losses.softmax_cross_entropy did."""
    one_hot = tf.one_hot(labels, num_classes, dtype=tf.float32)
    return one_hot * (1.0 - label_smoothing) + label_smoothing / num_classes


def cross_entropy(targets, logits):
    """Per-example cross-entropy of a target distribution and logits."""
    return -tf.reduce_sum(targets * tf.nn.log_softmax(tf.cast(logits, tf.float32)), axis=-1)


def unlabeled_targets(
    num_classes,
    label_smoothing,
    teacher_softmax_temp,
    teacher_logits=None,
    stored_probs=None,
    stored_labels=None,
):
    """Targets for the unlabeled images (docs/method.md, "Training").

    Hard (temp == -1): the teacher's argmax (or the stored label) one-hot,
    label-smoothed. Soft: softmax(teacher_logits / T), or, from stored
    probabilities, p^(1/T) renormalized.
    """
    if teacher_softmax_temp == -1:
        if teacher_logits is not None:
            labels = tf.argmax(teacher_logits, axis=-1, output_type=tf.int32)
        else:
            labels = stored_labels
        return smoothed_one_hot(labels, num_classes, label_smoothing)
    if teacher_logits is not None:
        return tf.nn.softmax(tf.cast(teacher_logits, tf.float32) / teacher_softmax_temp, axis=-1)
    scaled = tf.pow(stored_probs, 1.0 / teacher_softmax_temp)
    return scaled / tf.reduce_sum(scaled, axis=-1, keepdims=True)


def _all_layers(model):
    return model._flatten_layers(include_self=False, recursive=True)  # noqa: SLF001


def weight_decay_variables(model):
    """Trainable variables that weight decay applies to: all but batch norm's."""
    bn_ids = {
        id(v)
        for layer in _all_layers(model)
        if isinstance(layer, keras.layers.BatchNormalization)
        for v in layer.weights
    }
    return [v for v in model.trainable_variables if id(v) not in bn_ids]


def l2_regularization(variables):
    """sum(sum(v^2) / 2) over `variables` (tf.nn.l2_loss)."""
    return tf.add_n([tf.nn.l2_loss(tf.cast(v, tf.float32)) for v in variables])


def ema_decay(step, moving_average_decay):
    """min(decay, (1 + step) / (10 + step)), as TF1's ExponentialMovingAverage(num_updates)."""
    step = tf.cast(step, tf.float32)
    return tf.minimum(moving_average_decay, (1.0 + step) / (10.0 + step))


def update_ema(ema_model, model, decay):
    """ema <- decay * ema + (1 - decay) * value, for weights and batch-norm statistics."""
    # As e - (1 - d)(e - w): two ops per weight instead of four (the same
    # value up to float rounding), which small networks notice per step.
    for ema_var, var in zip(ema_model.weights, model.weights, strict=True):
        ema_var.assign_sub((1.0 - decay) * (ema_var - var))


class RMSpropTF1(keras.optimizers.RMSprop):
    """Keras' RMSprop with TF1's initial mean square of 1.0.

    TF1's `RMSPropOptimizer`, which the published models were trained with,
    starts its mean-square accumulator at 1.0; Keras starts it at 0, which
    makes the first updates up to 1/sqrt(epsilon) times larger. The update
    rule is otherwise the same (epsilon inside the square root).
    """

    def build(self, var_list):
        if self.built:
            return
        super().build(var_list)
        for velocity in self._velocities:
            velocity.assign(tf.ones(velocity.shape, velocity.dtype))

    def update_step(self, gradient, variable, learning_rate):
        """TF1's fused `ApplyRMSProp` kernel: Keras' rule in one op per variable.

        Keras computes the same update with eight element-wise ops per
        variable; small networks on CPUs pay for each op (the MNIST demo's
        teacher step: 5-20% more images/s, docs/method.md).
        """
        if isinstance(gradient, tf.IndexedSlices) or not self.momentum:
            return super().update_step(gradient, variable, learning_rate)
        index = self._get_variable_index(variable)
        dtype = variable.dtype
        tf.raw_ops.ResourceApplyRMSProp(
            var=variable.handle,
            ms=self._velocities[index].handle,
            mom=self._momentums[index].handle,
            lr=tf.cast(learning_rate, dtype),
            rho=tf.constant(self.rho, dtype),
            momentum=tf.constant(self.momentum, dtype),
            epsilon=tf.constant(self.epsilon, dtype),
            grad=tf.cast(gradient, dtype),
        )


def create_optimizer(learning_rate):
    """RMSProp(decay 0.9, momentum 0.9, epsilon 1e-3) as published."""
    return RMSpropTF1(learning_rate=learning_rate, rho=0.9, momentum=0.9, epsilon=1e-3)


# Keras 3's LossScaleOptimizer defaults.
INITIAL_LOSS_SCALE = 2.0**15
LOSS_SCALE_GROWTH_STEPS = 2000


class DynamicLossScale(tf.Module):
    """Dynamic loss scaling for float16 training, with Keras' `LossScaleOptimizer` rules.

    The loss is multiplied by `scale` before the gradients are taken, so that
    small float16 gradients do not flush to zero, and the gradients are
    divided by it again before the optimizer sees them. A step whose
    gradients are not all finite (on any replica) is skipped: weights,
    optimizer slots and the step counter stay as they are, and the scale is
    halved. After `growth_steps` finite steps in a row the scale is doubled.
    Both variables are checkpointed (`TrainState` saves this module as
    `loss_scale`), so a resumed run continues with the scale it had.

    Args:
      initial_scale: the starting scale (Keras: 2**15).
      growth_steps: finite steps after which the scale doubles (Keras: 2000).
    """

    def __init__(self, initial_scale=INITIAL_LOSS_SCALE, growth_steps=LOSS_SCALE_GROWTH_STEPS):
        super().__init__(name="loss_scale")
        # Every replica computes the same values (the finiteness is all-reduced).
        aggregation = tf.VariableAggregation.ONLY_FIRST_REPLICA
        self.scale = tf.Variable(
            float(initial_scale), trainable=False, aggregation=aggregation, name="scale"
        )
        self.good_steps = tf.Variable(
            0, dtype=tf.int64, trainable=False, aggregation=aggregation, name="good_steps"
        )
        self.growth_steps = int(growth_steps)

    def scale_loss(self, loss):
        """`loss` times the current scale (float32)."""
        return tf.cast(loss, tf.float32) * self.scale

    def unscale(self, grads):
        """`grads` divided by the current scale (None stays None)."""
        inverse = 1.0 / self.scale
        return [None if g is None else g * tf.cast(inverse, g.dtype) for g in grads]

    def update(self, finite):
        """Halves the scale after a non-finite step; doubles it after `growth_steps` finite ones."""
        good = tf.where(finite, self.good_steps + 1, tf.zeros_like(self.good_steps))
        grow = good >= self.growth_steps
        scale = tf.where(finite, tf.where(grow, self.scale * 2.0, self.scale), self.scale * 0.5)
        self.good_steps.assign(tf.where(grow, tf.zeros_like(good), good))
        self.scale.assign(scale)


def all_finite(grads):
    """Whether every gradient on every replica is finite (a scalar bool, the same everywhere)."""
    bad = tf.add_n(
        [
            tf.reduce_sum(tf.cast(tf.logical_not(tf.math.is_finite(g)), tf.float32))
            for g in grads
            if g is not None
        ]
    )
    ctx = tf.distribute.get_replica_context()
    if ctx is not None and ctx.num_replicas_in_sync > 1:
        bad = ctx.all_reduce(tf.distribute.ReduceOp.SUM, bad)
    return tf.equal(bad, 0.0)


def apply_gradients_if(optimizer, grads_and_vars, finite):
    """`optimizer.apply_gradients(grads_and_vars)` when `finite`, else nothing (a skipped step).

    Called in a replica context. Strategies whose optimizer update needs a
    `merge_call` (MirroredStrategy) cannot take that branch inside a replica
    `tf.cond`, so there the condition is evaluated in the cross-replica
    context, as Keras' LossScaleOptimizer does.
    """
    grads_and_vars = list(grads_and_vars)

    def apply():
        optimizer.apply_gradients(grads_and_vars)

    if tf.__internal__.distribute.strategy_supports_no_merge_call():
        tf.cond(finite, apply, lambda: None)
        return

    def cross_replica(distribution, grads_and_vars, finite):
        finite = distribution.experimental_local_results(finite)[0]

        def apply_everywhere():
            distribution.extended.call_for_each_replica(
                optimizer.apply_gradients, args=(grads_and_vars,)
            )

        tf.cond(finite, apply_everywhere, lambda: None)

    tf.distribute.get_replica_context().merge_call(cross_replica, args=(grads_and_vars, finite))


# ---------------------------------------------------------------------------
# State and checkpoints.


class TrainState:
    """The student, its EMA copy, the optimizer, an optional frozen teacher, checkpoints.

    Checkpoints (`tf.train.Checkpoint(model, ema_model, optimizer)`, plus
    `loss_scale` in float16 runs) are named `ckpt-<global step>` in the
    model_dir. Evaluation, prediction and teachers read `ema_model`. Creating
    a TrainState writes nothing; the teacher, if any, is loaded here.
    """

    def __init__(self, config, strategy):
        self.config = config
        self.strategy = strategy
        # As published: batch norm synchronizes only beyond 8 replicas, in groups.
        bn_group = efficientnet_model.batch_norm_group_size(
            strategy.num_replicas_in_sync, config.num_shards_per_group
        )
        self.description = student_description(config)
        with strategy.scope():
            self.model = checkpoints.create_model(self.description, sync_batch_norm=bn_group)
            self.ema_model = checkpoints.create_model(self.description, sync_batch_norm=bn_group)
            for network in (self.model, self.ema_model):
                efficientnet_model.freeze_first_blocks(network, config.fix_layer_num)
            self.optimizer = create_optimizer(create_learning_rate_fn(config))
            # Frozen layers (--fix_layer_num) are neither updated nor decayed.
            self.optimizer.build(self.model.trainable_variables)
            # float16 gradients underflow without it; bfloat16 has float32's range.
            self.loss_scale = DynamicLossScale() if config.precision == "float16" else None
        self.teacher = None
        if config.teacher_model_name or config.teacher_model_path:
            self.teacher = load_teacher(config, strategy)
        self.checkpoint = tf.train.Checkpoint(**self._checkpointed())
        self.is_chief = is_chief(strategy)
        self.manager = tf.train.CheckpointManager(
            self.checkpoint,
            config.model_dir if self.is_chief else worker_scratch_dir(config.model_dir, strategy),
            max_to_keep=config.keep_checkpoint_max,
            checkpoint_name="ckpt",
        )
        self.decay_vars = weight_decay_variables(self.model)
        # (global step, metrics averaged over the loop call) of each loop call.
        self.history = []
        self.train_files = None
        self.train_iterator = None
        self.train_loop = None
        # Set by a signal (preemption.StopOnSignals); read before every step.
        self.stop_requested = preemption.stop_variable()

    def _checkpointed(self, with_loss_scale=True):
        objects = {"model": self.model, "ema_model": self.ema_model, "optimizer": self.optimizer}
        if self.loss_scale is not None and with_loss_scale:
            objects["loss_scale"] = self.loss_scale
        return objects

    def _checkpoint_for(self, prefix):
        """The checkpoint object that reads `prefix`.

        A float16 run resuming a float32 or bfloat16 checkpoint (which has no
        loss scale) starts its scale afresh instead of failing.
        """
        if self.loss_scale is None:
            return self.checkpoint
        names = {name.split("/")[0] for name, _ in tf.train.list_variables(prefix)}
        if "loss_scale" in names:
            return self.checkpoint
        logging.info(
            "%s has no loss scale (not trained in float16): starting it at %g.",
            prefix,
            self.loss_scale.scale.numpy(),
        )
        return tf.train.Checkpoint(**self._checkpointed(with_loss_scale=False))

    @property
    def step(self):
        return int(self.optimizer.iterations.numpy())

    @property
    def teacher_description(self):
        return self.teacher.description if self.teacher is not None else None

    def restore_or_initialize(self):
        """Resumes from the latest readable checkpoint, or initializes a fresh run.

        A fresh run copies `init_model_path` (EMA weights) into the student
        if given. Nothing is written: a run whose settings do not fit the
        model_dir's checkpoints fails here, before FLAGS.json or
        model_params.txt are touched.

        Raises:
          ValueError: the model_dir holds checkpoints of another network
            (naming the settings that differ), or none of them can be read.
        """
        if self.manager.latest_checkpoint:
            check_resume_compatible(self.config.model_dir, self.description)
            self._restore_latest_readable()
            return
        if self.config.init_model_path:
            prefix = checkpoints.load_ema_weights(
                self.model,
                self.config.init_model_path,
                "--init_model_path",
                use_ema=self.config.use_ema,
                skip_mismatched_head=True,
            )
            logging.info("Initialized the student from %s.", prefix)
        for ema_var, var in zip(self.ema_model.weights, self.model.weights, strict=True):
            ema_var.assign(var)

    def _restore_latest_readable(self):
        """Restores the newest checkpoint that reads; warns about each newer one that does not."""
        failures, unreadable = [], []
        for prefix in reversed(self.manager.checkpoints):
            try:
                self._checkpoint_for(prefix).restore(prefix).assert_existing_objects_matched()
            except (tf.errors.OpError, ValueError, AssertionError, IndexError) as e:
                reason = getattr(e, "message", str(e)).splitlines()[0][:300]
                logging.warning(
                    "Checkpoint %s cannot be read (%s); trying the previous one.", prefix, reason
                )
                failures.append(f"{prefix}: {reason}")
                unreadable.append(prefix)
                continue
            if failures:
                logging.warning(
                    "Resuming from %s instead of the unreadable %s.",
                    prefix,
                    ", ".join(unreadable),
                )
            logging.info("Resuming from step %d (%s).", self.step, prefix)
            return
        raise ValueError(
            f"--model_dir={self.config.model_dir}: no checkpoint can be read: "
            + "; ".join(failures)
        )

    def save(self):
        """Saves a checkpoint of the current step; a failed save leaves none of its files.

        Raises:
          tf.errors.OpError, OSError: the save failed (say, the disk is full);
            the previous checkpoints are kept.
        """
        step = self.step
        try:
            path = self.manager.save(checkpoint_number=step)
        except (tf.errors.OpError, OSError):
            # The `checkpoint` state file still names the previous checkpoint;
            # remove the parts of this one (its <prefix>_temp/ and any merged
            # file) so that they neither fill the disk nor pass for a checkpoint.
            prefix = os.path.join(self.manager.directory, f"ckpt-{step}")
            if tf.io.gfile.exists(prefix + "_temp"):
                tf.io.gfile.rmtree(prefix + "_temp")
            for part in tf.io.gfile.glob(file_names.glob_escape(prefix) + ".*"):
                tf.io.gfile.remove(part)
            raise
        logging.info("Saved checkpoint %s.", path)
        return path


def student_description(config):
    """The description of the network `config` trains (see `checkpoints.model_description`)."""
    return checkpoints.model_description(
        config.model_name,
        config.num_label_classes,
        config.small_image_model,
        config.override_params,
        config.input_image_size,
        task_name=config.task_name,
    )


# Description keys that may change when a run resumes: they change no variable.
_RESUMABLE_CHANGES = ("dropout_rate", "stochastic_depth_rate", "num_params")
# Derived from the others: named only when nothing they derive from differs.
_DERIVED_KEYS = ("stages", "stem_filters", "head_filters", "num_blocks", "resolution")


def check_resume_compatible(model_dir, description):
    """Fails when model_dir's model_params.txt describes another network than `description`.

    Raises:
      ValueError: naming every setting that differs, with both values.
    """
    saved = checkpoints.read_model_description(model_dir)
    if saved is None:
        return
    keys = sorted((set(saved) | set(description)) - set(_RESUMABLE_CHANGES))
    differ = [k for k in keys if saved.get(k) != description.get(k)]
    if not differ:
        return
    named = [k for k in differ if k not in _DERIVED_KEYS] or differ
    lines = [
        f"{k}: {saved.get(k)!r} in {MODEL_PARAMS_FILE}, {description.get(k)!r} now" for k in named
    ]
    raise ValueError(
        f"--model_dir={model_dir} holds checkpoints of another network than these flags "
        f"describe, so it cannot resume: " + "; ".join(lines) + ". Use the same settings "
        "(model_name, width/depth coefficients, num_label_classes, input_image_size, task) or "
        "another --model_dir. Nothing was changed."
    )


def teacher_fallback_description(config):
    """The teacher's description from the flags, for checkpoints without model_params.txt."""
    name = config.teacher_model_name or config.model_name
    size = config.input_image_size
    if not config.small_image_model:
        size = efficientnet_builder.efficientnet_params(name)[2]
    return checkpoints.model_description(
        name,
        config.num_label_classes,
        config.small_image_model,
        {k: v for k, v in config.override_params.items() if k != "num_classes"},
        size,
        task_name=config.task_name,
    )


def load_model_dir(config, strategy=None):
    """The network of `config.model_dir`, read as evaluation and export read it.

    The one wrapper of `checkpoints.load_model`: evaluation and export both
    read the run's own model_dir, and must agree on how (its task's
    normalization for old checkpoints, --use_ema, and the flags' student
    network when the model_dir has no model_params.txt, e.g. an unpacked
    published TF1 checkpoint).

    Args:
      config: the run's `TrainConfig`.
      strategy: build the variables in this strategy's scope (default: none).

    Returns:
      A `checkpoints.LoadedModel`.
    """
    return checkpoints.load_model(
        config.model_dir,
        what="--model_dir",
        default_task_name=config.task_name,
        fallback_description=student_description(config),
        use_ema=config.use_ema,
        strategy=strategy,
    )


def load_teacher(config, strategy):
    """The frozen on-the-fly teacher: its network, size and normalization from its checkpoint.

    Returns:
      A `checkpoints.LoadedModel` whose model is not trainable.

    Raises:
      FileNotFoundError: `--teacher_model_path` is missing or has no checkpoint.
      ValueError: the teacher does not fit `--teacher_model_name` or the classes.
    """
    if not config.teacher_model_path:
        raise FileNotFoundError("--teacher_model_name is set but --teacher_model_path is not.")
    teacher = checkpoints.load_model(
        config.teacher_model_path,
        what="--teacher_model_path",
        default_task_name=config.task_name,
        fallback_description=teacher_fallback_description(config),
        use_ema=config.use_ema,
        strategy=strategy,
    )
    name = teacher.description["model_name"]
    if config.teacher_model_name and name != config.teacher_model_name:
        raise ValueError(
            f"--teacher_model_name={config.teacher_model_name} but the checkpoint in "
            f"{config.teacher_model_path} is a {name}."
        )
    if teacher.description["num_classes"] != config.num_label_classes:
        raise ValueError(
            f"The teacher has {teacher.description['num_classes']} classes, the student "
            f"--num_label_classes={config.num_label_classes}."
        )
    teacher.model.trainable = False
    logging.info("Teacher %s (%d px) loaded from %s.", name, teacher.image_size, teacher.prefix)
    return teacher


# ---------------------------------------------------------------------------
# Training step and loop.


# The training metrics `compute_losses` returns: the labeled ones always, the
# unlabeled ones with --unlabel_ratio > 0. The train loop sums them over steps
# before the first step has run, so it needs their names up front.
LABELED_METRICS = ("lab/loss", "lab/acc", "lab/pred_prob", "train/data_loss", "train/loss")
UNLABELED_METRICS = ("unl/acc_to_dump", "unl/pred_prob", "ext/loss")


def metric_names(config):
    """Names of the training metrics `compute_losses` returns for `config`."""
    return LABELED_METRICS + (UNLABELED_METRICS if config.unlabel_ratio else ())


def compute_losses(config, state, batch, training=True):
    """Forward pass and the loss of one replica's batch (docs/method.md, "Training").

    Returns:
      (total loss, metrics dict); both per replica, not yet divided by the
      number of replicas.
    """
    num_classes = config.num_label_classes
    images = preprocessing.normalize_image(
        batch["images"], state.description["mean_rgb"], state.description["stddev_rgb"]
    )
    labels = batch["labels"]
    lab_bsz = tf.shape(labels)[0]
    logits = tf.cast(state.model(images, training=training), tf.float32)
    lab_logits = logits[:lab_bsz]
    lab_prob = tf.nn.softmax(lab_logits)
    lab_loss = cross_entropy(
        smoothed_one_hot(labels, num_classes, config.label_smoothing), lab_logits
    )
    if config.label_data_sample_prob != 1:
        mask = tf.floor(config.label_data_sample_prob + tf.random.uniform(tf.shape(lab_loss)))
        lab_loss = lab_loss * mask
    lab_loss = tf.reduce_mean(lab_loss)
    lab_pred = tf.argmax(lab_logits, axis=-1, output_type=tf.int32)
    metrics = {
        "lab/loss": lab_loss,
        "lab/acc": tf.reduce_mean(tf.cast(tf.equal(lab_pred, labels), tf.float32)),
        "lab/pred_prob": tf.reduce_mean(tf.reduce_max(lab_prob, axis=-1)),
    }
    data_loss = lab_loss
    if config.unlabel_ratio:
        unl_logits = logits[lab_bsz:]
        teacher_logits = None
        if state.teacher is not None:
            # The teacher is fed as it was trained: its own size and normalization.
            teacher_images = preprocessing.normalize_image(
                batch["teacher_images"], state.teacher.mean_rgb, state.teacher.stddev_rgb
            )
            teacher_logits = tf.stop_gradient(
                tf.cast(state.teacher.model(teacher_images, training=False), tf.float32)
            )
        targets = unlabeled_targets(
            num_classes,
            config.label_smoothing,
            config.teacher_softmax_temp,
            teacher_logits=teacher_logits,
            stored_probs=batch["unl_probs"],
            stored_labels=batch["unl_labels"],
        )
        unl_loss = tf.reduce_mean(cross_entropy(targets, unl_logits))
        unl_pred = tf.argmax(unl_logits, axis=-1, output_type=tf.int32)
        target_class = tf.argmax(targets, axis=-1, output_type=tf.int32)
        metrics["unl/acc_to_dump"] = tf.reduce_mean(
            tf.cast(tf.equal(unl_pred, target_class), tf.float32)
        )
        metrics["unl/pred_prob"] = tf.reduce_mean(tf.reduce_max(tf.nn.softmax(unl_logits), -1))
        metrics["ext/loss"] = unl_loss
        data_loss = lab_loss + config.unlabel_ratio * unl_loss
    loss = data_loss + config.weight_decay * l2_regularization(state.decay_vars)
    metrics["train/data_loss"] = data_loss
    metrics["train/loss"] = loss
    if set(metrics) != set(metric_names(config)):
        # Checked once, when the step is traced.
        raise AssertionError(f"compute_losses returned {sorted(metrics)}, not metric_names().")
    return loss, metrics


def train_step(config, state, batch):
    """One optimizer step on one replica's batch; returns its metrics.

    With `state.loss_scale` (float16) the loss is scaled before the gradients
    are taken and the gradients unscaled after; a step with non-finite
    gradients on any replica is skipped (nothing updated, the step counter
    not advanced) and lowers the scale (`DynamicLossScale`).
    """
    num_replicas = tf.distribute.get_strategy().num_replicas_in_sync
    variables = state.model.trainable_variables
    with tf.GradientTape() as tape:
        loss, metrics = compute_losses(config, state, batch, training=True)
        # Gradients are summed across replicas, so each replica contributes
        # its mean loss divided by the number of replicas.
        scaled_loss = loss / num_replicas
        if state.loss_scale is not None:
            scaled_loss = state.loss_scale.scale_loss(scaled_loss)
    grads = tape.gradient(scaled_loss, variables)
    if state.loss_scale is None:
        state.optimizer.apply_gradients(zip(grads, variables, strict=True))
        return metrics
    grads = state.loss_scale.unscale(grads)
    finite = all_finite(grads)
    apply_gradients_if(state.optimizer, zip(grads, variables, strict=True), finite)
    state.loss_scale.update(finite)
    return metrics


def make_replica_step(config, state):
    """`train_step` on one replica's batch, compiled with XLA when `use_xla_for` says so.

    Only the step is compiled: reading the iterator stays outside XLA, and
    the EMA update runs in the cross-replica context after it.
    """
    step = functools.partial(train_step, config, state)
    if use_xla_for(config.use_xla, state.strategy):
        logging.info("XLA: compiling the training step (jit_compile).")
        return tf.function(step, jit_compile=True)
    return step


def make_train_loop(config, state):
    """A tf.function running `num_steps` training steps (one `--iterations_per_loop` call).

    Returns the metrics averaged over replicas and the steps run, the last
    learning rate, and under "steps" how many steps ran: fewer than
    `num_steps` when `state.stop_requested` was set during the call.
    """
    strategy = state.strategy
    names = metric_names(config)
    replica_step = make_replica_step(config, state)

    def step_and_ema(batch):
        step_before = tf.identity(state.optimizer.iterations)
        per_replica = strategy.run(replica_step, args=(batch,))
        metrics = {
            k: strategy.reduce(tf.distribute.ReduceOp.MEAN, v, axis=None)
            for k, v in per_replica.items()
        }
        decay = ema_decay(state.optimizer.iterations, config.moving_average_decay)
        if state.loss_scale is not None:
            # A skipped float16 step leaves the EMA as it is (decay 1).
            decay = tf.where(state.optimizer.iterations > step_before, decay, 1.0)
        update_ema(state.ema_model, state.model, decay)
        return metrics

    stop = state.stop_requested

    @tf.function
    def train_loop(iterator, num_steps):
        sums = {k: tf.constant(0.0) for k in names}
        done = tf.constant(0)
        for _ in tf.range(num_steps):
            # A stop request (SIGTERM/SIGINT) ends the call after the running
            # step, not after all --iterations_per_loop steps.
            if stop.read_value():
                break
            metrics = step_and_ema(next(iterator))
            sums = {k: sums[k] + metrics[k] for k in names}
            done += 1
        out = {k: v / tf.cast(tf.maximum(done, 1), tf.float32) for k, v in sums.items()}
        out["train/lr"] = state.optimizer.learning_rate
        if state.loss_scale is not None:
            out["train/loss_scale"] = tf.identity(state.loss_scale.scale)
        out["steps"] = done
        return out

    return train_loop


def training_files(config):
    """(labeled files, unlabeled files or None) that a training run of `config` reads."""
    info = task_info.get_task_info(config.task_name)
    label_files = data_input.labeled_files(
        config.label_data_dir, info.train_subset, config.num_train_shards
    )
    unlabel_files = None
    if config.unlabel_ratio:
        unlabel_files = data_input.unlabeled_files(config.unlabel_data_dir)
    return label_files, unlabel_files


def make_distributed_train_dataset(
    config, strategy, label_files, unlabel_files, teacher_image_size=None, start_step=0
):
    """The distributed training dataset of `config`, for a run starting at `start_step`.

    `label_files` and `unlabel_files` are `training_files(config)`.
    """
    if config.unlabel_data_dir and not config.unlabel_ratio:
        logging.warning("--unlabel_data_dir is set but --unlabel_ratio is 0: not used.")
    if config.train_batch_size % strategy.num_replicas_in_sync:
        raise ValueError(
            f"--train_batch_size={config.train_batch_size} is not divisible by the "
            f"{strategy.num_replicas_in_sync} replicas."
        )

    def dataset_fn(input_context):
        return data_input.make_train_dataset(
            input_context,
            label_files=label_files,
            per_replica_batch_size=input_context.get_per_replica_batch_size(
                config.train_batch_size
            ),
            image_size=config.input_image_size,
            small_image_model=config.small_image_model,
            num_classes=config.num_label_classes,
            augment_name=config.augment_name,
            randaug_mag=config.randaug_mag,
            randaug_layer=config.randaug_layer,
            cutout_op=config.cutout_op,
            random_flip=config.random_flip,
            remove_aug=config.remove_aug,
            cache=config.use_cache,
            unlabel_files=unlabel_files,
            unlabel_ratio=config.unlabel_ratio,
            unl_aug=config.unl_aug,
            teacher_image_size=teacher_image_size,
            seed=input_seed(config.seed, start_step),
            label_data_sample_prob=config.label_data_sample_prob,
        )

    return strategy.distribute_datasets_from_function(dataset_fn)


def check_stored_probabilities(files, num_classes):
    """Fails before training when stored targets are unusable (first record of each file).

    Raises:
      ValueError: `probabilities` do not have `num_classes` entries, or are
        the all-zero placeholders of raw unlabeled data (which no teacher has
        labeled yet), naming the file.
    """
    for path in files:
        try:
            records = [r.numpy() for r in tf.data.TFRecordDataset(path).take(1)]
        except data_input.RECORD_ERRORS as e:
            raise data_input.DataError(f"{path}: cannot be read: {e.message[:300]}") from e
        if not records:
            continue
        example = tf.train.Example.FromString(records[0])
        feature = example.features.feature.get("probabilities")
        values = np.asarray(feature.float_list.value if feature is not None else [], np.float32)
        if len(values) != num_classes:
            raise ValueError(
                f"Unlabeled records in {path} have {len(values)} probabilities, but "
                f"--num_label_classes={num_classes}."
            )
        if not values.any():
            raise ValueError(
                f"Unlabeled records in {path} have all-zero probabilities: they are raw "
                "unlabeled data that no teacher has labeled. Run the prediction and filter "
                "steps first (predict.sh, filter_unlabel.sh) and train on their output, or "
                "give --teacher_model_path to label them on the fly."
            )


def check_filter_output_complete(unlabel_data_dir):
    """Fails when an unlabeled dir is a filter output whose pass 2 did not finish.

    A directory `<out>/data` next to `<out>/threshold.json` was written by
    filter_unlabel_data.py; its `<out>/stats/final_stats.json` exists only
    once every shard is done, and lists every output file with its size.

    Raises:
      ValueError: the final stats are missing, or a listed file is missing or
        has another size, naming it.
    """
    dirs = [d for d in unlabel_data_dir.split(";") if d]
    for data_dir in dirs:
        out_dir = os.path.dirname(os.path.normpath(data_dir))
        if not tf.io.gfile.exists(file_names.threshold_path(out_dir)):
            continue
        final_path = file_names.final_stats_path(out_dir)
        hint = " (or pass --check_filter_stats=False to train on it anyway)."
        if not tf.io.gfile.exists(final_path):
            raise ValueError(
                f"--unlabel_data_dir={data_dir} is filter output, but {final_path} is missing: "
                "not every shard of the filter's pass 2 has finished. Run it again for the "
                "missing shards" + hint
            )
        listed = atomic_files.read_json(final_path).get("files", {})
        for name, entry in sorted(listed.items()):
            path = os.path.join(data_dir, name)
            if not tf.io.gfile.exists(path):
                raise ValueError(f"{path} is listed in {final_path} but missing" + hint)
            size = tf.io.gfile.stat(path).length
            if size != entry["num_bytes"]:
                raise ValueError(
                    f"{path} has {size} bytes, {final_path} lists {entry['num_bytes']}" + hint
                )


def make_summary_writer(log_dir, chief=True):
    """TensorBoard writer; non-chief workers write nothing."""
    return tf.summary.create_file_writer(log_dir) if chief else tf.summary.create_noop_writer()


def write_run_files(config, state, flags_dict=None):
    """Writes FLAGS.json (resolved settings) and model_params.txt next to the checkpoints."""
    if not state.is_chief:
        return
    tf.io.gfile.makedirs(config.model_dir)
    atomic_files.write_json(
        os.path.join(config.model_dir, FLAGS_FILE),
        flags_dict if flags_dict is not None else dataclasses.asdict(config),
    )
    description = dict(state.description)
    description["num_params"] = int(sum(np.prod(v.shape) for v in state.model.trainable_weights))
    atomic_files.write_json(os.path.join(config.model_dir, MODEL_PARAMS_FILE), description)


def _prepare_training(config, strategy, state):
    """Lists and checks the inputs, builds the input pipeline and the compiled loop.

    Done once per TrainState: train_and_evaluate calls train() again after
    every eval, and none of this should be redone then.
    """
    state.train_files = training_files(config)
    if config.unlabel_ratio and state.teacher is None:
        if config.check_filter_stats:
            check_filter_output_complete(config.unlabel_data_dir)
        check_stored_probabilities(state.train_files[1], config.num_label_classes)
    teacher_size = state.teacher.image_size if state.teacher is not None else None
    dataset = make_distributed_train_dataset(
        config, strategy, *state.train_files, teacher_size, state.step
    )
    state.train_iterator = iter(dataset)
    state.train_loop = make_train_loop(config, state)


def train(config, strategy, state=None, until_step=None, summary_writer=None):
    """Trains from the current global step to `until_step` (default: config.max_steps).

    Saves a checkpoint every `save_checkpoints_steps` and at the end; resumes
    from the latest checkpoint in `config.model_dir`.

    Returns:
      The TrainState (reuse it to continue training or to evaluate).

    Raises:
      preemption.Preempted: `state.stop_requested` was set (by a signal, see
        `preemption.StopOnSignals`); a checkpoint of the step reached is saved.
    """
    if state is None:
        state = TrainState(config, strategy)
        state.restore_or_initialize()
    until_step = config.max_steps if until_step is None else until_step
    if state.step >= until_step:
        logging.info("Already at step %d >= %d: nothing to train.", state.step, until_step)
        return state
    if config.unlabel_ratio and not config.unlabel_data_dir:
        raise ValueError("--unlabel_ratio > 0 needs --unlabel_data_dir.")
    if state.train_iterator is None:
        _prepare_training(config, strategy, state)
    iterator, train_loop = state.train_iterator, state.train_loop
    label_files, unlabel_files = state.train_files
    if summary_writer is None:
        summary_writer = make_summary_writer(config.model_dir, state.is_chief)
    replicas = strategy.num_replicas_in_sync
    images_per_step = config.train_batch_size + replicas * data_input.unlabeled_batch_size(
        config.train_batch_size // replicas, config.unlabel_ratio, config.label_data_sample_prob
    )
    start_step = state.step
    # Progress and ETA run to the end of training, not of this call: under
    # --mode=train_and_eval a call ends at the next evaluation.
    progress = progress_log.Progress(config.max_steps, "steps", start=start_step, interval=0)
    last_log_step = start_step
    first_call = None  # (step, rate, ETA) after the loop's first call
    logging.info(
        "Training %s from step %d to %d (%.2f epochs of %d labeled images in all).",
        config.model_name,
        start_step,
        until_step,
        until_step / config.steps_per_epoch,
        config.num_train_images,
    )
    saved = start_step
    while state.step < until_step:
        stop_if_requested(state, summary_writer)
        step = state.step
        next_save = (step // config.save_checkpoints_steps + 1) * config.save_checkpoints_steps
        num_steps = min(config.iterations_per_loop, until_step - step, next_save - step)
        with data_input.naming_bad_files(
            labeled_files=label_files,
            unlabeled_files=unlabel_files or (),
            num_classes=config.num_label_classes,
        ):
            metrics = train_loop(iterator, tf.constant(num_steps, tf.int32))
        steps_run = int(metrics.pop("steps"))
        metrics = {k: float(v.numpy()) for k, v in metrics.items()}
        step = state.step
        if steps_run == 0:
            stop_if_requested(state)
        state.history.append((step, metrics))
        progress.done = step
        if first_call is None:
            # The first call traced (and with XLA compiled) the loop: the
            # rates logged after it measure the training alone.
            first_call = (step, progress.rate(), progress.eta_seconds())
            progress.restart_clock()
        with summary_writer.as_default(step=step):
            for name, value in metrics.items():
                tf.summary.scalar(name, value)
        if not np.isfinite(metrics["train/loss"]):
            raise FloatingPointError(f"Training loss is {metrics['train/loss']} at step {step}.")
        if step - last_log_step >= config.log_step_count_steps or step >= until_step:
            last_log_step = step
            rate, eta = progress.rate(), progress.eta_seconds()
            if step == first_call[0]:
                _, rate, eta = first_call
            logging.info(
                "step %d/%d: loss %.4f, lab/acc %.3f, lr %.3g, %.1f images/s, ETA %s",
                step,
                config.max_steps,
                metrics["train/loss"],
                metrics["lab/acc"],
                metrics["train/lr"],
                rate * images_per_step,
                progress_log.format_seconds(eta or 0),
            )
        check_loss_scale(state, step)
        if (step % config.save_checkpoints_steps == 0 or step >= until_step) and step > saved:
            state.save()
            saved = step
    summary_writer.flush()
    if state.step < config.max_steps:
        # A signal during the last call of a finished run is not a preemption.
        stop_if_requested(state)
    return state


def check_loss_scale(state, step):
    """Fails when float16 skips every step: its loss scale fell below 1.

    Raises:
      FloatingPointError: naming the step and what to do.
    """
    if state.loss_scale is not None and float(state.loss_scale.scale.numpy()) < 1.0:
        raise FloatingPointError(
            f"float16 gradients are not finite even at a loss scale below 1 (step {step}): "
            "train in float32 or bfloat16 (--mixed_precision)."
        )


def stop_if_requested(state, summary_writer=None):
    """After a stop request: saves a checkpoint of the current step (if none) and stops.

    Args:
      state: the TrainState.
      summary_writer: flushed before stopping, if given.

    Raises:
      preemption.Preempted: `state.stop_requested` is set; the checkpoint of
        `state.step` is saved.
    """
    if not bool(state.stop_requested.numpy()):
        return
    if summary_writer is not None:
        summary_writer.flush()
    step = state.step
    latest = state.manager.latest_checkpoint
    if latest is None or checkpoints.checkpoint_step(latest) != step:
        state.save()
    logging.warning("preempted at step %d, checkpoint saved", step)
    raise preemption.Preempted(step)


# ---------------------------------------------------------------------------
# Evaluation.


def make_eval_fn(model, strategy, mean_rgb, stddev_rgb, jit_compile=False):
    """A tf.function returning (correct top-1, correct top-5, count) of one padded batch.

    `jit_compile` compiles the replica function with XLA.
    """

    def replica_fn(batch):
        images = preprocessing.normalize_image(batch["images"], mean_rgb, stddev_rgb)
        logits = tf.cast(model(images, training=False), tf.float32)
        k = min(5, logits.shape[-1])
        top1 = tf.cast(
            tf.equal(tf.argmax(logits, -1, output_type=tf.int32), batch["labels"]), tf.float32
        )
        top5 = tf.cast(tf.math.in_top_k(batch["labels"], logits, k), tf.float32)
        mask = batch["mask"]
        return tf.stack(
            [tf.reduce_sum(top1 * mask), tf.reduce_sum(top5 * mask), tf.reduce_sum(mask)]
        )

    replica_fn = tf.function(replica_fn, jit_compile=jit_compile) if jit_compile else replica_fn

    @tf.function
    def eval_fn(batch):
        return strategy.reduce(
            tf.distribute.ReduceOp.SUM, strategy.run(replica_fn, args=(batch,)), None
        )

    return eval_fn


def global_eval_batch_size(batch_size, strategy):
    """Rounds the eval batch up to a multiple of the replicas."""
    replicas = strategy.num_replicas_in_sync
    return int(math.ceil(batch_size / replicas) * replicas)


def evaluate_model(model, description, strategy, config, subsets=None, global_step=None):
    """Top-1/top-5 accuracy of `model` on each subset, every image counted once.

    Args:
      model: the network.
      description: its description: the images are fed at its `image_size`
        with its `mean_rgb` / `stddev_rgb` normalization.
      strategy: a tf.distribute strategy.
      config: a TrainConfig (data dir, eval batch size, subsets, classes).
      subsets: subsets to evaluate (default: `config.eval_subsets`).
      global_step: the step reported with the results.

    Returns:
      {subset: {"top_1_accuracy", "top_5_accuracy", "num_images", "global_step"}}.

    Raises:
      data_input.DataError: a record is corrupt or its label is out of range,
        naming the file.
    """
    # The batch norms folded into the convolutions: same outputs, faster.
    eval_fn = make_eval_fn(
        bn_folding.fold_batch_norms(model),
        strategy,
        description["mean_rgb"],
        description["stddev_rgb"],
        jit_compile=use_xla_for(config.use_xla, strategy),
    )
    batch_size = global_eval_batch_size(config.eval_batch_size, strategy)
    results = {}
    for subset in subsets or config.eval_subsets:
        files = data_input.labeled_files(config.label_data_dir, subset)
        ds = data_input.make_eval_dataset(
            files,
            batch_size=batch_size,
            image_size=description["image_size"],
            small_image_model=description["small_image_model"],
            num_classes=config.num_label_classes,
        )
        totals = np.zeros(3)
        start = time.time()
        with data_input.naming_bad_files(labeled_files=files, num_classes=config.num_label_classes):
            for batch in strategy.experimental_distribute_dataset(ds):
                totals += eval_fn(batch).numpy()
        n = int(totals[2])
        results[subset] = {
            "top_1_accuracy": float(totals[0] / max(n, 1)),
            "top_5_accuracy": float(totals[1] / max(n, 1)),
            "num_images": n,
            "global_step": int(global_step) if global_step is not None else -1,
        }
        logging.info(
            "eval %s at step %s: top-1 %.4f, top-5 %.4f on %d images (%.1f images/s)",
            subset,
            global_step,
            results[subset]["top_1_accuracy"],
            results[subset]["top_5_accuracy"],
            n,
            n / max(time.time() - start, 1e-9),
        )
    return results


def write_eval_results(config, results):
    """Merges `results` into model_dir/eval_results.json and TensorBoard."""
    path = os.path.join(config.model_dir, EVAL_RESULTS_FILE)
    merged = atomic_files.read_json(path) if tf.io.gfile.exists(path) else {}
    merged.update(results)
    atomic_files.write_json(path, merged)
    writer = tf.summary.create_file_writer(os.path.join(config.model_dir, "eval"))
    with writer.as_default():
        for subset, r in results.items():
            for key in ("top_1_accuracy", "top_5_accuracy"):
                tf.summary.scalar(f"{subset}/{key}", r[key], step=r["global_step"])
    writer.flush()
    logging.info("Eval results: %s", json.dumps(results, sort_keys=True))
    return merged


def check_eval_results_file(config):
    """Fails before training when model_dir's eval_results.json cannot be merged into.

    Raises:
      data_input.DataError: the file is not a JSON object, naming it (main.py
        ends with its message, no traceback).
    """
    path = os.path.join(config.model_dir, EVAL_RESULTS_FILE)
    if not tf.io.gfile.exists(path):
        return
    try:
        results = atomic_files.read_json(path)
    except (ValueError, UnicodeDecodeError, tf.errors.OpError) as e:
        raise data_input.DataError(
            f"{path} is not valid JSON ({e}); the evaluations would be merged into it. "
            "Move it away or delete it."
        ) from None
    if not isinstance(results, dict):
        raise data_input.DataError(
            f"{path} holds a JSON {type(results).__name__}, not an object of results per "
            "subset; the evaluations would be merged into it. Move it away or delete it."
        )


def evaluate(config, strategy, state=None):
    """Evaluates the EMA weights of the latest checkpoint (or of `state`); writes the results.

    Without `state`, the network, its input size and normalization come from
    the checkpoint's model_params.txt (`checkpoints.load_model`), not from
    the flags.
    """
    if state is None:
        loaded = load_model_dir(config, strategy)
        model, description = loaded.model, loaded.description
        step = checkpoints.checkpoint_step(loaded.prefix)
    else:
        model, description, step = state.ema_model, state.description, state.step
    results = evaluate_model(model, description, strategy, config, global_step=step)
    if is_chief(strategy):
        write_eval_results(config, results)
    return results


def train_and_evaluate(config, strategy, state=None):
    """Alternates `steps_per_eval` training steps with evaluation until max_steps.

    Returns:
      (TrainState, the last eval results).
    """
    if state is None:
        state = TrainState(config, strategy)
        state.restore_or_initialize()
    summary_writer = make_summary_writer(config.model_dir, state.is_chief)
    while True:
        until = min(config.max_steps, state.step + config.steps_per_eval)
        train(config, strategy, state=state, until_step=until, summary_writer=summary_writer)
        results = evaluate(config, strategy, state=state)
        if state.step >= config.max_steps:
            return state, results
