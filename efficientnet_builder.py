"""EfficientNet configurations: the scaling and stage tables and the builder.

This module is the one place where the EfficientNet tables live. It resolves a
model name plus overrides into an *architecture description*
(`architecture_description`): a JSON-serializable dict that fixes every number
the network needs (scaled filters and repeats, dropout, stochastic depth, batch
norm settings). The training code writes that dict, with the input size and
normalization (`checkpoints.model_description`), to `model_params.txt`; the prediction code reads it back and calls
`build_model_from_description` to rebuild exactly the same network, even if the
tables or defaults here change later.

Typical use:

    model = efficientnet_builder.build_model("efficientnet-b0", num_classes=10)
    logits = model(normalized_images, training=False)

The published training options that act on the network: the cross-replica
batch-norm group size (`--num_shards_per_group`) is the description's
`sync_batch_norm` value (see `efficientnet_model.batch_norm_group_size`), and
`--fix_layer_num` is applied to a built model with
`efficientnet_model.freeze_first_blocks`.
"""

import collections
import math
import numbers

import efficientnet_model

# (width_coefficient, depth_coefficient, resolution, dropout_rate) per model.
_SCALING = {
    "efficientnet-b0": (1.0, 1.0, 224, 0.2),
    "efficientnet-b1": (1.0, 1.1, 240, 0.2),
    "efficientnet-b2": (1.1, 1.2, 260, 0.3),
    "efficientnet-b3": (1.2, 1.4, 300, 0.3),
    "efficientnet-b4": (1.4, 1.8, 380, 0.4),
    "efficientnet-b5": (1.6, 2.2, 456, 0.4),
    "efficientnet-b6": (1.8, 2.6, 528, 0.5),
    "efficientnet-b7": (2.0, 3.1, 600, 0.5),
    "efficientnet-l2": (4.3, 5.3, 800, 0.5),
}

MODEL_NAMES = tuple(_SCALING)

StageArgs = collections.namedtuple(
    "StageArgs",
    [
        "repeats",
        "kernel_size",
        "strides",
        "expand_ratio",
        "input_filters",
        "output_filters",
        "se_ratio",
    ],
)

# The unscaled EfficientNet-B0 stages, in StageArgs field order.
_STAGES = (
    StageArgs(1, 3, 1, 1, 32, 16, 0.25),
    StageArgs(2, 3, 2, 6, 16, 24, 0.25),
    StageArgs(2, 5, 2, 6, 24, 40, 0.25),
    StageArgs(3, 3, 2, 6, 40, 80, 0.25),
    StageArgs(3, 5, 1, 6, 80, 112, 0.25),
    StageArgs(4, 5, 2, 6, 112, 192, 0.25),
    StageArgs(1, 3, 1, 6, 192, 320, 0.25),
)
# 32x32 inputs would shrink to 1x1 with the ImageNet strides, so the small
# variant keeps full resolution in these stages (0-based indices; the stem
# still uses stride 2).
SMALL_IMAGE_STRIDE1_STAGES = (1, 2)

_STEM_FILTERS = 32
_HEAD_FILTERS = 1280
_DEPTH_DIVISOR = 8

_DEFAULTS = {
    "stochastic_depth_rate": 0.2,
    "batch_norm_momentum": 0.99,
    "batch_norm_epsilon": 1e-3,
    "sync_batch_norm": False,
}

OVERRIDE_KEYS = (
    "dropout_rate",
    "stochastic_depth_rate",
    "width_coefficient",
    "depth_coefficient",
    "num_classes",
    "batch_norm_momentum",
    "batch_norm_epsilon",
    "sync_batch_norm",
)

# Keys of a resolved description. The informational ones (model name,
# coefficients, resolution, small_image_model) are recorded so that
# model_params.txt is self-explanatory; the network is built from the rest.
DESCRIPTION_KEYS = (
    "model_name",
    "num_classes",
    "small_image_model",
    "width_coefficient",
    "depth_coefficient",
    "resolution",
    "dropout_rate",
    "stochastic_depth_rate",
    "batch_norm_momentum",
    "batch_norm_epsilon",
    "sync_batch_norm",
    "stem_filters",
    "head_filters",
    "num_blocks",
    "stages",
)


def efficientnet_params(model_name):
    """Returns the scaling coefficients of a named EfficientNet.

    Args:
      model_name: one of `MODEL_NAMES`, e.g. "efficientnet-b0".

    Returns:
      A tuple (width_coefficient, depth_coefficient, resolution, dropout_rate).

    Raises:
      ValueError: if `model_name` is not a known model.
    """
    if model_name not in _SCALING:
        raise ValueError(
            f"Unknown model_name {model_name!r}; valid names: {', '.join(MODEL_NAMES)}"
        )
    return _SCALING[model_name]


def round_filters(filters, width_coefficient, divisor=_DEPTH_DIVISOR):
    """Scales a filter count by the width coefficient.

    The result is a multiple of `divisor` (at least `divisor`) and, because
    rounding to the nearest multiple can lose more than intended on small
    counts, never less than 90% of the exact scaled value.

    Args:
      filters: unscaled number of filters.
      width_coefficient: width multiplier.
      divisor: the result is a multiple of this.

    Returns:
      The scaled number of filters as an int.
    """
    scaled = filters * width_coefficient
    rounded = max(divisor, int(scaled + divisor / 2) // divisor * divisor)
    if rounded < 0.9 * scaled:
        rounded += divisor
    return int(rounded)


def round_repeats(repeats, depth_coefficient):
    """Scales the number of blocks of a stage by the depth coefficient (ceil)."""
    return int(math.ceil(depth_coefficient * repeats))


def stage_table(width_coefficient, depth_coefficient, small_image_model=False):
    """Decodes the stage table for the given scaling.

    Args:
      width_coefficient: width multiplier applied to all filter counts.
      depth_coefficient: depth multiplier applied to all repeat counts.
      small_image_model: use the 32x32-input variant (stride 1 in the second
        and third stages).

    Returns:
      A list of `StageArgs`, one per stage, with scaled filters and repeats.
    """
    stages = []
    for index, stage in enumerate(_STAGES):
        strides = stage.strides
        if small_image_model and index in SMALL_IMAGE_STRIDE1_STAGES:
            strides = 1
        stages.append(
            stage._replace(
                repeats=round_repeats(stage.repeats, depth_coefficient),
                strides=strides,
                input_filters=round_filters(stage.input_filters, width_coefficient),
                output_filters=round_filters(stage.output_filters, width_coefficient),
            )
        )
    return stages


def _sync_batch_norm_value(value):
    """Validates a `sync_batch_norm` value: a bool, or an int group size >= 1.

    Bools stay bools (True = all replicas, False = none) so that descriptions
    written before group sizes existed read back unchanged.
    """
    if isinstance(value, bool):
        return value
    if isinstance(value, numbers.Integral) and value >= 1:
        return int(value)
    raise ValueError(f"sync_batch_norm must be a bool or a replica group size >= 1, got {value!r}")


def architecture_description(
    model_name, num_classes=1000, small_image_model=False, override_params=None
):
    """Resolves a model name and overrides into the network's architecture, JSON-serializable.

    The layers and their settings only; `checkpoints.model_description` adds what
    feeding the network needs (input size, normalization).

    Args:
      model_name: one of `MODEL_NAMES`.
      num_classes: number of output logits.
      small_image_model: use the 32x32-input variant.
      override_params: optional dict with any of `OVERRIDE_KEYS`. A value of
        None means "keep the model's default", so flag values can be passed
        through unfiltered.

    Returns:
      A dict with exactly `DESCRIPTION_KEYS`: the model name, num_classes,
      small_image_model, width/depth coefficients, resolution, dropout_rate,
      stochastic_depth_rate, batch_norm_momentum, batch_norm_epsilon,
      sync_batch_norm (False = per-replica statistics, True = all replicas,
      an int k = groups of k consecutive replicas, see
      `efficientnet_model.batch_norm_group_size`), stem_filters and
      head_filters (scaled), num_blocks (after depth scaling) and stages (a
      list of dicts with the `StageArgs` fields, already scaled).

    Raises:
      ValueError: for an unknown model name or override key, or a
        sync_batch_norm that is neither a bool nor an int >= 1.
    """
    width, depth, resolution, dropout_rate = efficientnet_params(model_name)
    overrides = {k: v for k, v in (override_params or {}).items() if v is not None}
    unknown = sorted(set(overrides) - set(OVERRIDE_KEYS))
    if unknown:
        raise ValueError(
            f"Unknown override_params {unknown}; valid keys: {', '.join(OVERRIDE_KEYS)}"
        )
    params = dict(
        _DEFAULTS,
        width_coefficient=width,
        depth_coefficient=depth,
        dropout_rate=dropout_rate,
        num_classes=num_classes,
    )
    params.update(overrides)
    width = float(params["width_coefficient"])
    depth = float(params["depth_coefficient"])
    stages = stage_table(width, depth, small_image_model)
    return {
        "model_name": model_name,
        "num_classes": int(params["num_classes"]),
        "small_image_model": bool(small_image_model),
        "width_coefficient": width,
        "depth_coefficient": depth,
        "resolution": int(resolution),
        "dropout_rate": float(params["dropout_rate"]),
        "stochastic_depth_rate": float(params["stochastic_depth_rate"]),
        "batch_norm_momentum": float(params["batch_norm_momentum"]),
        "batch_norm_epsilon": float(params["batch_norm_epsilon"]),
        "sync_batch_norm": _sync_batch_norm_value(params["sync_batch_norm"]),
        "stem_filters": round_filters(_STEM_FILTERS, width),
        "head_filters": round_filters(_HEAD_FILTERS, width),
        "num_blocks": sum(s.repeats for s in stages),
        "stages": [s._asdict() for s in stages],
    }


def build_model_from_description(desc, name=None):
    """Builds the Keras model that a description (see `architecture_description`) fixes.

    Args:
      desc: a dict as returned by `architecture_description`, possibly after a JSON
        round trip.
      name: optional Keras model name; defaults to the model name with "-"
        replaced by "_".

    Returns:
      A `keras.Model` mapping normalized float images [N, H, W, 3] to float32
      logits [N, num_classes].

    Raises:
      ValueError: if keys are missing or unknown, a stage lacks a field, or
        sync_batch_norm is neither a bool nor an int >= 1.
    """
    missing = sorted(set(DESCRIPTION_KEYS) - set(desc))
    unknown = sorted(set(desc) - set(DESCRIPTION_KEYS))
    if missing or unknown:
        raise ValueError(
            f"Bad model description: missing keys {missing}, unknown keys {unknown}; "
            f"expected: {', '.join(DESCRIPTION_KEYS)}"
        )
    stages = []
    for stage in desc["stages"]:
        if set(stage) != set(StageArgs._fields):
            raise ValueError(f"Bad stage {stage}; expected fields: {', '.join(StageArgs._fields)}")
        stages.append(StageArgs(**stage))
    return efficientnet_model.efficientnet(
        stages=stages,
        stem_filters=desc["stem_filters"],
        head_filters=desc["head_filters"],
        num_classes=desc["num_classes"],
        dropout_rate=desc["dropout_rate"],
        stochastic_depth_rate=desc["stochastic_depth_rate"],
        batch_norm_momentum=desc["batch_norm_momentum"],
        batch_norm_epsilon=desc["batch_norm_epsilon"],
        sync_batch_norm=desc["sync_batch_norm"],
        name=name or desc["model_name"].replace("-", "_"),
    )


def build_model(model_name, num_classes=1000, small_image_model=False, override_params=None):
    """Builds a named EfficientNet.

    Args:
      model_name: one of `MODEL_NAMES`, e.g. "efficientnet-b0".
      num_classes: number of output logits (an override "num_classes" wins).
      small_image_model: use the 32x32-input variant.
      override_params: optional dict with any of `OVERRIDE_KEYS` (None values
        are ignored).

    Returns:
      A `keras.Model` mapping normalized float images [N, H, W, 3] (any H, W) to
      float32 logits [N, num_classes]. Call it with `training=True` to enable
      batch-statistics BN, dropout and stochastic depth.

    Raises:
      ValueError: for an unknown model name or override key.
    """
    desc = architecture_description(model_name, num_classes, small_image_model, override_params)
    return build_model_from_description(desc)
