from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from PIL import Image

from advkit.data.images import (
    ImageConversionWarning,
    from_uint8_hwc,
    read_image,
    read_image_uint8,
    resize_center_crop,
    to_uint8_hwc,
    write_png,
)
from advkit.errors import ImageReadError, OutputError
from tests.data._fixtures import png16, random_rgb, save


def read_warned(path):
    """Read ``path`` and return (array, the ImageConversionWarning messages raised)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = read_image_uint8(path)
    msgs = [str(w.message) for w in caught if issubclass(w.category, ImageConversionWarning)]
    return out, msgs


# ------------------------------------------------------------------ round trips


def test_png_round_trip_uint8_is_exact_for_odd_sizes(tmp_path):
    for h, w in ((1, 1), (7, 13), (33, 5)):
        img = random_rgb(h, w, seed=h * w)
        path = write_png(tmp_path / f"{h}x{w}.png", img)
        back, msgs = read_warned(path)
        assert back.dtype == np.uint8 and back.shape == (h, w, 3)
        np.testing.assert_array_equal(back, img)
        assert msgs == []


def test_png_round_trip_float_tensor_rounds_and_clamps(tmp_path):
    levels = torch.arange(256, dtype=torch.float32) / 255
    img = levels.view(1, 16, 16).expand(3, 16, 16).clone()
    img[0, 0, 0], img[1, 0, 0], img[2, 0, 0] = -0.4, 1.7, 0.5 / 255 + 1e-4
    write_png(tmp_path / "a.png", img.unsqueeze(0))  # (1, 3, H, W) accepted
    back = read_image(tmp_path / "a.png")
    assert back.shape == (3, 16, 16) and back.dtype == torch.float32
    expected = img.clamp(0, 1)
    expected[2, 0, 0] = 1 / 255
    torch.testing.assert_close(back, expected, atol=1e-6, rtol=0)


def test_to_and_from_uint8_hwc_batches():
    x = torch.from_numpy(random_rgb(6, 5)).permute(2, 0, 1).float() / 255
    batch = torch.stack([x, 1 - x])
    arr = to_uint8_hwc(batch)
    assert arr.shape == (2, 6, 5, 3) and arr.dtype == np.uint8
    np.testing.assert_array_equal(arr[0], random_rgb(6, 5))
    torch.testing.assert_close(from_uint8_hwc(arr), batch, atol=1e-6, rtol=0)
    assert from_uint8_hwc(arr[0]).shape == (3, 6, 5)


@pytest.mark.parametrize(
    "bad",
    [torch.zeros(4, 5, 5), torch.zeros(2, 3, 5, 5), torch.zeros(5, 5, 3), np.zeros((5, 5, 3), np.float32),
     np.zeros((5, 5), np.uint8)],
)  # fmt: skip
def test_write_png_rejects_wrong_shapes_and_dtypes(tmp_path, bad):
    with pytest.raises(ValueError, match=r"\(3, H, W\)|uint8"):
        write_png(tmp_path / "x.png", bad)
    assert list(tmp_path.iterdir()) == []


def test_write_png_rejects_nan(tmp_path):
    img = torch.zeros(3, 4, 4)
    img[0, 1, 1] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        write_png(tmp_path / "x.png", img)


def test_from_uint8_hwc_rejects_float():
    with pytest.raises(ValueError, match="uint8"):
        from_uint8_hwc(np.zeros((4, 4, 3), np.float32))


# ------------------------------------------------------------------ atomic writes and unwritable outputs


def test_failed_write_keeps_old_file_and_leaves_no_temp(tmp_path, monkeypatch):
    dest = write_png(tmp_path / "out.png", random_rgb(4, 4))
    before = dest.read_bytes()

    def half_then_fail(self, fp, format=None, **kw):  # noqa: A002, ANN001
        with open(fp, "wb") as f:
            f.write(b"\x89PNG partial")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(Image.Image, "save", half_then_fail)
    with pytest.raises(OutputError, match="No space left on device") as info:
        write_png(dest, random_rgb(4, 4, seed=1))
    assert str(dest) in str(info.value)
    assert dest.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.png"]


def test_unwritable_destinations_raise_output_error(tmp_path):
    (tmp_path / "a_folder").mkdir()
    with pytest.raises(OutputError, match="folder"):
        write_png(tmp_path / "a_folder", random_rgb(2, 2))
    (tmp_path / "plain.txt").write_text("x")
    with pytest.raises(OutputError, match="plain.txt"):
        write_png(tmp_path / "plain.txt" / "out.png", random_rgb(2, 2))


# ------------------------------------------------------------------ conversions with warnings


def test_rgba_is_composited_on_white(tmp_path):
    rgba = np.zeros((2, 2, 4), np.uint8)
    rgba[..., :3] = (200, 100, 0)
    rgba[..., 3] = [[255, 0], [128, 64]]
    path = save(tmp_path / "t.png", rgba)
    out, msgs = read_warned(path)
    assert out[0, 0].tolist() == [200, 100, 0]
    assert out[0, 1].tolist() == [255, 255, 255]
    expect = np.round((np.array([200, 100, 0]) * 128 + 255 * 127) / 255).astype(int)
    assert out[1, 0].tolist() == expect.tolist()
    assert len(msgs) == 1 and str(path) in msgs[0] and "white" in msgs[0]


def test_opaque_rgba_drops_alpha_and_says_so(tmp_path):
    rgba = np.dstack([random_rgb(3, 4), np.full((3, 4), 255, np.uint8)])
    out, msgs = read_warned(save(tmp_path / "o.png", rgba))
    np.testing.assert_array_equal(out, rgba[..., :3])
    assert len(msgs) == 1 and "opaque" in msgs[0]


def test_greyscale_bilevel_and_palette_become_rgb(tmp_path):
    grey = np.arange(12, dtype=np.uint8).reshape(3, 4) * 20
    out, msgs = read_warned(save(tmp_path / "g.png", grey))
    np.testing.assert_array_equal(out, np.repeat(grey[..., None], 3, axis=2))
    assert len(msgs) == 1 and "greyscale" in msgs[0] and "g.png" in msgs[0]

    Image.fromarray(grey > 100).save(tmp_path / "b.png")  # mode "1"
    out, msgs = read_warned(tmp_path / "b.png")
    assert set(np.unique(out)) == {0, 255} and "bilevel" in msgs[0]

    rgb = random_rgb(5, 6)
    Image.fromarray(rgb).quantize(colors=8).save(tmp_path / "p.png")
    palette_rgb = np.asarray(Image.open(tmp_path / "p.png").convert("RGB"))
    out, msgs = read_warned(tmp_path / "p.png")
    np.testing.assert_array_equal(out, palette_rgb)
    assert len(msgs) == 1 and "palette" in msgs[0]


def test_palette_with_transparency_is_composited(tmp_path):
    im = Image.new("P", (2, 1))
    im.putpalette([10, 20, 30, 40, 50, 60] + [0] * 762)
    im.putdata([0, 1])
    im.info["transparency"] = 1
    im.save(tmp_path / "pt.png", transparency=1)
    out, msgs = read_warned(tmp_path / "pt.png")
    assert out.tolist() == [[[10, 20, 30], [255, 255, 255]]]
    assert "white" in msgs[0]


def test_16bit_images_are_reduced_to_8bit(tmp_path):
    grey = np.array([[0, 257, 65535, 32896]], np.uint16)
    Image.fromarray(grey).save(tmp_path / "g16.png")
    out, msgs = read_warned(tmp_path / "g16.png")
    assert out[0, :, 0].tolist() == [0, 1, 255, 128]
    assert len(msgs) == 1 and "16-bit greyscale" in msgs[0]

    rgb16 = np.random.default_rng(0).integers(0, 65536, (3, 4, 3)).astype(np.uint16)
    (tmp_path / "rgb16.png").write_bytes(png16(rgb16))
    out, msgs = read_warned(tmp_path / "rgb16.png")
    np.testing.assert_array_equal(out, (rgb16 >> 8).astype(np.uint8))
    assert len(msgs) == 1 and "16-bit RGB" in msgs[0]

    # 16-bit greyscale + alpha: Pillow loads it as RGBA; the warning names the file's mode
    la16 = np.stack([rgb16[..., 0], np.full((3, 4), 65535, np.uint16)], axis=-1)
    (tmp_path / "la16.png").write_bytes(png16(la16))
    out, msgs = read_warned(tmp_path / "la16.png")
    np.testing.assert_array_equal(out, np.repeat((rgb16[..., :1] >> 8).astype(np.uint8), 3, axis=2))
    assert len(msgs) == 1 and "16-bit LA image" in msgs[0] and "RGBA" not in msgs[0]


def test_cmyk_jpeg_and_multiframe_gif(tmp_path):
    Image.new("CMYK", (4, 3), (0, 255, 255, 0)).save(tmp_path / "c.jpg", quality=100)
    out, msgs = read_warned(tmp_path / "c.jpg")
    assert out.shape == (3, 4, 3) and out[1, 1, 0] > 200 and out[1, 1, 1] < 60
    assert "CMYK" in msgs[0]

    frames = [Image.new("RGB", (4, 4), c) for c in ((255, 0, 0), (0, 0, 255))]
    frames[0].save(tmp_path / "a.gif", save_all=True, append_images=frames[1:])
    out, msgs = read_warned(tmp_path / "a.gif")
    assert out[0, 0].tolist() == [255, 0, 0]
    assert any("2 frames" in m for m in msgs)


def test_rgb_jpeg_reads_without_warning_and_exif_orientation_is_applied(tmp_path):
    img = Image.fromarray(random_rgb(6, 10))
    img.save(tmp_path / "plain.jpg", quality=95)
    out, msgs = read_warned(tmp_path / "plain.jpg")
    assert out.shape == (6, 10, 3) and msgs == []
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise to display
    img.save(tmp_path / "rot.jpg", quality=95, exif=exif)
    out, msgs = read_warned(tmp_path / "rot.jpg")
    assert out.shape == (10, 6, 3) and msgs == []


# ------------------------------------------------------------------ failures


def _assert_read_error(path, reason):
    with pytest.raises(ImageReadError) as info:
        read_image_uint8(path)
    msg = str(info.value)
    assert str(path) in msg and reason in msg and "\n" not in msg, msg
    with pytest.raises(ImageReadError):
        read_image(path)


def test_missing_folder_and_non_image(tmp_path):
    _assert_read_error(tmp_path / "nope.png", "no such file")
    _assert_read_error(tmp_path, "folder")
    (tmp_path / "notes.png").write_text("this is text\nwith two lines\n")
    _assert_read_error(tmp_path / "notes.png", "not an image")


def test_truncated_and_corrupt_images(tmp_path):
    path = write_png(tmp_path / "ok.png", random_rgb(64, 64))
    data = path.read_bytes()
    (tmp_path / "cut.png").write_bytes(data[: len(data) // 2])
    _assert_read_error(tmp_path / "cut.png", "corrupt or truncated")

    flipped = bytearray(data)
    flipped[len(data) // 2] ^= 0xFF  # breaks the IDAT CRC / deflate stream
    (tmp_path / "flip.png").write_bytes(bytes(flipped))
    _assert_read_error(tmp_path / "flip.png", "corrupt")

    Image.fromarray(random_rgb(64, 64)).save(tmp_path / "ok.jpg")
    jpg = (tmp_path / "ok.jpg").read_bytes()
    (tmp_path / "cut.jpg").write_bytes(jpg[: len(jpg) // 2])
    _assert_read_error(tmp_path / "cut.jpg", "truncated")


def test_decompression_bomb_is_refused(tmp_path, monkeypatch):
    path = write_png(tmp_path / "big.png", np.zeros((40, 40, 3), np.uint8))
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 40 * 40 // 3)  # > 2× the limit is an error
    _assert_read_error(path, "decompression bomb")


def test_float_mode_images_are_refused(tmp_path):
    Image.fromarray(np.ones((3, 3), np.float32)).save(tmp_path / "f.tiff")
    _assert_read_error(tmp_path / "f.tiff", "mode F")


def test_unreadable_file(tmp_path, monkeypatch):
    """A file the user may not read (simulated: root, as in most containers, reads any file)."""
    import builtins

    path = write_png(tmp_path / "locked.png", random_rgb(2, 2))
    real_open = builtins.open

    def refusing_open(file, *args, **kwargs):
        if str(file) == str(path):
            raise PermissionError(13, "Permission denied", str(file))
        return real_open(file, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", refusing_open)
    _assert_read_error(path, "permission denied")


# ------------------------------------------------------------------ resize and center crop


def test_resize_center_crop_keeps_matching_sizes_untouched():
    img = random_rgb(32, 32)
    assert resize_center_crop(img, (32, 32)) is img


def test_resize_center_crop_crops_the_imagenet_margin():
    img = np.zeros((256, 256, 3), np.uint8)
    img[...] = (255, 0, 0)
    img[16:-16, 16:-16] = (0, 255, 0)  # a 16-pixel red frame around green
    out = resize_center_crop(img, (224, 224))  # 256 → short side 256, central 224: frame gone
    assert out.shape == (224, 224, 3)
    assert (out == np.array([0, 255, 0], np.uint8)).all()
    squeezed = resize_center_crop(img, (224, 224), crop_fraction=1.0)  # plain resize keeps it
    assert squeezed[0, 0, 0] > 200 and squeezed[112, 112, 1] == 255


@pytest.mark.parametrize("shape", [(300, 451), (451, 300), (17, 40), (512, 512)])
@pytest.mark.parametrize("size", [(32, 32), (224, 224), (20, 30)])
def test_resize_center_crop_output_shapes(shape, size):
    img = np.full((*shape, 3), 77, np.uint8)
    out = resize_center_crop(img, size)
    assert out.shape == (*size, 3) and out.dtype == np.uint8
    assert (out == 77).all()  # a constant image stays constant


def test_resize_center_crop_rejects_bad_arguments():
    with pytest.raises(ValueError, match="uint8"):
        resize_center_crop(np.zeros((4, 4, 3), np.float32), (2, 2))
    with pytest.raises(ValueError, match="positive"):
        resize_center_crop(np.zeros((4, 4, 3), np.uint8), (0, 2))
