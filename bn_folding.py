"""Batch norm folding: an inference copy of a network without batch norm layers.

At inference a batch norm is a per-channel affine map, y = x * s + (beta - mean * s)
with s = gamma / sqrt(moving_variance + epsilon), so when it directly follows a
convolution whose output nothing else reads, it can be folded into that
convolution: the kernel is scaled by s along its output channels and the
convolution gets the bias beta - mean * s. The folded network computes the same
function (up to float rounding) with one op less per convolution, and TF's CPU
graph optimizer fuses the remaining conv + bias (+ swish) into one kernel.

The trained network is left as it is: its layer names and variables are what
checkpoints and the TF1 conversion rely on. `fold_batch_norms` builds a separate
copy in which each folded batch norm becomes an identity layer (`FoldedBatchNorm`) of the
same name
and its convolution gains a bias, so layer names still match the trained model.
Every inference caller (prediction, reassignment, evaluation, the exported
SavedModel) goes through `fold_batch_norms`.
"""

import contextlib

import keras
import numpy as np

_CONV_TYPES = (keras.layers.Conv2D, keras.layers.DepthwiseConv2D)


@keras.saving.register_keras_serializable(package="noisystudent")
class FoldedBatchNorm(keras.layers.Layer):
    """What a folded batch norm becomes: the identity, with a batch norm's call signature."""

    def call(self, inputs, training=None, mask=None):
        del training, mask  # the convolution before it already applies the batch norm
        return inputs

    def compute_output_shape(self, input_shape):
        return input_shape


def _producer(layer):
    """The layer whose output is `layer`'s single input, or None."""
    nodes = getattr(layer, "_inbound_nodes", [])
    if len(nodes) != 1 or len(nodes[0].input_tensors) != 1:
        return None
    return nodes[0].input_tensors[0]._keras_history.operation


def foldable_pairs(model):
    """{batch norm layer name: convolution layer name} of the pairs that can be folded.

    A pair folds when the batch norm's only input is a Conv2D or
    DepthwiseConv2D (without activation) that is called once and read by
    nothing but this batch norm.
    """
    pairs = {}
    for layer in model.layers:
        if not isinstance(layer, keras.layers.BatchNormalization) or layer.axis not in (-1, 3):
            continue
        conv = _producer(layer)
        if (
            isinstance(conv, _CONV_TYPES)
            and conv.get_config().get("activation") in (None, "linear")
            and len(conv._inbound_nodes) == 1
            and len(conv._outbound_nodes) == 1
        ):
            pairs[layer.name] = conv.name
    return pairs


def folded_weights(conv, bn):
    """(kernel, bias) of `conv` with the inference-mode batch norm `bn` folded in.

    Computed in float64 and returned as float32 numpy arrays.
    """
    kernel = np.asarray(conv.kernel.numpy(), np.float64)
    channels = bn.moving_mean.shape[-1]
    gamma = bn.gamma.numpy() if bn.scale else np.ones(channels)
    beta = bn.beta.numpy() if bn.center else np.zeros(channels)
    mean = bn.moving_mean.numpy().astype(np.float64)
    scale = np.asarray(gamma, np.float64) / np.sqrt(
        bn.moving_variance.numpy().astype(np.float64) + bn.epsilon
    )
    bias = conv.bias.numpy().astype(np.float64) if conv.use_bias else np.zeros(channels)
    if isinstance(conv, keras.layers.DepthwiseConv2D):
        # Kernel [kh, kw, in, multiplier]; output channel c * multiplier + m.
        kernel = kernel * scale.reshape(kernel.shape[2], kernel.shape[3])
    else:
        kernel = kernel * scale
    bias = (bias - mean) * scale + np.asarray(beta, np.float64)
    return kernel.astype(np.float32), bias.astype(np.float32)


def fold_batch_norms(model):
    """An inference copy of `model` with every foldable batch norm folded into its conv.

    Args:
      model: a functional Keras model (e.g. one built by
        `efficientnet_model.efficientnet`) with built weights.

    Returns:
      A new functional model with the same layer names, computing the same
      outputs as `model(x, training=False)` within float tolerance; `model`
      itself when nothing can be folded. Its batch norms are identity layers
      and it is meant for inference only (not for training or checkpoints).
    """
    pairs = foldable_pairs(model)
    if not pairs:
        return model
    convs = set(pairs.values())

    def clone_layer(layer):
        config = layer.get_config()
        if layer.name in pairs:
            return FoldedBatchNorm(name=layer.name, dtype=layer.dtype_policy)
        if layer.name in convs:
            config["use_bias"] = True
        return layer.__class__.from_config(config)

    # The copy's variables live where the original's do (e.g. mirrored over a
    # MirroredStrategy's devices), so it runs inside the same strategy.
    strategy = getattr(model.weights[0].value, "_distribute_strategy", None)
    with strategy.scope() if strategy is not None else contextlib.nullcontext():
        folded = keras.models.clone_model(model, clone_function=clone_layer)
        originals = {layer.name: layer for layer in model.layers}
        for bn_name, conv_name in pairs.items():
            kernel, bias = folded_weights(originals[conv_name], originals[bn_name])
            folded.get_layer(conv_name).set_weights([kernel, bias])
        for layer in folded.layers:
            if layer.name not in pairs and layer.name not in convs and layer.weights:
                layer.set_weights(originals[layer.name].get_weights())
    return folded
