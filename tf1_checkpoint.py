"""Reads EfficientNet checkpoints written by the published TF1 (TPUEstimator) code.

The published Noisy Student and EfficientNet checkpoints are name-based TF1
checkpoints. Their variable names come from `tf.layers` scoping, so they are
fixed by the order in which the original network called its layers:

    [<scope>/]efficientnet-bN/stem/conv2d/kernel
    [<scope>/]efficientnet-bN/stem/tpu_batch_normalization/{gamma,beta,moving_mean,moving_variance}
    [<scope>/]efficientnet-bN/blocks_<i>/...
    [<scope>/]efficientnet-bN/head/conv2d/kernel
    [<scope>/]efficientnet-bN/head/tpu_batch_normalization/...
    [<scope>/]efficientnet-bN/head/dense/{kernel,bias}

Blocks are numbered 0, 1, ... in network order across all stages. Inside a
block, `tf.layers` gave each layer class the name `conv2d`, `conv2d_1`, ... in
call order, so a block with an expansion has conv2d (expand), conv2d_1
(project) and batch norms tpu_batch_normalization (expand),
tpu_batch_normalization_1 (depthwise), tpu_batch_normalization_2 (project);
a block without expansion (expand_ratio 1) has conv2d (project) and batch
norms tpu_batch_normalization (depthwise), tpu_batch_normalization_1
(project). Squeeze-and-excitation convs live in the `se` sub-scope as
se/conv2d (reduce) and se/conv2d_1 (expand), both with a bias; the depthwise
kernel is depthwise_conv2d/depthwise_kernel. Kernel layouts ([kh, kw, in, out],
depthwise [kh, kw, in, 1], dense [in, classes]) equal Keras', so values are
copied unchanged.

`<scope>` is empty for the trained model and `teacher_model` for the frozen
teacher that a noisy-student checkpoint also contains. Every variable may have
a `/ExponentialMovingAverage` shadow, which is what the published code
evaluated with; it is preferred unless `use_ema=False`.

Checkpoints are read with `tf.train.load_checkpoint`; no TF1 graph is built.
"""

import dataclasses
import re

import keras
import numpy as np
import tensorflow as tf

EMA_SUFFIX = "/ExponentialMovingAverage"
TEACHER_SCOPE = "teacher_model"

# The batch norm class of the TPU code base; some EfficientNet releases trained
# off-TPU use Keras' plain name instead.
_BN_NAMES = ("tpu_batch_normalization", "batch_normalization")
_STEM_KERNEL = "/stem/conv2d/kernel"
_SCOPE_RE = re.compile(
    r"^(?:(?P<outer>.+)/)?(?P<model>efficientnet-[^/]+)" + re.escape(_STEM_KERNEL) + "$"
)
_BLOCK_LAYER_RE = re.compile(r"^block(?P<stage>\d+)(?P<letters>[a-z]+)_(?P<role>.+)$")
_BLOCK_VAR_RE = re.compile(r"/blocks_(?P<index>\d+)/")

# Order in which the original block called its layers, which fixes the
# `tf.layers` name suffixes: (Keras layer role, TF1 sub-scope).
_BLOCK_CALL_ORDER = (
    ("expand_conv", ""),
    ("expand_bn", ""),
    ("dwconv", ""),
    ("bn", ""),
    ("se_reduce", "se/"),
    ("se_expand", "se/"),
    ("project_conv", ""),
    ("project_bn", ""),
)
_BN_ATTRS = (
    ("gamma", "gamma"),
    ("beta", "beta"),
    ("moving_mean", "moving_mean"),
    ("moving_variance", "moving_variance"),
)


class CheckpointMismatchError(ValueError):
    """A TF1 checkpoint does not fit the model; the message names the first bad variable."""


@dataclasses.dataclass
class VariableSpec:
    """One model weight and the TF1 checkpoint variable that holds its value.

    Attributes:
      tf1_name: checkpoint name without the EMA suffix.
      layer_name: Keras layer name.
      attr: attribute of the Keras layer holding the weight ("kernel", ...).
      variable: the Keras variable.
    """

    tf1_name: str
    layer_name: str
    attr: str
    variable: object


@dataclasses.dataclass
class CheckpointInfo:
    """What a TF1 checkpoint says about its own architecture.

    Attributes:
      scope: variable prefix of the chosen network, e.g. "efficientnet-b0" or
        "teacher_model/efficientnet-b0".
      model_name: the EfficientNet name in the scope, e.g. "efficientnet-b0".
      num_classes: output classes of the head (None if it has no head/dense).
      num_blocks: number of blocks_<i> scopes.
      has_ema: whether `/ExponentialMovingAverage` shadows exist in the scope.
      bn_name: batch norm layer base name used by the checkpoint.
      all_scopes: every network scope found, student first.
    """

    scope: str
    model_name: str
    num_classes: int | None
    num_blocks: int
    has_ema: bool
    bn_name: str
    all_scopes: tuple


@dataclasses.dataclass
class LoadReport:
    """What `load_tf1_checkpoint` did.

    Attributes:
      prefix: checkpoint prefix read.
      info: the checkpoint's `CheckpointInfo`.
      num_loaded: model weights assigned.
      num_ema: of those, taken from an EMA shadow.
      num_raw: of those, taken from the raw variable.
      skipped: TF1 names left out (a head with another class count).
      num_classes: the model's number of classes.
    """

    prefix: str
    info: CheckpointInfo
    num_loaded: int
    num_ema: int
    num_raw: int
    skipped: list
    num_classes: int

    def summary(self):
        """A one-line human-readable account of the load."""
        source = "EMA" if self.num_raw == 0 else ("raw" if self.num_ema == 0 else "mixed EMA/raw")
        text = (
            f"loaded {self.num_loaded} variables ({self.num_ema} EMA, {self.num_raw} raw: "
            f"{source}) from TF1 checkpoint {self.prefix} scope {self.info.scope!r}, "
            f"{self.info.num_blocks} blocks, {self.num_classes} classes"
        )
        if self.skipped:
            has = (
                f"has {self.info.num_classes} classes"
                if self.info.num_classes is not None
                else "has no classifier"
            )
            text += (
                f"; classifier head NOT loaded (the checkpoint {has}): {', '.join(self.skipped)}"
            )
        return text


def _reader(prefix):
    return tf.train.load_checkpoint(prefix)


def is_tf1_checkpoint(prefix):
    """Whether `prefix` is a name-based checkpoint holding an EfficientNet of the TF1 code.

    Args:
      prefix: checkpoint prefix (not a directory).
    """
    try:
        names = _reader(prefix).get_variable_to_shape_map()
    except (tf.errors.OpError, ValueError):
        return False
    return any(_SCOPE_RE.match(name) for name in names)


def _scopes(names):
    """Network scopes in the checkpoint, the trained network before the teacher."""
    found = []
    for name in names:
        match = _SCOPE_RE.match(name)
        if match:
            found.append(name[: -len(_STEM_KERNEL)])
    # A noisy-student checkpoint also holds its frozen teacher; the network
    # that was trained there is the one to load.
    return tuple(sorted(found, key=lambda s: (s.startswith(TEACHER_SCOPE + "/"), s)))


def checkpoint_info(prefix, scope=None):
    """Describes the network stored in a TF1 checkpoint.

    Args:
      prefix: checkpoint prefix.
      scope: network scope to describe; default: the trained network (the one
        not under `teacher_model/`), else the teacher.

    Returns:
      A `CheckpointInfo`.

    Raises:
      ValueError: if the checkpoint holds no TF1 EfficientNet or not `scope`.
    """
    shapes = _reader(prefix).get_variable_to_shape_map()
    scopes = _scopes(shapes)
    if not scopes:
        raise ValueError(
            f"{prefix} holds no TF1 EfficientNet (no variable like "
            f"'efficientnet-b0{_STEM_KERNEL}')."
        )
    if scope is None:
        scope = scopes[0]
    elif scope not in scopes:
        raise ValueError(f"{prefix} has no network scope {scope!r}; it has {list(scopes)}.")
    blocks = set()
    for name in shapes:
        if name.startswith(scope + "/"):
            match = _BLOCK_VAR_RE.search(name[len(scope) :])
            if match:
                blocks.add(int(match.group("index")))
    head = shapes.get(f"{scope}/head/dense/kernel")
    bn_name = next((bn for bn in _BN_NAMES if f"{scope}/stem/{bn}/gamma" in shapes), _BN_NAMES[0])
    return CheckpointInfo(
        scope=scope,
        model_name=scope.rsplit("/", 1)[-1],
        num_classes=int(head[-1]) if head else None,
        num_blocks=len(blocks),
        has_ema=f"{scope}{_STEM_KERNEL}{EMA_SUFFIX}" in shapes,
        bn_name=bn_name,
        all_scopes=scopes,
    )


def _letters_index(letters):
    """Inverse of the Keras block lettering: "a" -> 0, "z" -> 25, "ba" -> 26."""
    index = 0
    for char in letters:
        index = index * 26 + ord(char) - ord("a")
    return index


class _ScopeNamer:
    """Gives layer base names the `tf.layers` suffixes: conv2d, conv2d_1, ... per scope."""

    def __init__(self):
        self._counts = {}

    def __call__(self, scope, base):
        key = scope + base
        count = self._counts.get(key, 0)
        self._counts[key] = count + 1
        return f"{scope}{base}" if count == 0 else f"{scope}{base}_{count}"


def _tf1_layer_class(layer, bn_name):
    """The `tf.layers` base name the original code's layer of this kind got."""
    if isinstance(layer, keras.layers.BatchNormalization):
        return bn_name
    if isinstance(layer, keras.layers.DepthwiseConv2D):
        return "depthwise_conv2d"
    if isinstance(layer, keras.layers.Dense):
        return "dense"
    if isinstance(layer, keras.layers.Conv2D):
        return "conv2d"
    raise CheckpointMismatchError(
        f"Layer {layer.name!r} ({type(layer).__name__}) has weights but no TF1 counterpart."
    )


def _layer_attrs(layer):
    """(Keras attribute, TF1 variable name) pairs of a weighted layer."""
    if isinstance(layer, keras.layers.BatchNormalization):
        return _BN_ATTRS
    if isinstance(layer, keras.layers.DepthwiseConv2D):
        return (("kernel", "depthwise_kernel"),)
    return (("kernel", "kernel"), ("bias", "bias")) if layer.use_bias else (("kernel", "kernel"),)


def variable_specs(model, scope, bn_name=_BN_NAMES[0]):
    """Pairs every weight of `model` with its TF1 checkpoint name, in network order.

    Args:
      model: a Keras EfficientNet of `efficientnet_builder` (Keras-applications
        layer names).
      scope: TF1 network scope, e.g. "efficientnet-b0".
      bn_name: the checkpoint's batch norm base name.

    Returns:
      A list of `VariableSpec`: stem, blocks 0..n-1, head.

    Raises:
      CheckpointMismatchError: if a weighted layer of `model` has no known
        TF1 counterpart.
    """
    stem, head, blocks = [], [], {}
    for layer in model.layers:
        if not layer.weights:
            continue
        if layer.name in ("stem_conv", "stem_bn"):
            stem.append(layer)
        elif layer.name in ("top_conv", "top_bn", "predictions"):
            head.append(layer)
        else:
            match = _BLOCK_LAYER_RE.match(layer.name)
            if not match:
                raise CheckpointMismatchError(
                    f"Layer {layer.name!r} has weights but no TF1 counterpart."
                )
            # Sorting by (stage, repeat) gives the original's global block index.
            key = (int(match.group("stage")), _letters_index(match.group("letters")))
            blocks.setdefault(key, {})[match.group("role")] = layer

    specs = []

    def add_layers(tf1_scope, layers_and_sub_scopes):
        namer = _ScopeNamer()
        for layer, sub_scope in layers_and_sub_scopes:
            tf1_layer = tf1_scope + namer(sub_scope, _tf1_layer_class(layer, bn_name))
            for attr, tf1_attr in _layer_attrs(layer):
                specs.append(
                    VariableSpec(f"{tf1_layer}/{tf1_attr}", layer.name, attr, getattr(layer, attr))
                )

    # model.layers is in call order, which is what fixed the TF1 suffixes.
    add_layers(f"{scope}/stem/", [(layer, "") for layer in stem])
    known_roles = {role for role, _ in _BLOCK_CALL_ORDER}
    for index, key in enumerate(sorted(blocks)):
        roles = blocks[key]
        unknown = sorted(set(roles) - known_roles)
        if unknown:
            names = ", ".join(roles[r].name for r in unknown)
            raise CheckpointMismatchError(f"Layers {names} have weights but no TF1 counterpart.")
        add_layers(
            f"{scope}/blocks_{index}/",
            [(roles[role], sub) for role, sub in _BLOCK_CALL_ORDER if role in roles],
        )
    add_layers(f"{scope}/head/", [(layer, "") for layer in head])
    return specs


def _model_summary(model):
    blocks = {
        m.group("stage") + m.group("letters")
        for m in (_BLOCK_LAYER_RE.match(layer.name) for layer in model.layers)
        if m
    }
    classes = model.get_layer("predictions").units
    return f"the model {model.name!r} has {len(blocks)} blocks and {classes} classes"


def load_tf1_checkpoint(
    model, prefix, use_ema=True, skip_mismatched_head=False, scope=None, what="checkpoint"
):
    """Copies a TF1 EfficientNet checkpoint into `model`.

    All values are read and checked before any is assigned, so a mismatch
    leaves `model` unchanged.

    Args:
      model: a Keras EfficientNet of `efficientnet_builder`.
      prefix: TF1 checkpoint prefix.
      use_ema: take each variable's `/ExponentialMovingAverage` shadow when the
        checkpoint has it (the raw variable otherwise); False always reads the
        raw variables.
      skip_mismatched_head: when the checkpoint's classifier has another number
        of classes, leave the model's `predictions` layer as it is (for
        fine-tuning) instead of failing; reported in the result.
      scope: network scope to read (see `checkpoint_info`); default the
        trained network.
      what: how to call the checkpoint in error messages, e.g. a flag name.

    Returns:
      A `LoadReport`.

    Raises:
      CheckpointMismatchError: a variable is missing or has the wrong shape
        (the message names the first one in network order), or the checkpoint
        has blocks the model lacks.
    """
    reader = _reader(prefix)
    shapes = reader.get_variable_to_shape_map()
    info = checkpoint_info(prefix, scope)
    specs = variable_specs(model, info.scope, info.bn_name)
    num_classes = model.get_layer("predictions").units
    context = (
        f"(the checkpoint holds {info.model_name} with {info.num_blocks} blocks and "
        f"{info.num_classes} classes; {_model_summary(model)})"
    )

    def fail(message):
        raise CheckpointMismatchError(f"{what} {prefix}: {message} {context}")

    head_names = {f"{info.scope}/head/dense/kernel", f"{info.scope}/head/dense/bias"}
    # A checkpoint without classifier (num_classes None) is skipped the same way.
    skip_head = skip_mismatched_head and info.num_classes != num_classes
    values, skipped, num_ema = [], [], 0
    for spec in specs:
        if skip_head and spec.tf1_name in head_names:
            skipped.append(spec.tf1_name)
            continue
        if spec.tf1_name not in shapes:
            fail(f"variable {spec.tf1_name!r} (for {spec.layer_name}.{spec.attr}) is missing")
        expected = list(spec.variable.shape)
        if list(shapes[spec.tf1_name]) != expected:
            hint = ""
            if spec.tf1_name in head_names:
                hint = " (a different class count is only accepted for --init_model_path)"
            fail(
                f"variable {spec.tf1_name!r} has shape {list(shapes[spec.tf1_name])} but "
                f"{spec.layer_name}.{spec.attr} needs {expected}{hint}"
            )
        name = spec.tf1_name
        if use_ema and name + EMA_SUFFIX in shapes:
            name += EMA_SUFFIX
            num_ema += 1
        values.append((spec, reader.get_tensor(name)))

    used_blocks = {
        int(m.group("index"))
        for m in (_BLOCK_VAR_RE.search(s.tf1_name[len(info.scope) :]) for s in specs)
        if m
    }
    extra = sorted(
        name
        for name in shapes
        if name.startswith(info.scope + "/")
        and (m := _BLOCK_VAR_RE.search(name[len(info.scope) :]))
        and int(m.group("index")) not in used_blocks
    )
    if extra:
        fail(f"variable {extra[0]!r} has no counterpart in the model (extra blocks)")

    for spec, value in values:
        spec.variable.assign(np.asarray(value).astype(spec.variable.dtype))
    return LoadReport(
        prefix=prefix,
        info=info,
        num_loaded=len(values),
        num_ema=num_ema,
        num_raw=len(values) - num_ema,
        skipped=skipped,
        num_classes=num_classes,
    )
