"""Tests of preprocessing.py: decoding, both train/eval paths and normalization."""

import numpy as np
import pytest
import tensorflow as tf

import preprocessing as pp


def _smooth_image(height, width, seed=0):
    """A smooth uint8 image (JPEG-friendly) with distinct content everywhere."""
    rs = np.random.RandomState(seed)
    coarse = rs.randint(0, 256, size=(height // 10 + 2, width // 10 + 2, 3)).astype(np.float32)
    image = tf.image.resize(coarse, [height, width], method="bilinear")
    return tf.cast(tf.round(image), tf.uint8).numpy()


def _random_image(height, width, seed=0):
    return np.random.RandomState(seed).randint(0, 256, (height, width, 3)).astype(np.uint8)


@pytest.fixture(scope="module")
def big_image():
    return _smooth_image(256, 320)


def _inputs(image):
    return {
        "decoded": tf.constant(image),
        "jpeg": tf.io.encode_jpeg(image, quality=95),
        "png": tf.io.encode_png(image),
    }


def _check_shape(out, size):
    assert out.shape == (size, size, 3) and out.dtype == tf.float32
    assert np.all(np.isfinite(out.numpy()))


def _check_uint8_values(out, size):
    """After RandAugment the pixels are uint8 values, cast to float32."""
    _check_shape(out, size)
    values = out.numpy()
    assert values.min() >= 0.0 and values.max() <= 255.0
    np.testing.assert_array_equal(values, np.round(values))


def _edges_image(height, width, seed=0):
    """Random 0/255 blocks: sharp edges on which bicubic resizing overshoots."""
    blocks = np.random.RandomState(seed).randint(0, 2, (height // 8 + 1, width // 8 + 1, 3))
    image = np.kron(blocks, np.ones((8, 8, 1)))[:height, :width] * 255
    return image.astype(np.uint8)


def _tf1_bicubic(image, size):
    """Oracle: the published `tf.image.resize_bicubic` (TF1 defaults), unclipped."""
    images = tf.constant(image[None], tf.float32)
    out = tf.raw_ops.ResizeBicubic(
        images=images, size=[size, size], align_corners=False, half_pixel_centers=False
    )
    return out[0].numpy()


# ---------------------------------------------------------------------------
# Decoding and normalization.


def test_decode_image_jpeg_and_png(big_image):
    inputs = _inputs(big_image)
    png = pp.decode_image(inputs["png"])
    assert png.dtype == tf.uint8 and png.shape == (256, 320, 3)
    np.testing.assert_array_equal(png.numpy(), big_image)
    jpeg = pp.decode_image(inputs["jpeg"]).numpy()
    assert jpeg.shape == (256, 320, 3)
    assert np.abs(jpeg.astype(float) - big_image).mean() < 5.0  # lossy, chroma subsampled


def test_decode_image_gray_png_gets_three_channels():
    gray = np.arange(12, dtype=np.uint8).reshape(3, 4, 1)
    out = pp.decode_image(tf.io.encode_png(gray)).numpy()
    np.testing.assert_array_equal(out, np.repeat(gray, 3, axis=2))


def test_normalize_image():
    mean, std = (10.0, 20.0, 30.0), (2.0, 4.0, 5.0)
    image = np.random.RandomState(0).uniform(0, 255, (4, 5, 3)).astype(np.float32)
    expected = (image - np.array(mean)) / np.array(std)
    out = pp.normalize_image(tf.constant(image), mean, std)
    assert out.dtype == tf.float32
    np.testing.assert_allclose(out.numpy(), expected, rtol=1e-6)
    batch = pp.normalize_image(tf.constant(np.stack([image, image]).astype(np.uint8)), mean, std)
    assert batch.shape == (2, 4, 5, 3)
    np.testing.assert_allclose(
        batch.numpy()[1], (image.astype(np.uint8) - np.array(mean)) / np.array(std), rtol=1e-6
    )


# ---------------------------------------------------------------------------
# ImageNet-style path.


@pytest.mark.parametrize("kind", ["decoded", "jpeg", "png"])
@pytest.mark.parametrize("augment_name", [None, "v1"])
def test_train_224_shapes_and_range(big_image, kind, augment_name):
    image = _inputs(big_image)[kind]
    out = pp.preprocess_image(image, True, 224, augment_name=augment_name, randaug_mag=27)
    if augment_name:
        _check_uint8_values(out, 224)
    else:
        _check_shape(out, 224)


@pytest.mark.parametrize("kind", ["decoded", "jpeg", "png"])
def test_eval_224_is_the_padded_center_crop(big_image, kind):
    out = pp.preprocess_image(_inputs(big_image)[kind], False, 224)
    _check_shape(out, 224)
    # Short side 256 -> crop 224/256 * 256 = 224 at offsets ((256-224+1)//2,
    # (320-224+1)//2) = (16, 48); resizing 224 to 224 changes nothing.
    if kind == "jpeg":
        # Partial JPEG decoding may differ slightly from a full decode at block edges.
        full = pp.decode_image(_inputs(big_image)["jpeg"]).numpy()
        expected = full[16:240, 48:272].astype(np.float32)
        assert np.abs(out.numpy() - expected).mean() < 0.5
    else:
        expected = big_image[16:240, 48:272].astype(np.float32)
        np.testing.assert_array_equal(out.numpy(), expected)
    again = pp.preprocess_image(_inputs(big_image)[kind], False, 224)
    np.testing.assert_array_equal(out.numpy(), again.numpy())


def test_eval_resizes_to_other_sizes(big_image):
    out = pp.preprocess_image(tf.constant(big_image), False, 100)
    _check_shape(out, 100)
    # Center crop 100/132 * 256 = 193 px -> resized: the output keeps the mean.
    crop = big_image[32:225, 64:257].astype(np.float32)
    np.testing.assert_allclose(out.numpy().mean(axis=(0, 1)), crop.mean(axis=(0, 1)), atol=2.0)


@pytest.mark.parametrize("kind", ["decoded", "png"])
def test_eval_224_keeps_the_bicubic_overshoot(kind):
    # Short side 200 -> center crop int(100 / 132 * 200) = 151 px at offsets
    # ((200 - 151 + 1) // 2, (240 - 151 + 1) // 2) = (25, 45), resized to 100.
    image = _edges_image(200, 240)
    out = pp.preprocess_image(_inputs(image)[kind], False, 100).numpy()
    expected = _tf1_bicubic(image[25:176, 45:196], 100)
    np.testing.assert_array_equal(out, expected)
    # Fed to the model (and to the teacher, which uses this path) unclipped.
    assert out.min() < -10.0 and out.max() > 265.0


def test_train_224_without_augment_keeps_the_overshoot():
    image = tf.constant(_edges_image(200, 240))
    outs = [pp.preprocess_image(image, True, 100, seed=seed).numpy() for seed in range(4)]
    for out in outs:
        assert out.min() < 0.0 and out.max() > 255.0
    assert not np.array_equal(outs[0], np.round(outs[0]))  # not truncated to uint8 either


def _capture_randaugment(monkeypatch):
    """Replaces RandAugment by the identity, recording the images it receives."""
    seen = []

    def identity(image, *args, **kwargs):
        seen.append(image.numpy())
        return image

    monkeypatch.setattr(pp.randaugment, "distort_image_with_randaugment", identity)
    return seen


def test_train_224_randaugment_gets_clipped_uint8(monkeypatch):
    image = tf.constant(_edges_image(200, 240))
    seen = _capture_randaugment(monkeypatch)
    for seed in range(3):
        plain = pp.preprocess_image(image, True, 100, seed=seed).numpy()
        augmented = pp.preprocess_image(image, True, 100, augment_name="v1", seed=seed).numpy()
        # Same crop and flip draws: RandAugment sees the un-augmented image
        # clipped to 0..255 and truncated, and nothing else changes afterwards.
        received = seen[-1]
        assert received.dtype == np.uint8
        np.testing.assert_array_equal(received, np.clip(plain, 0, 255).astype(np.uint8))
        np.testing.assert_array_equal(augmented, received.astype(np.float32))
        assert received.min() == 0 and received.max() == 255  # the overshoot was clipped
    assert len(seen) == 3


def test_train_224_seeded_is_deterministic(big_image):
    image = tf.constant(big_image)
    a = pp.preprocess_image(image, True, 224, augment_name="v1", seed=7)
    b = pp.preprocess_image(image, True, 224, augment_name="v1", seed=7)
    np.testing.assert_array_equal(a.numpy(), b.numpy())
    outs = {pp.preprocess_image(image, True, 224, seed=s).numpy().tobytes() for s in range(4)}
    assert len(outs) == 4
    unseeded = {pp.preprocess_image(image, True, 224).numpy().tobytes() for _ in range(4)}
    assert len(unseeded) >= 3


def test_train_224_bytes_and_decoded_take_the_same_crop(big_image):
    inputs = _inputs(big_image)
    for seed in range(3):
        ref = pp.preprocess_image(inputs["decoded"], True, 224, seed=seed).numpy()
        png = pp.preprocess_image(inputs["png"], True, 224, seed=seed).numpy()
        np.testing.assert_array_equal(png, ref)
        # decode_and_crop_jpeg vs full decode of the same JPEG.
        decoded_jpeg = pp.decode_image(inputs["jpeg"])
        full = pp.preprocess_image(decoded_jpeg, True, 224, seed=seed).numpy()
        partial = pp.preprocess_image(inputs["jpeg"], True, 224, seed=seed).numpy()
        assert np.abs(full - partial).mean() < 0.5


def test_train_224_crop_without_flip_is_a_resized_window():
    # A horizontal ramp: any crop keeps rows constant and increasing columns;
    # a flip would make them decreasing.
    ramp = np.tile(np.arange(256, dtype=np.uint8)[None, :, None], (200, 1, 3))
    for seed in range(3):
        out = pp.preprocess_image(tf.constant(ramp), True, 64, random_flip=False, seed=seed)
        out = out.numpy()
        np.testing.assert_allclose(out, np.broadcast_to(out[:1], out.shape), atol=1e-3)
        assert np.all(np.diff(out[0, 2:-2, 0]) > 0)


def test_train_224_in_tf_data(big_image):
    jpeg = _inputs(big_image)["jpeg"]
    ds = tf.data.Dataset.from_tensors(jpeg).repeat(3)
    ds = ds.map(lambda b: pp.preprocess_image(b, True, 224, augment_name="v1", randaug_mag=10))
    outs = list(ds)
    for out in outs:
        _check_uint8_values(out, 224)
    assert len({o.numpy().tobytes() for o in outs}) == 3


# ---------------------------------------------------------------------------
# Small-image path.


def _find_in_padded(out, image, pad=4):
    """Offsets (dy, dx) at which `out` is a window of the reflect-padded `image`."""
    padded = np.pad(image, [[pad, pad], [pad, pad], [0, 0]], mode="reflect")
    size = image.shape[0]
    return [
        (dy, dx)
        for dy in range(2 * pad + 1)
        for dx in range(2 * pad + 1)
        if np.array_equal(padded[dy : dy + size, dx : dx + size], out)
    ]


def test_small_eval_is_the_image_as_is():
    image = _random_image(32, 32)
    for source in (tf.constant(image), tf.io.encode_png(image)):
        out = pp.preprocess_image(source, False, 32, small_image=True)
        assert out.dtype == tf.float32 and out.shape == (32, 32, 3)
        np.testing.assert_array_equal(out.numpy(), image.astype(np.float32))


def test_small_eval_resizes_other_sizes_unclipped():
    image = _edges_image(28, 28)
    out = pp.preprocess_image(tf.constant(image), False, 32, small_image=True).numpy()
    np.testing.assert_array_equal(out, _tf1_bicubic(image, 32))
    assert out.min() < 0.0 and out.max() > 255.0


def test_small_train_clips_only_for_randaugment(monkeypatch):
    image = _edges_image(28, 28)
    resized = _tf1_bicubic(image, 32)
    plain = pp.preprocess_image(
        tf.constant(image), True, 32, small_image=True, random_flip=False, seed=0
    ).numpy()
    assert plain.min() < 0.0 and plain.max() > 255.0
    seen = _capture_randaugment(monkeypatch)
    pp.preprocess_image(tf.constant(image), True, 32, small_image=True, augment_name="v1", seed=0)
    (received,) = seen
    assert received.dtype == np.uint8
    np.testing.assert_array_equal(received, np.clip(resized, 0, 255).astype(np.uint8))


def test_small_train_without_augment_is_padded_crop():
    image = _random_image(32, 32, seed=1)
    offsets = set()
    for seed in range(6):
        out = pp.preprocess_image(
            tf.constant(image), True, 32, small_image=True, random_flip=False, seed=seed
        )
        _check_uint8_values(out, 32)  # a 32x32 uint8 source stays integral
        found = _find_in_padded(out.numpy().astype(np.uint8), image)
        assert found, "not a crop of the reflect-padded image"
        offsets.update(found)
    assert len(offsets) >= 3


def test_small_train_flip():
    image = _random_image(32, 32, seed=2)
    flipped = 0
    for seed in range(8):
        out = pp.preprocess_image(tf.constant(image), True, 32, small_image=True, seed=seed)
        out = out.numpy().astype(np.uint8)
        if _find_in_padded(out, image):
            continue
        assert _find_in_padded(out[:, ::-1], image), "neither a crop nor a flipped crop"
        flipped += 1
    assert 0 < flipped < 8


def test_small_train_v1_adds_gray_cutout():
    black = np.zeros((32, 32, 3), np.uint8)
    for seed in range(4):
        # Zero RandAugment layers: only the extra Cutout (pad 32 // 4 = 8) acts.
        out = pp.preprocess_image(
            tf.constant(black),
            True,
            32,
            small_image=True,
            augment_name="v1",
            randaug_layer=0,
            random_flip=False,
            seed=seed,
        ).numpy()
        assert set(np.unique(out)) == {0.0, 128.0}
        gray_rows = np.flatnonzero((out == 128).all(axis=-1).any(axis=1))
        assert 1 <= len(gray_rows) <= 16 + 4  # a 16-px square, plus reflection at the border
    plain = pp.preprocess_image(tf.constant(black), True, 32, small_image=True, seed=0)
    np.testing.assert_array_equal(plain.numpy(), 0.0)


def test_small_train_v1_shapes_and_tf_data():
    image = _random_image(32, 32, seed=3)
    ds = tf.data.Dataset.from_tensors(tf.io.encode_png(image)).repeat(4)
    ds = ds.map(
        lambda b: pp.preprocess_image(
            b, True, 32, small_image=True, augment_name="v1", randaug_mag=5, random_flip=False
        )
    )
    outs = list(ds)
    for out in outs:
        _check_uint8_values(out, 32)
    assert len({o.numpy().tobytes() for o in outs}) == 4


# ---------------------------------------------------------------------------
# Argument checking.


def test_rejects_unknown_augment_name():
    with pytest.raises(ValueError, match="augment_name"):
        pp.preprocess_image(tf.zeros([8, 8, 3], tf.uint8), True, 8, augment_name="v2")


def test_rejects_float_images():
    with pytest.raises(TypeError):
        pp.preprocess_image(tf.zeros([8, 8, 3], tf.float32), False, 8)
