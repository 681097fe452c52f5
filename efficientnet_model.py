"""EfficientNet network (Keras 3, channels-last) built from resolved parameters.

Reference: Mingxing Tan, Quoc V. Le, "EfficientNet: Rethinking Model Scaling for
Convolutional Neural Networks", ICML 2019, https://arxiv.org/abs/1905.11946.

The tables and the scaling arithmetic live in `efficientnet_builder`; this
module only turns already-scaled stage arguments into layers. Layer names are
those of `keras.applications.EfficientNet*` (`stem_conv`, `block2a_expand_conv`,
..., `predictions`), so weights can be copied between the two by layer name,
and they are fixed strings, so two builds in one process get identical names.

Input images must already be normalized (mean/std per channel); unlike the
keras.applications models, there is no Rescaling or Normalization layer inside.

Two options of the published training code act on a built network:
  * `batch_norm_group_size` (`--num_shards_per_group`) gives the number of
    consecutive replicas whose batch statistics are averaged; it is passed as
    `sync_batch_norm` when the network is built.
  * `freeze_first_blocks` (`--fix_layer_num`) freezes the stem and the first
    blocks of a built network.
"""

import numbers
import re

import keras
import tensorflow as tf
from keras import layers, ops

# Normal(0, sqrt(2 / fan_out)) for convolutions and U(+-1/sqrt(fan_out)) for the
# classifier: the initializers of the original EfficientNet code (Keras' own
# EfficientNet uses a truncated normal instead).
CONV_KERNEL_INITIALIZER = {
    "class_name": "VarianceScaling",
    "config": {"scale": 2.0, "mode": "fan_out", "distribution": "untruncated_normal"},
}
DENSE_KERNEL_INITIALIZER = {
    "class_name": "VarianceScaling",
    "config": {"scale": 1.0 / 3.0, "mode": "fan_out", "distribution": "uniform"},
}


@keras.saving.register_keras_serializable(package="noisystudent")
class StochasticDepth(layers.Layer):
    """Drops a whole residual branch per example (Huang et al., 2016).

    In training each example's input is either zeroed (probability `rate`) or
    scaled by 1 / (1 - rate), so the expected output equals the input; at
    inference the layer is the identity. A layer with `trainable=False` (in a
    block frozen by `freeze_first_blocks`) is the identity as well, because
    the published code ran frozen blocks in inference mode.

    Args:
      rate: drop probability in [0, 1).
      seed: optional int seed of the layer's random generator.
      **kwargs: passed to `keras.layers.Layer`.
    """

    def __init__(self, rate, seed=None, **kwargs):
        super().__init__(**kwargs)
        if not 0.0 <= rate < 1.0:
            raise ValueError(f"StochasticDepth rate must be in [0, 1), got {rate}")
        self.rate = float(rate)
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)
        self.supports_masking = True

    def call(self, inputs, training=None):
        if not (training and self.trainable) or self.rate == 0.0:
            return inputs
        keep_prob = 1.0 - self.rate
        batch = ops.shape(inputs)[0]
        noise_shape = (batch,) + (1,) * (len(inputs.shape) - 1)
        # Drawn in float32 so that the keep decision is not biased by bfloat16
        # rounding of the uniform samples under a mixed policy.
        uniform = keras.random.uniform(noise_shape, dtype="float32", seed=self.seed_generator)
        scale = ops.floor(uniform + keep_prob) / keep_prob
        return inputs * ops.cast(scale, inputs.dtype)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update({"rate": self.rate, "seed": self.seed})
        return config


def batch_norm_group_size(num_replicas, num_shards_per_group=-1):
    """Replicas per batch-norm group, by the published `--num_shards_per_group` rule.

    Replicas r with the same r // group_size average their batch statistics.
    `num_shards_per_group`:
      * -1 (the published default): no synchronization up to 8 replicas; above
        8, groups of max(8, num_replicas // 8) replicas;
      * -2: all replicas form one group;
      * 1: no synchronization (every replica uses its own batch);
      * k > 1: groups of k replicas.

    Args:
      num_replicas: number of replicas in sync (e.g.
        `strategy.num_replicas_in_sync`), >= 1.
      num_shards_per_group: the flag value.

    Returns:
      The group size, an int in 1..num_replicas: 1 means unsynchronized,
      num_replicas means synchronized across all replicas. Pass it as
      `sync_batch_norm` to the model builders.

    Raises:
      ValueError: if num_replicas < 1, num_shards_per_group is 0 or below -2,
        or the group size does not divide num_replicas (as the published code,
        which raised for the same cases, e.g. 12 replicas with the default).
    """
    num_replicas = int(num_replicas)
    num_shards_per_group = int(num_shards_per_group)
    if num_replicas < 1:
        raise ValueError(f"num_replicas must be >= 1, got {num_replicas}")
    if num_shards_per_group == -1:
        group_size = 1 if num_replicas <= 8 else max(8, num_replicas // 8)
    elif num_shards_per_group == -2:
        group_size = num_replicas
    elif num_shards_per_group >= 1:
        group_size = num_shards_per_group
    else:
        raise ValueError(
            f"num_shards_per_group must be -1 (automatic), -2 (all replicas) or >= 1 "
            f"(replicas per group), got {num_shards_per_group}"
        )
    if num_replicas % group_size:
        raise ValueError(
            f"Batch norm groups of {group_size} replicas do not divide {num_replicas} "
            f"replicas (num_shards_per_group={num_shards_per_group}); pick a "
            f"--num_shards_per_group that divides the number of replicas."
        )
    return group_size


def _replica_context_size():
    """(replica context or None, number of replicas in sync there)."""
    ctx = tf.distribute.get_replica_context()
    if ctx is None:  # cross-replica context: no per-replica batch to combine
        return None, 1
    return ctx, ctx.num_replicas_in_sync


@keras.saving.register_keras_serializable(package="noisystudent")
class BatchNormalization(layers.BatchNormalization):
    """Keras batch norm with a fused training kernel and grouped cross-replica statistics.

    Keras 3 normalizes with separate moments, subtract, multiply and add ops;
    on CPU that makes batch norm a large share of an EfficientNet training step.
    In training mode on 4-D channels-last inputs this layer runs TF's
    FusedBatchNormV3 instead (also for bfloat16 and float16 inputs, which it
    accepts with float32 statistics). Results, variables and moving-statistics updates are
    those of the Keras layer: the moving variance is updated with the biased
    batch variance, as Keras and the original cross-replica TPU batch norm do.

    `group_size` k > 1 averages the batch statistics of groups of k consecutive
    replicas (replica r belongs to group r // k), like the published
    cross-replica TPU batch norm with `--num_shards_per_group`: each replica
    computes the mean and the mean of squares of its own batch; the group's
    mean is the average of its replicas' means and its variance is the average
    mean of squares minus the squared mean. The per-replica values are combined
    with `all_gather` (or one `all_reduce` when the group is all replicas)
    under any `tf.distribute` strategy, and gradients flow through them. With a
    single replica (or outside a replica context) the layer's own batch is the
    group. `synchronized=True` is Keras' synchronized batch norm over all
    replicas.

    Inference, synchronized (Keras) BN, renorm and masks use the Keras
    implementation unchanged; a layer with `trainable=False` always runs in
    inference mode (Keras' rule).

    Args:
      *args: passed to `keras.layers.BatchNormalization`.
      group_size: replicas per statistics group; 1 (default) = each replica
        normalizes with its own batch.
      **kwargs: passed to `keras.layers.BatchNormalization`.
    """

    def __init__(self, *args, group_size=1, **kwargs):
        super().__init__(*args, **kwargs)
        if isinstance(group_size, bool) or int(group_size) != group_size or group_size < 1:
            raise ValueError(f"group_size must be an int >= 1, got {group_size!r}")
        group_size = int(group_size)
        if group_size > 1 and (self.synchronized or self.renorm):
            raise ValueError("group_size > 1 cannot be combined with synchronized or renorm.")
        self.group_size = group_size

    def get_config(self):
        config = super().get_config()
        config["group_size"] = self.group_size
        return config

    def call(self, inputs, training=None, mask=None):
        if training and self.trainable and self.group_size > 1:
            ctx, num_replicas = _replica_context_size()
            if num_replicas > 1:
                if mask is not None:
                    raise ValueError("Masks are not supported with group_size > 1.")
                return self._grouped_call(inputs, ctx, num_replicas)
        if (
            not (training and self.trainable)
            or self.synchronized
            or self.renorm
            or mask is not None
            or len(inputs.shape) != 4
            or self.axis not in (-1, 3)
            or inputs.dtype not in (tf.float32, tf.bfloat16, tf.float16)
        ):
            return super().call(inputs, training=training, mask=mask)
        channels = inputs.shape[-1]
        gamma = self.gamma if self.scale else tf.ones([channels], tf.float32)
        beta = self.beta if self.center else tf.zeros([channels], tf.float32)
        empty = tf.constant([], tf.float32)
        outputs, mean, variance, _, _, _ = tf.raw_ops.FusedBatchNormV3(
            x=inputs,
            scale=tf.convert_to_tensor(gamma, tf.float32),
            offset=tf.convert_to_tensor(beta, tf.float32),
            mean=empty,
            variance=empty,
            epsilon=self.epsilon,
            exponential_avg_factor=1.0,
            data_format="NHWC",
            is_training=True,
        )
        # The kernel returns the Bessel-corrected variance; undo it.
        count = tf.cast(tf.reduce_prod(tf.shape(inputs)[:-1]), tf.float32)
        variance = variance * tf.maximum(count - 1.0, 0.0) / tf.maximum(count, 1.0)
        self._update_moving_statistics(mean, variance)
        return tf.cast(outputs, self.compute_dtype)

    def _update_moving_statistics(self, mean, variance):
        self.moving_mean.assign(self.moving_mean * self.momentum + mean * (1.0 - self.momentum))
        self.moving_variance.assign(
            self.moving_variance * self.momentum + variance * (1.0 - self.momentum)
        )

    def _grouped_call(self, inputs, ctx, num_replicas):
        """Training-mode call with the statistics of this replica's group."""
        group_size = self.group_size
        if num_replicas % group_size:
            raise ValueError(
                f"Batch norm {self.name}: groups of {group_size} replicas do not divide "
                f"{num_replicas} replicas."
            )
        # Statistics in float32 also under mixed policies, as in Keras.
        x = tf.cast(inputs, tf.float32)
        channels = x.shape[self.axis]
        local_mean, local_variance = tf.nn.moments(x, self._reduction_axes)
        # One packed vector per replica: a single collective per layer.
        local = tf.concat([local_mean, local_variance + tf.square(local_mean)], axis=0)
        if group_size == num_replicas:
            group = ctx.all_reduce(tf.distribute.ReduceOp.MEAN, local)
        else:
            rows = ctx.all_gather(local[None], axis=0)  # [num_replicas, 2 * channels]
            rows = tf.reshape(rows, [num_replicas // group_size, group_size, 2 * channels])
            group_index = ctx.replica_id_in_sync_group // group_size
            group = tf.reduce_mean(tf.gather(rows, group_index), axis=0)
        mean, mean_of_squares = group[:channels], group[channels:]
        # E[x^2] - E[x]^2 can come out slightly negative in float32.
        variance = tf.maximum(mean_of_squares - tf.square(mean), 0.0)
        self._update_moving_statistics(mean, variance)
        outputs = ops.batch_normalization(
            x,
            mean,
            variance,
            axis=self.axis,
            offset=self.beta if self.center else None,
            scale=self.gamma if self.scale else None,
            epsilon=self.epsilon,
        )
        return tf.cast(outputs, self.compute_dtype)


def _sync_args(sync_batch_norm):
    """`sync_batch_norm` (bool or group size) -> BatchNormalization kwargs.

    True is Keras' synchronized batch norm over all replicas, False or 1 none,
    an int k > 1 groups of k replicas (see `batch_norm_group_size`).
    """
    if isinstance(sync_batch_norm, bool):
        return {"synchronized": sync_batch_norm}
    if isinstance(sync_batch_norm, numbers.Integral) and sync_batch_norm >= 1:
        return {"group_size": int(sync_batch_norm)}
    raise ValueError(
        f"sync_batch_norm must be a bool or a group size >= 1, got {sync_batch_norm!r}"
    )


def _batch_norm(name, momentum, epsilon, sync_batch_norm):
    return BatchNormalization(
        axis=-1, momentum=momentum, epsilon=epsilon, name=name, **_sync_args(sync_batch_norm)
    )


def _conv_bn(x, filters, kernel_size, prefix, batch_norm, strides=1, activation=True):
    """Convolution without bias, batch norm, then swish unless `activation` is False.

    The layers are named `{prefix}conv`, `{prefix}bn` and `{prefix}activation`,
    Keras' names, on which weight conversion relies.

    Args:
      x: Keras tensor.
      filters: output channels.
      kernel_size: convolution kernel size.
      prefix: layer name prefix, e.g. "stem_" or "block2a_expand_".
      batch_norm: (momentum, epsilon, sync_batch_norm) of `_batch_norm`.
      strides: convolution stride; 'same' padding.
      activation: whether swish follows the batch norm.
    """
    x = layers.Conv2D(
        filters,
        kernel_size,
        strides=strides,
        padding="same",
        use_bias=False,
        kernel_initializer=CONV_KERNEL_INITIALIZER,
        name=f"{prefix}conv",
    )(x)
    x = _batch_norm(f"{prefix}bn", *batch_norm)(x)
    if activation:
        x = layers.Activation("swish", name=f"{prefix}activation")(x)
    return x


def _block_letters(index):
    """0 -> "a", 25 -> "z", 26 -> "ba", ...: Keras' block naming, kept valid past 26."""
    letters = ""
    while True:
        letters = chr(ord("a") + index % 26) + letters
        index //= 26
        if index == 0:
            return letters


def mb_conv_block(
    inputs,
    *,
    name,
    input_filters,
    output_filters,
    kernel_size,
    strides,
    expand_ratio,
    se_ratio,
    stochastic_depth_rate,
    bn_momentum,
    bn_epsilon,
    sync_batch_norm,
):
    """Mobile inverted bottleneck block with squeeze-and-excitation.

    Args:
      inputs: Keras tensor [N, H, W, input_filters].
      name: layer name prefix, e.g. "block2a_".
      input_filters: channels of `inputs`.
      output_filters: channels of the output.
      kernel_size: depthwise kernel size.
      strides: depthwise stride (1 or 2).
      expand_ratio: expansion factor of the inverted bottleneck.
      se_ratio: squeeze-excite bottleneck as a fraction of `input_filters`
        (0 disables it).
      stochastic_depth_rate: drop rate of the residual branch.
      bn_momentum: batch norm momentum.
      bn_epsilon: batch norm epsilon.
      sync_batch_norm: cross-replica batch norm: a bool (True = all
        replicas) or a group size (see `batch_norm_group_size`).

    Returns:
      Keras tensor [N, H / strides, W / strides, output_filters].
    """
    filters = input_filters * expand_ratio
    batch_norm = (bn_momentum, bn_epsilon, sync_batch_norm)
    x = inputs
    if expand_ratio != 1:
        x = _conv_bn(x, filters, 1, f"{name}expand_", batch_norm)

    # 'same' padding equals Keras' explicit ZeroPadding + 'valid' (correct_pad)
    # whenever the spatial size is known when Keras builds its model, for even
    # and odd sizes alike, and saves a padding copy per strided layer.
    x = layers.DepthwiseConv2D(
        kernel_size,
        strides=strides,
        padding="same",
        use_bias=False,
        depthwise_initializer=CONV_KERNEL_INITIALIZER,
        name=f"{name}dwconv",
    )(x)
    x = _batch_norm(f"{name}bn", *batch_norm)(x)
    x = layers.Activation("swish", name=f"{name}activation")(x)

    if 0 < se_ratio <= 1:
        se_filters = max(1, int(input_filters * se_ratio))
        # keepdims avoids the separate Reshape layer of keras.applications.
        se = layers.GlobalAveragePooling2D(keepdims=True, name=f"{name}se_squeeze")(x)
        se = layers.Conv2D(
            se_filters,
            1,
            activation="swish",
            kernel_initializer=CONV_KERNEL_INITIALIZER,
            name=f"{name}se_reduce",
        )(se)
        se = layers.Conv2D(
            filters,
            1,
            activation="sigmoid",
            kernel_initializer=CONV_KERNEL_INITIALIZER,
            name=f"{name}se_expand",
        )(se)
        x = layers.Multiply(name=f"{name}se_excite")([x, se])

    x = _conv_bn(x, output_filters, 1, f"{name}project_", batch_norm, activation=False)

    if strides == 1 and input_filters == output_filters:
        if stochastic_depth_rate > 0:
            x = StochasticDepth(stochastic_depth_rate, name=f"{name}drop")(x)
        x = layers.Add(name=f"{name}add")([x, inputs])
    return x


def efficientnet(
    stages,
    stem_filters,
    head_filters,
    num_classes,
    dropout_rate,
    stochastic_depth_rate,
    batch_norm_momentum=0.99,
    batch_norm_epsilon=1e-3,
    sync_batch_norm=False,
    name="efficientnet",
):
    """Builds an EfficientNet from scaled stage arguments.

    Args:
      stages: sequence of objects with the fields of
        `efficientnet_builder.StageArgs` (repeats, kernel_size, strides,
        expand_ratio, input_filters, output_filters, se_ratio), already scaled.
      stem_filters: output channels of the stem convolution.
      head_filters: output channels of the final 1x1 convolution.
      num_classes: number of logits.
      dropout_rate: dropout before the classifier (training only).
      stochastic_depth_rate: maximum stochastic depth rate; block b of n
        (0-based, over all blocks) uses stochastic_depth_rate * b / n.
      batch_norm_momentum: batch norm momentum.
      batch_norm_epsilon: batch norm epsilon.
      sync_batch_norm: cross-replica batch norm: False (none), True (all
        replicas, Keras' synchronized batch norm) or an int group size, the
        number of consecutive replicas that share statistics (1 = none; see
        `batch_norm_group_size`).
      name: Keras model name.

    Returns:
      A functional `keras.Model` mapping [N, H, W, 3] normalized images to
      float32 logits [N, num_classes].
    """
    _sync_args(sync_batch_norm)  # fail before building anything
    bn_args = dict(
        bn_momentum=batch_norm_momentum,
        bn_epsilon=batch_norm_epsilon,
        sync_batch_norm=sync_batch_norm,
    )
    images = keras.Input(shape=(None, None, 3), name="images")
    batch_norm = (batch_norm_momentum, batch_norm_epsilon, sync_batch_norm)
    x = _conv_bn(images, stem_filters, 3, "stem_", batch_norm, strides=2)

    num_blocks = sum(stage.repeats for stage in stages)
    block_index = 0
    for stage_index, stage in enumerate(stages):
        if stage.repeats <= 0:
            raise ValueError(f"Stage {stage_index} has {stage.repeats} repeats; need > 0")
        for repeat in range(stage.repeats):
            first = repeat == 0
            x = mb_conv_block(
                x,
                name=f"block{stage_index + 1}{_block_letters(repeat)}_",
                input_filters=stage.input_filters if first else stage.output_filters,
                output_filters=stage.output_filters,
                kernel_size=stage.kernel_size,
                strides=stage.strides if first else 1,
                expand_ratio=stage.expand_ratio,
                se_ratio=stage.se_ratio,
                stochastic_depth_rate=stochastic_depth_rate * block_index / num_blocks,
                **bn_args,
            )
            block_index += 1

    x = _conv_bn(x, head_filters, 1, "top_", batch_norm)
    x = layers.GlobalAveragePooling2D(name="avg_pool")(x)
    if dropout_rate > 0:
        x = layers.Dropout(dropout_rate, name="top_dropout")(x)
    # float32 classifier: losses and softmax stay accurate under mixed policies.
    logits = layers.Dense(
        num_classes,
        kernel_initializer=DENSE_KERNEL_INITIALIZER,
        dtype="float32",
        name="predictions",
    )(x)
    return keras.Model(images, logits, name=name)


# Layer names of a block: "block" + stage number (1-based) + repeat letters + "_".
_BLOCK_NAME = re.compile(r"^block(\d+)([a-z]+)_")
_STEM_PREFIX = "stem_"


def _letters_index(letters):
    """Inverse of `_block_letters`: "a" -> 0, "z" -> 25, "ba" -> 26."""
    index = 0
    for letter in letters:
        index = index * 26 + ord(letter) - ord("a")
    return index


def block_layers(model):
    """The layers of each MBConv block of a network built by `efficientnet`.

    Args:
      model: a model built by `efficientnet` (layer names as in
        keras.applications).

    Returns:
      A list with one list of layers per block, in network order (block 0 is
      "block1a").
    """
    blocks = {}
    for layer in model.layers:
        match = _BLOCK_NAME.match(layer.name)
        if match:
            key = (int(match.group(1)), _letters_index(match.group(2)))
            blocks.setdefault(key, []).append(layer)
    return [blocks[key] for key in sorted(blocks)]


def freeze_first_blocks(model, fix_layer_num):
    """Freezes the stem and the first `fix_layer_num` blocks (`--fix_layer_num`).

    Published semantics: with fix_layer_num != -1 the stem convolution and
    batch norm and every block with index < fix_layer_num (0-based over all
    blocks) are not trained and run in inference mode even in a training
    call: their batch norm normalizes with (and leaves unchanged) its moving
    statistics, and their stochastic depth is off. The head (top_conv, top_bn),
    dropout and classifier stay trainable. Here the frozen layers get
    `trainable=False`, which removes their variables from
    `model.trainable_variables` and puts `BatchNormalization` and
    `StochasticDepth` in inference mode; `model.weights` keeps its order.

    Call it before the optimizer is built and before reading
    `model.trainable_variables` (e.g. for weight decay), since both depend on
    which variables are trainable. Layers outside the frozen set are left as
    they are.

    Args:
      model: a model built by `efficientnet` / `efficientnet_builder`.
      fix_layer_num: -1 freezes nothing; 0 freezes the stem only; N > 0 the
        stem and blocks 0..N-1 (all blocks when N exceeds their number).

    Returns:
      The names of the layers set to trainable=False, in network order.

    Raises:
      ValueError: if fix_layer_num < -1, or the model has no stem layers.
    """
    fix_layer_num = int(fix_layer_num)
    if fix_layer_num < -1:
        raise ValueError(f"fix_layer_num must be -1 (freeze nothing) or >= 0, got {fix_layer_num}")
    if fix_layer_num == -1:
        return []
    stem = [layer for layer in model.layers if layer.name.startswith(_STEM_PREFIX)]
    if not stem:
        raise ValueError(f"Model {model.name!r} has no {_STEM_PREFIX}* layers to freeze.")
    frozen = stem + [layer for block in block_layers(model)[:fix_layer_num] for layer in block]
    for layer in frozen:
        layer.trainable = False
    return [layer.name for layer in frozen]
