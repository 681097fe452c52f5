"""RandAugment "v1" as used by Noisy Student, on uint8 [H, W, 3] images.

RandAugment: https://arxiv.org/abs/1909.13719.

Every op is a public function that takes an already-mapped argument (degrees,
bits, threshold, factor, pixels, ...). `magnitude_to_args` is the single place
where a RandAugment magnitude becomes those arguments, and
`distort_image_with_randaugment` picks and applies the ops.

All randomness comes from TensorFlow random ops, so the functions work eagerly
and inside `tf.data.Dataset.map`. Passing `seed` (an int or a shape-[2] integer
tensor) switches every draw to stateless random ops, which makes the result a
pure function of (image, seed).

Behaviour kept from the published code on purpose, because the published
results were trained with it (see each op's docstring):
  * magnitudes are not clipped at 10, so arguments can leave the valid range;
  * `posterize` with bits outside 1..8 keeps only the top bit;
  * `solarize` thresholds wrap modulo 256 (691 acts as 179, 256 as 0);
  * `contrast` blends towards the constant num_pixels / 256 (clipped to 255),
    not towards the mean gray level;
  * float results are truncated, not rounded, when cast back to uint8;
  * `sharpness` smooths with float32 weights k / 13, so a smoothed value that
    is exactly an integer can land just below it and truncate one lower.
"""

import functools
import math

import tensorflow as tf

# The magnitude scale of the policy: level 10 is the "maximum" of the paper,
# but larger levels are allowed and extrapolate linearly.
MAX_LEVEL = 10.0

# Gray used for pixels uncovered by geometric ops and for Cutout.
FILL_VALUE = (128, 128, 128)

OPS = (
    "AutoContrast",
    "Equalize",
    "Invert",
    "Rotate",
    "Posterize",
    "Solarize",
    "Color",
    "Contrast",
    "Brightness",
    "Sharpness",
    "ShearX",
    "ShearY",
    "TranslateX",
    "TranslateY",
    "SolarizeAdd",
)
CUTOUT_OP = "Cutout"

# Ops whose mapped argument gets a random sign each time they are applied.
SIGNED_OPS = frozenset({"Rotate", "ShearX", "ShearY", "TranslateX", "TranslateY"})


# ---------------------------------------------------------------------------
# Randomness.


def _seed_tensor(seed):
    """Normalizes an int or shape-[2] seed to an int64 [2] tensor."""
    seed = tf.cast(tf.convert_to_tensor(seed), tf.int64)
    if seed.shape.rank == 0:
        seed = tf.stack([seed, tf.constant(0, tf.int64)])
    return tf.ensure_shape(seed, [2])


class _RandomSource:
    """Draws random numbers, statelessly when a seed is given.

    With a seed, the i-th draw uses fold_in(seed, i), so a sequence of draws is
    reproducible. Code that only runs conditionally (a `tf.switch_case` branch
    runs eagerly only when chosen but is always traced in graph mode) must use
    a fresh source seeded with `child_seed()`, so that its draws do not depend
    on what else was traced.
    """

    def __init__(self, seed=None):
        self._seed = None if seed is None else _seed_tensor(seed)
        self._count = 0

    def _next_seed(self):
        seed = tf.random.experimental.stateless_fold_in(self._seed, self._count)
        self._count += 1
        return seed

    def child_seed(self):
        """A seed for an independent source; None if this source is unseeded."""
        return None if self._seed is None else self._next_seed()

    def uniform_int(self, maxval):
        """A scalar int32 uniformly drawn from [0, maxval)."""
        if self._seed is None:
            return tf.random.uniform([], 0, maxval, dtype=tf.int32)
        return tf.random.stateless_uniform([], self._next_seed(), 0, maxval, dtype=tf.int32)

    def sign(self):
        """+1.0 or -1.0 with equal probability."""
        if self._seed is None:
            u = tf.random.uniform([])
        else:
            u = tf.random.stateless_uniform([], self._next_seed())
        return tf.where(u < 0.5, -1.0, 1.0)


# ---------------------------------------------------------------------------
# Helpers.


def _as_image(image):
    image = tf.convert_to_tensor(image)
    if image.dtype != tf.uint8:
        raise TypeError(f"RandAugment ops take uint8 images, got {image.dtype.name}.")
    return image


def blend(image1, image2, factor):
    """Blends two uint8 images: `image1 + factor * (image2 - image1)`.

    factor 0 gives image1, 1 gives image2; factors above 1 extrapolate away from
    image1. The result is clipped to 0..255 and truncated to uint8, as in the
    published TF port of PIL's ImageEnhance.

    Args:
      image1: uint8 image, the "degenerate" end.
      image2: uint8 image of the same shape, the original end.
      factor: float scalar (Python or tensor), >= 0.

    Returns:
      The blended uint8 image.
    """
    image1 = tf.cast(image1, tf.float32)
    image2 = tf.cast(image2, tf.float32)
    factor = tf.cast(factor, tf.float32)
    blended = image1 + factor * (image2 - image1)
    return tf.cast(tf.clip_by_value(blended, 0.0, 255.0), tf.uint8)


def _fill_vector(replace):
    return tf.cast(tf.broadcast_to(tf.convert_to_tensor(replace), [3]), tf.uint8)


def _uniform_fill(replace):
    """The single fill value of `replace` if it is known to be uniform, else None."""
    if isinstance(replace, (int, float)):
        return float(replace)
    if isinstance(replace, (list, tuple)) and len(set(replace)) == 1:
        return float(replace[0])
    return None


def _projective_transform(image, transform, replace):
    """Applies an 8-parameter output->input projective map with nearest sampling.

    Output pixel (x, y) reads input pixel round((a0 x + a1 y + a2),
    (b0 x + b1 y + b2)); pixels that fall outside the input take `replace`.
    """
    image = _as_image(image)
    transform = tf.reshape(tf.cast(tf.stack(transform), tf.float32), [1, 8])
    fill = _uniform_fill(replace)
    if fill is None:
        # A per-channel fill cannot be expressed by the op's scalar fill value:
        # transform an extra all-ones channel filled with 0 and use it as a
        # mask for the pixels that were uncovered.
        images = tf.concat([image, tf.ones_like(image[..., :1])], axis=-1)[None]
        fill = 0.0
    else:
        images = image[None]
    out = tf.raw_ops.ImageProjectiveTransformV3(
        images=images,
        transforms=transform,
        output_shape=tf.shape(image)[:2],
        fill_value=fill,
        interpolation="NEAREST",
        fill_mode="CONSTANT",
    )[0]
    if images.shape[-1] == 4:
        out = tf.where(out[..., 3:] == 0, _fill_vector(replace), out[..., :3])
    out.set_shape(image.shape)
    return out


def _wrap_to_uint8(value):
    """Converts an integer to uint8 modulo 256, as a Python int did in TF1 graphs.

    The published code compared uint8 pixels with Python ints; TensorFlow
    converted those ints to uint8 with wrap-around (691 -> 179, 256 -> 0).
    """
    return tf.cast(tf.math.floormod(tf.cast(value, tf.int32), 256), tf.uint8)


# ---------------------------------------------------------------------------
# Pixel ops.


def autocontrast(image):
    """Stretches each channel linearly so its min maps to 0 and its max to 255.

    Channels with a single value are left unchanged. Results are truncated,
    as in the published TF port of PIL's `ImageOps.autocontrast` (cutoff 0).

    Args:
      image: uint8 [H, W, 3] image.

    Returns:
      The uint8 image after autocontrast.
    """
    image = _as_image(image)
    pixels = tf.cast(image, tf.float32)
    lo = tf.reduce_min(pixels, axis=[0, 1])
    hi = tf.reduce_max(pixels, axis=[0, 1])
    # Flat channels get scale 1 / offset 0, i.e. stay exactly as they are.
    flat = hi <= lo
    scale = tf.where(flat, 1.0, tf.math.divide_no_nan(255.0, hi - lo))
    offset = tf.where(flat, 0.0, -lo * scale)
    out = tf.clip_by_value(pixels * scale + offset, 0.0, 255.0)
    return tf.cast(out, tf.uint8)


def equalize(image):
    """Histogram equalization per channel with PIL's `ImageOps.equalize` rule.

    With `step = (num_pixels - count_of_brightest_value) // 255`, value v maps
    to `(pixels_below_v + step // 2) // step`; a channel with step 0 (e.g. a
    single value) is left unchanged.

    Args:
      image: uint8 [H, W, 3] image.

    Returns:
      The equalized uint8 image.
    """
    image = _as_image(image)
    pixels = tf.reshape(tf.cast(image, tf.int32), [-1, 3])
    # One bincount for all three channels: channel c uses bins 256c..256c+255.
    index = pixels + tf.constant([0, 256, 512], tf.int32)
    hist = tf.math.bincount(tf.reshape(index, [-1]), minlength=768, maxlength=768)
    hist = tf.reshape(hist, [3, 256])
    num_pixels = tf.reduce_sum(hist, axis=1)
    brightest_count = tf.gather(hist, tf.reduce_max(pixels, axis=0), batch_dims=1)
    step = (num_pixels - brightest_count) // 255
    safe_step = tf.maximum(step, 1)[:, None]
    lut = (tf.cumsum(hist, axis=1, exclusive=True) + safe_step // 2) // safe_step
    lut = tf.clip_by_value(lut, 0, 255)
    mapped = tf.gather(tf.reshape(lut, [-1]), index)
    out = tf.where(step[None, :] > 0, mapped, pixels)
    return tf.reshape(tf.cast(out, tf.uint8), tf.shape(image))


def invert(image):
    """Returns `255 - image`.

    Args:
      image: uint8 image.

    Returns:
      The inverted uint8 image.
    """
    return 255 - _as_image(image)


def posterize(image, bits):
    """Keeps the top `bits` bits of every pixel.

    Bits outside 1..8 keep only the top bit (values become 0 or 128). This is
    what the published code did on its CPU input pipeline: the shift `8 - bits`
    was converted to uint8 (wrapping negatives to 248..255) and TensorFlow's
    shift kernels clamp shift amounts to 7. It matters for magnitudes 0..2
    (0 bits) and >= 22.5 (9+ bits, e.g. 10 bits at magnitude 27).

    Args:
      image: uint8 image.
      bits: int scalar (Python or tensor).

    Returns:
      The posterized uint8 image.
    """
    image = _as_image(image)
    bits = tf.cast(bits, tf.int32)
    shift = tf.where((bits >= 1) & (bits <= 8), 8 - bits, 7)
    mask = tf.cast(tf.bitwise.left_shift(255, shift) % 256, tf.uint8)
    return tf.bitwise.bitwise_and(image, mask)


def solarize(image, threshold=128):
    """Inverts every pixel that is >= threshold.

    The threshold is taken modulo 256, as the published code's comparison of
    uint8 pixels with a Python int did: 256 (magnitude 10) inverts every pixel
    and 691 (magnitude 27) acts as 179.

    Args:
      image: uint8 image.
      threshold: int scalar (Python or tensor).

    Returns:
      The solarized uint8 image.
    """
    image = _as_image(image)
    return tf.where(image < _wrap_to_uint8(threshold), image, 255 - image)


def solarize_add(image, addition=0, threshold=128):
    """Adds `addition` to pixels below `threshold`, clipping to 0..255.

    Args:
      image: uint8 image.
      addition: int scalar (Python or tensor); may be negative.
      threshold: int scalar, taken modulo 256 like in `solarize`.

    Returns:
      The uint8 image.
    """
    image = _as_image(image)
    added = tf.cast(image, tf.int32) + tf.cast(addition, tf.int32)
    added = tf.cast(tf.clip_by_value(added, 0, 255), tf.uint8)
    return tf.where(image < _wrap_to_uint8(threshold), added, image)


def color(image, factor):
    """PIL `ImageEnhance.Color`: blends from the grayscale image (factor 0).

    Args:
      image: uint8 [H, W, 3] image.
      factor: float scalar >= 0; 1 returns the image.

    Returns:
      The uint8 image.
    """
    image = _as_image(image)
    gray = tf.image.grayscale_to_rgb(tf.image.rgb_to_grayscale(image))
    return blend(gray, image, factor)


def contrast(image, factor):
    """PIL-like `ImageEnhance.Contrast`, with the published code's gray level.

    The published port meant to blend from the mean gray level but divided the
    pixel count by 256 instead; it blends from a constant image of value
    min(num_pixels / 256, 255) truncated (196 at 224x224, 4 at 32x32). That is
    kept so that trained models see the same noise as the published ones.

    Args:
      image: uint8 [H, W, 3] image.
      factor: float scalar >= 0; 1 returns the image.

    Returns:
      The uint8 image.
    """
    image = _as_image(image)
    shape = tf.shape(image)
    num_pixels = tf.cast(shape[0] * shape[1], tf.float32)
    level = tf.cast(tf.clip_by_value(num_pixels / 256.0, 0.0, 255.0), tf.uint8)
    degenerate = tf.fill(shape, level)
    return blend(degenerate, image, factor)


def brightness(image, factor):
    """PIL `ImageEnhance.Brightness`: blends from black (factor 0).

    Args:
      image: uint8 image.
      factor: float scalar >= 0; 1 returns the image.

    Returns:
      The uint8 image.
    """
    image = _as_image(image)
    return blend(tf.zeros_like(image), image, factor)


def sharpness(image, factor):
    """PIL `ImageEnhance.Sharpness`: blends from a smoothed image (factor 0).

    The smoothed image is the published code's float32 depthwise convolution
    with the kernel [[1,1,1],[1,5,1],[1,1,1]] / 13 on interior pixels, clipped
    to 0..255 and truncated to uint8; the one-pixel border keeps the original
    values. Because 1/13 is not exact in float32, a sum that is an exact
    multiple of 13 can come out just below it and truncate one lower (a flat
    image of 3 smooths to 2); that is kept, so that the noise matches the
    published models'.

    Args:
      image: uint8 [H, W, 3] image.
      factor: float scalar >= 0; 1 returns the image.

    Returns:
      The uint8 image.
    """
    image = _as_image(image)
    # The same ops and constants as the published op (kernel divided by 13
    # before the convolution), so the rounding is bit-for-bit the same.
    kernel = tf.constant([[1, 1, 1], [1, 5, 1], [1, 1, 1]], tf.float32, shape=[3, 3, 1, 1]) / 13.0
    kernel = tf.tile(kernel, [1, 1, 3, 1])
    smoothed = tf.nn.depthwise_conv2d(
        tf.cast(image, tf.float32)[None], kernel, strides=[1, 1, 1, 1], padding="VALID"
    )[0]
    smoothed = tf.cast(tf.clip_by_value(smoothed, 0.0, 255.0), tf.uint8)
    padding = [[1, 1], [1, 1], [0, 0]]
    interior = tf.pad(tf.ones_like(smoothed, dtype=tf.bool), padding)
    degenerate = tf.where(interior, tf.pad(smoothed, padding), image)
    return blend(degenerate, image, factor)


def cutout(image, pad_size, replace=FILL_VALUE, seed=None):
    """Fills a square of side up to 2 * pad_size at a random center with `replace`.

    The center is uniform over all pixels; the square [cy - pad, cy + pad) x
    [cx - pad, cx + pad) is clipped at the image border.
    (Cutout: https://arxiv.org/abs/1708.04552.)

    Args:
      image: uint8 [H, W, 3] image.
      pad_size: int scalar, half the side of the square.
      replace: fill value, an int or three ints.
      seed: optional int or shape-[2] int tensor for a stateless draw.

    Returns:
      The uint8 image with the square filled.
    """
    return _cutout(image, pad_size, replace, _RandomSource(seed))


def _cutout(image, pad_size, replace, rng):
    image = _as_image(image)
    height, width = tf.shape(image)[0], tf.shape(image)[1]
    center_y = rng.uniform_int(height)
    center_x = rng.uniform_int(width)
    pad_size = tf.cast(pad_size, tf.int32)
    rows = tf.range(height)
    cols = tf.range(width)
    in_rows = (rows >= center_y - pad_size) & (rows < center_y + pad_size)
    in_cols = (cols >= center_x - pad_size) & (cols < center_x + pad_size)
    inside = in_rows[:, None, None] & in_cols[None, :, None]
    return tf.where(inside, _fill_vector(replace), image)


# ---------------------------------------------------------------------------
# Geometric ops. Transforms map output coordinates to input coordinates.


def rotate(image, degrees, replace=FILL_VALUE):
    """Rotates the image about its center; positive degrees turn it counterclockwise.

    Args:
      image: uint8 [H, W, 3] image.
      degrees: float scalar angle in degrees.
      replace: fill value of uncovered pixels, an int or three ints.

    Returns:
      The rotated uint8 image (nearest-neighbour sampling).
    """
    image = _as_image(image)
    radians = tf.cast(degrees, tf.float32) * (math.pi / 180.0)
    height = tf.cast(tf.shape(image)[0], tf.float32)
    width = tf.cast(tf.shape(image)[1], tf.float32)
    cos, sin = tf.cos(radians), tf.sin(radians)
    # Offsets that make the rotation keep the image center fixed.
    x_offset = ((width - 1) - (cos * (width - 1) - sin * (height - 1))) / 2.0
    y_offset = ((height - 1) - (sin * (width - 1) + cos * (height - 1))) / 2.0
    transform = [cos, -sin, x_offset, sin, cos, y_offset, 0.0, 0.0]
    return _projective_transform(image, transform, replace)


def _sheared_or_translated(image, amount, index, replace):
    """The identity transform with `amount` at position `index` of its 8 coefficients.

    Coefficients [a0, a1, a2, b0, b1, b2, c0, c1] map output (x, y) to input
    ((a0 x + a1 y + a2) / k, (b0 x + b1 y + b2) / k), k = c0 x + c1 y + 1:
    index 1 shears along x, 3 along y, 2 translates along x, 5 along y.

    Args:
      image: uint8 [H, W, 3] image.
      amount: float scalar shear coefficient or number of pixels.
      index: which coefficient `amount` replaces.
      replace: fill value of uncovered pixels, an int or three ints.

    Returns:
      The transformed uint8 image.
    """
    transform = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0]
    transform[index] = tf.cast(amount, tf.float32)
    return _projective_transform(image, transform, replace)


def shear_x(image, level, replace=FILL_VALUE):
    """Shears along x: output (x, y) reads input (x + level * y, y)."""
    return _sheared_or_translated(image, level, 1, replace)


def shear_y(image, level, replace=FILL_VALUE):
    """Shears along y: output (x, y) reads input (x, y + level * x)."""
    return _sheared_or_translated(image, level, 3, replace)


def translate_x(image, pixels, replace=FILL_VALUE):
    """Shifts content left by `pixels` (right when negative), like PIL's translate.

    Output (x, y) reads input (x + pixels, y).
    """
    return _sheared_or_translated(image, pixels, 2, replace)


def translate_y(image, pixels, replace=FILL_VALUE):
    """Shifts content up by `pixels` (down when negative): output (x, y) reads (x, y + pixels)."""
    return _sheared_or_translated(image, pixels, 5, replace)


# ---------------------------------------------------------------------------
# Policy.


def magnitude_to_args(magnitude, cutout_const=40, translate_const=100):
    """Maps a RandAugment magnitude to each op's argument (before any random sign).

    Linear in magnitude / 10 and not clipped, so magnitudes above 10 give
    arguments beyond the nominal maximum (see `posterize`, `solarize`).

    Args:
      magnitude: Python number, the shared magnitude M.
      cutout_const: Cutout half-side at magnitude 10, in pixels.
      translate_const: translation at magnitude 10, in pixels.

    Returns:
      Dict from op name (`OPS` and `CUTOUT_OP`) to its tuple of arguments.
    """
    level = magnitude / MAX_LEVEL
    enhance = (level * 1.8 + 0.1,)
    return {
        "AutoContrast": (),
        "Equalize": (),
        "Invert": (),
        "Rotate": (level * 30.0,),
        "Posterize": (int(level * 4),),
        "Solarize": (int(level * 256),),
        "Color": enhance,
        "Contrast": enhance,
        "Brightness": enhance,
        "Sharpness": enhance,
        "ShearX": (level * 0.3,),
        "ShearY": (level * 0.3,),
        "TranslateX": (level * float(translate_const),),
        "TranslateY": (level * float(translate_const),),
        "SolarizeAdd": (int(level * 110),),
        "Cutout": (int(level * cutout_const),),
    }


_PIXEL_FUNCS = {
    "AutoContrast": autocontrast,
    "Equalize": equalize,
    "Invert": invert,
    "Posterize": posterize,
    "Solarize": solarize,
    "SolarizeAdd": solarize_add,
    "Color": color,
    "Contrast": contrast,
    "Brightness": brightness,
    "Sharpness": sharpness,
}
_GEOMETRIC_FUNCS = {
    "Rotate": rotate,
    "ShearX": shear_x,
    "ShearY": shear_y,
    "TranslateX": translate_x,
    "TranslateY": translate_y,
}


def available_ops(use_cutout=True):
    """The op names RandAugment chooses from.

    Args:
      use_cutout: whether Cutout is one of them (`--cutout_op`).

    Returns:
      Tuple of op names, `OPS` plus `CUTOUT_OP` when use_cutout.
    """
    return OPS + ((CUTOUT_OP,) if use_cutout else ())


def _apply_op(name, image, args, seed):
    # Every branch starts its own source from the same seed: see `_RandomSource`.
    rng = _RandomSource(seed)
    if name in _PIXEL_FUNCS:
        return _PIXEL_FUNCS[name](image, *args)
    if name in _GEOMETRIC_FUNCS:
        (value,) = args
        return _GEOMETRIC_FUNCS[name](image, rng.sign() * value, FILL_VALUE)
    if name == CUTOUT_OP:
        return _cutout(image, args[0], FILL_VALUE, rng)
    raise ValueError(f"Unknown RandAugment op {name!r}.")


def distort_image_with_randaugment(
    image,
    num_layers,
    magnitude,
    cutout_const=40,
    translate_const=100,
    use_cutout=True,
    seed=None,
):
    """Applies `num_layers` RandAugment ops chosen uniformly at random.

    Each layer picks one of `available_ops(use_cutout)` with equal probability
    (ops may repeat) and always applies it at the shared magnitude; Rotate,
    Shear and Translate get a random sign. Only the chosen op runs
    (`tf.switch_case`), so the cost per image is that of `num_layers` ops.

    Args:
      image: uint8 [H, W, 3] image tensor.
      num_layers: Python int N, number of ops applied in sequence.
      magnitude: Python number M (not clipped at 10).
      cutout_const: Cutout half-side at magnitude 10, in pixels.
      translate_const: translation at magnitude 10, in pixels.
      use_cutout: whether Cutout is among the candidate ops.
      seed: optional int or shape-[2] int tensor; if given, all draws are
        stateless and the output depends only on (image, seed).

    Returns:
      The augmented uint8 image, same shape as `image`.
    """
    image = _as_image(image)
    static_shape = image.shape
    names = available_ops(use_cutout)
    args = magnitude_to_args(magnitude, cutout_const, translate_const)
    rng = _RandomSource(seed)
    for layer in range(num_layers):
        with tf.name_scope(f"randaug_layer_{layer}"):
            op_index = rng.uniform_int(len(names))
            op_seed = rng.child_seed()
            branches = [
                functools.partial(_apply_op, name, image, args[name], op_seed) for name in names
            ]
            image = tf.switch_case(op_index, branches)
            image.set_shape(static_shape)
    return image
