"""Image files of other bit depths: 16-bit greyscale read at its real brightness, 32-bit pixels refused."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from cka_probe.data import load_probe_set
from cka_probe.errors import UnreadableImageError


def _gradient_16bit(shape=(32, 48)) -> np.ndarray:
    """A 16-bit ramp over the full range: its mean brightness is one half."""
    return np.linspace(0, 65535, shape[0] * shape[1]).round().astype(np.uint16).reshape(shape)


def test_a_16bit_png_is_read_at_its_real_brightness(tmp_path):
    levels = _gradient_16bit()
    Image.fromarray(levels).save(tmp_path / "ramp.png")
    with Image.open(tmp_path / "ramp.png") as stored:
        assert stored.mode == "I;16" and np.array_equal(np.asarray(stored), levels)  # the file really is 16-bit
    image = load_probe_set(tmp_path, n=1).images[0]
    pixels = np.asarray(image)
    assert image.mode == "RGB" and pixels.dtype == np.uint8
    expected = np.floor(levels.astype(np.float64) * 255.0 / 65535.0 + 0.5)  # nearest 8-bit level of v / 65535
    for channel in range(3):
        np.testing.assert_array_equal(pixels[..., channel], expected)
    assert pixels.mean() / 255 == pytest.approx(levels.mean() / 65535, abs=1 / 255)
    assert pixels.mean() / 255 == pytest.approx(0.5, abs=0.01)  # torchvision's loader gives 0.998 (clipped to white)


def test_8bit_images_are_converted_as_pillow_does(tmp_path):
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (16, 16), dtype=np.uint8), mode="L").save(tmp_path / "grey.png")
    Image.fromarray(rng.integers(0, 256, (16, 16, 4), dtype=np.uint8), mode="RGBA").save(tmp_path / "rgba.png")
    probe = load_probe_set(tmp_path, n=2)
    for image_id, image in zip(probe.image_ids, probe.images):
        with Image.open(tmp_path / image_id) as original:
            assert np.array_equal(np.asarray(image), np.asarray(original.convert("RGB")))


@pytest.mark.parametrize("mode", ["F", "I"])
def test_32bit_pixels_are_refused_in_one_line_naming_the_file(tmp_path, mode):
    values = np.linspace(0, 1, 64).reshape(8, 8)
    array = values.astype(np.float32) if mode == "F" else (values * 1e6).astype(np.int32)
    Image.fromarray(array, mode=mode).save(tmp_path / "deep.tif")
    with pytest.raises(UnreadableImageError, match=r"deep\.tif .*no defined brightness range.*--skip-bad") as info:
        load_probe_set(tmp_path, n=1)
    assert "\n" not in str(info.value)
