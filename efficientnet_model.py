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
"""

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
    inference the layer is the identity.

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
        if not training or self.rate == 0.0:
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


@keras.saving.register_keras_serializable(package="noisystudent")
class BatchNormalization(layers.BatchNormalization):
    """`keras.layers.BatchNormalization` whose training-mode call is one fused kernel.

    Keras 3 normalizes with separate moments, subtract, multiply and add ops;
    on CPU that makes batch norm a large share of an EfficientNet training step.
    In training mode on 4-D channels-last inputs this layer runs TF's
    FusedBatchNormV3 instead (also for bfloat16 inputs, which it accepts with
    float32 statistics). Results, variables and moving-statistics updates are
    those of the Keras layer: the moving variance is updated with the biased
    batch variance, as Keras and the original cross-replica TPU batch norm do.
    Inference, synchronized (cross-replica) BN, renorm and masks use the
    Keras implementation unchanged.
    """

    def call(self, inputs, training=None, mask=None):
        if (
            not (training and self.trainable)
            or self.synchronized
            or self.renorm
            or mask is not None
            or len(inputs.shape) != 4
            or self.axis not in (-1, 3)
            or inputs.dtype not in (tf.float32, tf.bfloat16)
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
        self.moving_mean.assign(self.moving_mean * self.momentum + mean * (1.0 - self.momentum))
        self.moving_variance.assign(
            self.moving_variance * self.momentum + variance * (1.0 - self.momentum)
        )
        return tf.cast(outputs, self.compute_dtype)


def _batch_norm(name, momentum, epsilon, synchronized):
    return BatchNormalization(
        axis=-1, momentum=momentum, epsilon=epsilon, synchronized=synchronized, name=name
    )


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
      sync_batch_norm: use cross-replica batch norm.

    Returns:
      Keras tensor [N, H / strides, W / strides, output_filters].
    """
    filters = input_filters * expand_ratio
    x = inputs
    if expand_ratio != 1:
        x = layers.Conv2D(
            filters,
            1,
            use_bias=False,
            kernel_initializer=CONV_KERNEL_INITIALIZER,
            name=f"{name}expand_conv",
        )(x)
        x = _batch_norm(f"{name}expand_bn", bn_momentum, bn_epsilon, sync_batch_norm)(x)
        x = layers.Activation("swish", name=f"{name}expand_activation")(x)

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
    x = _batch_norm(f"{name}bn", bn_momentum, bn_epsilon, sync_batch_norm)(x)
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

    x = layers.Conv2D(
        output_filters,
        1,
        use_bias=False,
        kernel_initializer=CONV_KERNEL_INITIALIZER,
        name=f"{name}project_conv",
    )(x)
    x = _batch_norm(f"{name}project_bn", bn_momentum, bn_epsilon, sync_batch_norm)(x)

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
      sync_batch_norm: use cross-replica (synchronized) batch norm.
      name: Keras model name.

    Returns:
      A functional `keras.Model` mapping [N, H, W, 3] normalized images to
      float32 logits [N, num_classes].
    """
    bn_args = dict(
        bn_momentum=batch_norm_momentum,
        bn_epsilon=batch_norm_epsilon,
        sync_batch_norm=sync_batch_norm,
    )
    images = keras.Input(shape=(None, None, 3), name="images")
    x = layers.Conv2D(
        stem_filters,
        3,
        strides=2,
        padding="same",
        use_bias=False,
        kernel_initializer=CONV_KERNEL_INITIALIZER,
        name="stem_conv",
    )(images)
    x = _batch_norm("stem_bn", batch_norm_momentum, batch_norm_epsilon, sync_batch_norm)(x)
    x = layers.Activation("swish", name="stem_activation")(x)

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

    x = layers.Conv2D(
        head_filters,
        1,
        use_bias=False,
        kernel_initializer=CONV_KERNEL_INITIALIZER,
        name="top_conv",
    )(x)
    x = _batch_norm("top_bn", batch_norm_momentum, batch_norm_epsilon, sync_batch_norm)(x)
    x = layers.Activation("swish", name="top_activation")(x)
    x = layers.GlobalAveragePooling2D(name="avg_pool")(x)
    if dropout_rate > 0:
        x = layers.Dropout(dropout_rate, name="top_dropout")(x)
    # float32 classifier: losses and softmax stay accurate under mixed_bfloat16.
    logits = layers.Dense(
        num_classes,
        kernel_initializer=DENSE_KERNEL_INITIALIZER,
        dtype="float32",
        name="predictions",
    )(x)
    return keras.Model(images, logits, name=name)
