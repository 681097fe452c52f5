"""Image decoding, train/eval preprocessing and input normalization.

Preprocessed images are float32 [size, size, 3] on the 0..255 pixel scale;
`normalize_image` (mean/std per channel) is applied separately, next to the
model. Bicubic resizing overshoots that range near sharp edges (e.g. -59 or
305), and, as in the published code, the overshoot is fed to the model: only
RandAugment, which works on uint8, gets the image clipped to 0..255 and
truncated first. So eval, the teacher's (eval-preprocessed) view and training
without RandAugment can produce values below 0 and above 255.

Two paths, as in the published code:
  * ImageNet-style (`small_image=False`): Inception-style random crop, bicubic
    resize, random flip, optional RandAugment; eval takes a center crop of
    size / (size + 32) of the short side.
  * Small images (`small_image=True`, 32x32 tasks such as SVHN): optional
    RandAugment plus one extra Cutout, reflect-pad 4 and random crop, optional
    flip; eval uses the image as is.

Every function works inside `tf.data.Dataset.map`. With `seed` (an int or a
shape-[2] int tensor) all random draws are stateless, so the output depends
only on (input, seed).
"""

import tensorflow as tf

import randaugment

IMAGE_SIZE = 224
# The eval center crop covers image_size / (image_size + CROP_PADDING) of the
# short side (224 of 256 at 224).
CROP_PADDING = 32
# Reflect padding of the small-image random crop.
SMALL_IMAGE_PAD = 4

_AUGMENT_NAMES = (None, "", "v1")


def decode_image(image_bytes):
    """Decodes JPEG or PNG (also GIF/BMP) bytes to a uint8 [H, W, 3] image.

    Args:
      image_bytes: scalar tf.string of encoded image bytes.

    Returns:
      uint8 [H, W, 3] tensor.
    """
    image = tf.io.decode_image(image_bytes, channels=3, dtype=tf.uint8, expand_animations=False)
    image.set_shape([None, None, 3])
    return image


def normalize_image(images, mean_rgb, stddev_rgb):
    """Returns `(images - mean_rgb) / stddev_rgb` per channel, in float32.

    Args:
      images: [..., 3] tensor of 0..255 pixels, e.g. [H, W, 3] or [N, H, W, 3].
      mean_rgb: three per-channel means.
      stddev_rgb: three per-channel standard deviations.

    Returns:
      float32 tensor of the same shape.
    """
    images = tf.cast(images, tf.float32)
    mean = tf.constant(mean_rgb, tf.float32, shape=[3])
    stddev = tf.constant(stddev_rgb, tf.float32, shape=[3])
    return (images - mean) / stddev


# ---------------------------------------------------------------------------
# Helpers.


class _Seeds:
    """Hands out independent stateless seeds, or None when unseeded."""

    def __init__(self, seed):
        if seed is not None:
            seed = tf.cast(tf.convert_to_tensor(seed), tf.int64)
            if seed.shape.rank == 0:
                seed = tf.stack([seed, tf.constant(0, tf.int64)])
        self._seed = seed
        self._count = 0

    def next(self):
        if self._seed is None:
            return None
        self._count += 1
        return tf.random.experimental.stateless_fold_in(self._seed, self._count)


def _resize_bicubic(image, image_size):
    """Bicubic resize to [image_size, image_size] -> float32 (may overshoot 0..255).

    Uses the TF1 `resize_bicubic` convention (no half-pixel centers) of the
    published pipeline, so that models see the same resampling it trained and
    evaluated with (and converted published checkpoints keep their accuracy).
    """
    resized = tf.raw_ops.ResizeBicubic(
        images=image[None],
        size=[image_size, image_size],
        align_corners=False,
        half_pixel_centers=False,
    )
    return resized[0]


def _center_crop_window(shape, image_size):
    """[offset_y, offset_x, height, width] of the padded center crop."""
    height, width = shape[0], shape[1]
    ratio = image_size / (image_size + CROP_PADDING)
    crop_size = tf.cast(ratio * tf.cast(tf.minimum(height, width), tf.float32), tf.int32)
    offset_y = ((height - crop_size) + 1) // 2
    offset_x = ((width - crop_size) + 1) // 2
    return tf.stack([offset_y, offset_x, crop_size, crop_size])


def _random_crop_window(shape, image_size, seed):
    """[offset_y, offset_x, height, width] of an Inception-style random crop.

    Samples a crop covering 8%..100% of the area with aspect ratio 3/4..4/3
    (10 attempts). If no attempt succeeds the sampler returns the whole image,
    and then (as in the published code) the eval center crop is used instead.
    """
    kwargs = dict(
        bounding_boxes=tf.constant([0.0, 0.0, 1.0, 1.0], tf.float32, shape=[1, 1, 4]),
        min_object_covered=0.1,
        aspect_ratio_range=(3.0 / 4.0, 4.0 / 3.0),
        area_range=(0.08, 1.0),
        max_attempts=10,
        use_image_if_no_bounding_boxes=True,
    )
    if seed is None:
        begin, size, _ = tf.image.sample_distorted_bounding_box(shape, **kwargs)
    else:
        begin, size, _ = tf.image.stateless_sample_distorted_bounding_box(
            shape, seed=seed, **kwargs
        )
    whole_image = tf.logical_and(tf.equal(size[0], shape[0]), tf.equal(size[1], shape[1]))
    random_window = tf.stack([begin[0], begin[1], size[0], size[1]])
    return tf.where(whole_image, _center_crop_window(shape, image_size), random_window)


def _crop(image, window_fn):
    """Crops a decoded image or encoded bytes to `window_fn(shape)`.

    JPEG bytes are only partially decoded (`decode_and_crop_jpeg`), which is
    much cheaper than decoding the full image for small crops.
    """
    if image.dtype == tf.string:

        def crop_jpeg():
            shape = tf.image.extract_jpeg_shape(image)
            window = window_fn(shape)
            return tf.image.decode_and_crop_jpeg(image, window, channels=3)

        def crop_other():
            return _crop(decode_image(image), window_fn)

        cropped = tf.cond(tf.io.is_jpeg(image), crop_jpeg, crop_other)
        cropped.set_shape([None, None, 3])
        return cropped
    window = window_fn(tf.shape(image))
    return tf.slice(image, [window[0], window[1], 0], [window[2], window[3], 3])


def _as_uint8_image(image):
    """Decodes bytes; passes uint8 images through."""
    if image.dtype == tf.string:
        return decode_image(image)
    return image


def _random_flip(image, seed):
    if seed is None:
        return tf.image.random_flip_left_right(image)
    return tf.image.stateless_random_flip_left_right(image, seed)


def _to_uint8(image):
    """Clips to 0..255 and truncates to uint8, as the published code did before RandAugment."""
    return tf.cast(tf.clip_by_value(image, 0.0, 255.0), tf.uint8)


def _resize_if_needed(image, image_size):
    """A uint8 image as float32 image_size x image_size, bicubic-resized unless it already is.

    The published small-image path only took images of the model's size; other
    sizes are resized here like the ImageNet path, overshoot included.
    """
    shape = tf.shape(image)
    same_size = tf.logical_and(tf.equal(shape[0], image_size), tf.equal(shape[1], image_size))
    image = tf.cond(
        same_size,
        lambda: tf.cast(image, tf.float32),
        lambda: _resize_bicubic(image, image_size),
    )
    return tf.ensure_shape(image, [image_size, image_size, 3])


# ---------------------------------------------------------------------------
# Train / eval.


def _preprocess_for_train(
    image, image_size, augment_name, randaug_mag, randaug_layer, cutout_op, random_flip, seeds
):
    crop_seed = seeds.next()
    image = _crop(image, lambda shape: _random_crop_window(shape, image_size, crop_seed))
    image = _resize_bicubic(image, image_size)
    if random_flip:
        image = _random_flip(image, seeds.next())
    # No clipping otherwise: the published models saw the bicubic overshoot.
    if augment_name == "v1":
        image = randaugment.distort_image_with_randaugment(
            _to_uint8(image),
            randaug_layer,
            randaug_mag,
            use_cutout=cutout_op,
            seed=seeds.next(),
        )
        image = tf.cast(image, tf.float32)
    return tf.ensure_shape(image, [image_size, image_size, 3])


def _preprocess_small_for_train(
    image, image_size, augment_name, randaug_mag, randaug_layer, cutout_op, random_flip, seeds
):
    image = _resize_if_needed(_as_uint8_image(image), image_size)
    if augment_name == "v1":
        image = _to_uint8(image)
        # Ops scaled to the small image: at magnitude 10 translation and
        # Cutout reach size // 8 pixels instead of ImageNet's 100 / 40.
        image = randaugment.distort_image_with_randaugment(
            image,
            randaug_layer,
            randaug_mag,
            cutout_const=image_size // 8,
            translate_const=image_size // 8,
            use_cutout=cutout_op,
            seed=seeds.next(),
        )
        # The published code adds this Cutout whenever RandAugment is on,
        # independently of cutout_op (which only controls the RandAugment op).
        image = randaugment.cutout(
            image, pad_size=image_size // 4, replace=randaugment.FILL_VALUE, seed=seeds.next()
        )
        image = tf.cast(image, tf.float32)
    pad = SMALL_IMAGE_PAD
    image = tf.pad(image, [[pad, pad], [pad, pad], [0, 0]], mode="REFLECT")
    crop_size = [image_size, image_size, 3]
    crop_seed = seeds.next()
    if crop_seed is None:
        image = tf.image.random_crop(image, crop_size)
    else:
        image = tf.image.stateless_random_crop(image, crop_size, crop_seed)
    if random_flip:
        image = _random_flip(image, seeds.next())
    return image


def _preprocess_for_eval(image, image_size, small_image):
    if small_image:
        return _resize_if_needed(_as_uint8_image(image), image_size)
    image = _crop(image, lambda shape: _center_crop_window(shape, image_size))
    # Unclipped, as in the published eval (also the teacher's view).
    return tf.ensure_shape(_resize_bicubic(image, image_size), [image_size, image_size, 3])


def preprocess_image(
    image,
    is_training,
    image_size,
    small_image=False,
    augment_name=None,
    randaug_mag=27,
    randaug_layer=2,
    cutout_op=True,
    random_flip=True,
    seed=None,
):
    """Preprocesses one image for training or evaluation.

    ImageNet-style training: random crop (area 8%..100%, aspect 3/4..4/3, 10
    attempts, else center crop), bicubic resize, random flip, then RandAugment
    on the image clipped to 0..255 and truncated to uint8. Eval: center crop of
    image_size / (image_size + 32) of the short side, bicubic resize. Without
    RandAugment (eval, or augment_name None) nothing is clipped: the bicubic
    overshoot beyond 0..255 reaches the model, as in the published code.

    Small-image training: RandAugment with cutout/translate constants
    image_size // 8, plus one Cutout of half-side image_size // 4 filled with
    128 (both only with augment_name 'v1'), then reflect-pad 4 and random crop
    back to image_size, then random flip. Eval: the image as is. Small images
    of another size are first bicubic-resized to image_size (unclipped unless
    RandAugment follows, as on the ImageNet path).

    Args:
      image: scalar tf.string of encoded JPEG/PNG bytes, or a decoded uint8
        [H, W, 3] tensor.
      is_training: Python bool, training (random) or eval (deterministic).
      image_size: Python int output side length.
      small_image: Python bool, use the small-image (32x32) path.
      augment_name: None (or '') for no RandAugment, 'v1' for RandAugment.
      randaug_mag: RandAugment magnitude (not clipped at 10).
      randaug_layer: number of RandAugment ops per image.
      cutout_op: whether Cutout is among the RandAugment ops.
      random_flip: whether to flip left-right at random when training
        (False for digits, e.g. SVHN).
      seed: optional int or shape-[2] int tensor making all random draws
        stateless (reproducible).

    Returns:
      float32 [image_size, image_size, 3] tensor on the 0..255 pixel scale:
      integer values in 0..255 after RandAugment, otherwise the bicubic
      resize's output, which may lie somewhat below 0 or above 255.

    Raises:
      ValueError: for an unknown augment_name.
      TypeError: if `image` is neither tf.string nor uint8.
    """
    if augment_name not in _AUGMENT_NAMES:
        raise ValueError(f"Unknown augment_name {augment_name!r}; expected None or 'v1'.")
    image = tf.convert_to_tensor(image)
    if image.dtype not in (tf.string, tf.uint8):
        raise TypeError(f"Expected encoded bytes or a uint8 image, got {image.dtype.name}.")
    if not is_training:
        return _preprocess_for_eval(image, image_size, small_image)
    train_fn = _preprocess_small_for_train if small_image else _preprocess_for_train
    return train_fn(
        image,
        image_size,
        augment_name,
        randaug_mag,
        randaug_layer,
        cutout_op,
        random_flip,
        _Seeds(seed),
    )
