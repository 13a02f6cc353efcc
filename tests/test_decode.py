"""Decoding: the fast path matches open_clip's own preprocessing, and bad files fail cleanly."""

from __future__ import annotations

import hashlib
import io
import os
import struct
import threading
import tracemalloc
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, features

from conftest import TinyModel
from pixsift.indexer.decode import (
    default_max_pixels,
    describe_error,
    hash_file,
    is_read_failure,
    is_vanished,
    load_image,
    open_oriented,
)
from pixsift.models.clip import ClipEmbedder
from pixsift.models.naming import resolve_model_spec
from pixsift.regular_file import NotRegularFileError
from sample_photos import make_photo, save


@pytest.fixture(scope="module")
def embedder(tiny_model: TinyModel) -> ClipEmbedder:
    return ClipEmbedder.load(resolve_model_spec(str(tiny_model.config), str(tiny_model.checkpoint)), "cpu")


@pytest.fixture(scope="module")
def phone_photos(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Full-size 12-megapixel camera JPEGs, landscape and portrait."""
    folder = tmp_path_factory.mktemp("phone")
    sizes = [(4032, 3024), (3024, 4032), (4032, 3024), (4032, 3024)]
    return [save(make_photo(seed, size), folder / f"IMG_{seed}.jpg") for seed, size in enumerate(sizes)]


def ours(path: Path, embedder: ClipEmbedder) -> object:
    return load_image(
        str(path),
        preprocess=embedder.preprocess,
        target_size=embedder.image_size,
        max_pixels=default_max_pixels(),
    ).pixels


def correlation(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.ravel() - a.mean(), b.ravel() - b.mean()
    return float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))


def test_reduced_scale_jpeg_decode_matches_open_clip_preprocessing(
    phone_photos: list[Path], embedder: ClipEmbedder
) -> None:
    for path in phone_photos:
        fast = ours(path, embedder)
        reference = embedder.preprocess(Image.open(path))  # open_clip's own transform, full decode
        assert tuple(fast.shape) == tuple(reference.shape) == (3, 224, 224)  # type: ignore[attr-defined]
        assert correlation(fast.numpy(), reference.numpy()) >= 0.999  # type: ignore[attr-defined]
        vectors = embedder.embed_images([fast, reference])
        assert float(vectors[0] @ vectors[1]) >= 0.99


@pytest.mark.slow
def test_default_architecture_embeds_the_fast_path_like_open_clip(
    phone_photos: list[Path], tmp_path_factory: pytest.TempPathFactory
) -> None:
    """ViT-B-32 itself (random weights: 600 MB, so marked slow), with a control that can fail."""
    import open_clip
    import torch

    torch.manual_seed(0)
    checkpoint = tmp_path_factory.mktemp("vit-b-32") / "random.pt"
    torch.save(open_clip.create_model("ViT-B-32").state_dict(), checkpoint)
    vit = ClipEmbedder.load(resolve_model_spec("ViT-B-32", str(checkpoint)), "cpu")

    fast = vit.embed_images([ours(path, vit) for path in phone_photos])
    reference = vit.embed_images([vit.preprocess(Image.open(path)) for path in phone_photos])
    assert fast.shape == (len(phone_photos), 512)
    assert np.all(np.sum(fast * reference, axis=1) >= 0.99)
    other_photo = fast @ reference.T - np.eye(len(phone_photos)) * 2  # off-diagonal pairs only
    assert other_photo.max() < 0.99


def test_different_photos_do_not_correlate(phone_photos: list[Path], embedder: ClipEmbedder) -> None:
    """The control that shows the equivalence check above can fail."""
    first, second = (ours(p, embedder).numpy() for p in phone_photos[:2])  # type: ignore[attr-defined]
    assert correlation(first, second) < 0.5


def test_reduced_scale_decode_is_used_for_large_jpegs(phone_photos: list[Path]) -> None:
    image, width, height, image_format, *_ = open_oriented(
        phone_photos[0].read_bytes(), 224, default_max_pixels()
    )
    assert (width, height, image_format) == (4032, 3024, "JPEG")
    assert min(image.size) >= 224 and image.size[0] <= 4032 // 4  # libjpeg scaled it down


@pytest.mark.parametrize("orientation", [3, 6, 8])
def test_exif_orientation_is_applied_before_embedding(orientation: int, tmp_path: Path) -> None:
    upright = make_photo(5, (800, 600))
    stored = upright.transpose(
        {3: Image.Transpose.ROTATE_180, 6: Image.Transpose.ROTATE_90, 8: Image.Transpose.ROTATE_270}[
            orientation
        ]
    )
    exif = Image.Exif()
    exif[0x0112] = orientation
    path = save(stored, tmp_path / "rotated.jpg", exif=exif.tobytes(), quality=95)

    image, width, height, *_ = open_oriented(path.read_bytes(), 224, default_max_pixels())
    assert (width, height) == (800, 600)  # as a viewer shows it
    expected = np.asarray(upright.resize(image.size), dtype=np.float32)
    assert correlation(np.asarray(image, dtype=np.float32), expected) > 0.95


def test_broken_exif_orientation_keeps_the_image(tmp_path: Path) -> None:
    exif = Image.Exif()
    exif[0x0112] = 42  # not an orientation
    path = save(make_photo(6, (640, 480)), tmp_path / "odd.jpg", exif=exif.tobytes())
    _, width, height, *_ = open_oriented(path.read_bytes(), 224, default_max_pixels())
    assert (width, height) == (640, 480)


# Pillow reads AVIF since 11.3, where its wheels carry the codec.
NEEDS_AVIF = pytest.mark.skipif(not features.check("avif"), reason="this Pillow has no AVIF codec")


@pytest.mark.parametrize(
    ("suffix", "options", "expected_format"),
    [
        (".png", {}, "PNG"),
        (".webp", {"quality": 90}, "WEBP"),
        pytest.param(".avif", {"quality": 90}, "AVIF", marks=NEEDS_AVIF),
        (".gif", {}, "GIF"),
        (".bmp", {}, "BMP"),
        (".tiff", {}, "TIFF"),
    ],
)
def test_formats(
    suffix: str, options: dict[str, object], expected_format: str, tmp_path: Path, embedder: ClipEmbedder
) -> None:
    path = save(make_photo(7, (640, 480)), tmp_path / f"image{suffix}", **options)
    decoded = load_image(
        str(path), preprocess=embedder.preprocess, target_size=224, max_pixels=default_max_pixels()
    )
    assert (decoded.format, decoded.width, decoded.height) == (expected_format, 640, 480)
    assert tuple(decoded.pixels.shape) == (3, 224, 224)


def test_animated_gif_uses_the_first_frame(tmp_path: Path) -> None:
    frames = [make_photo(seed, (320, 240)).convert("P") for seed in (8, 9)]
    path = tmp_path / "anim.gif"
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=100)
    image, *_ = open_oriented(path.read_bytes(), 224, default_max_pixels())
    first = np.asarray(frames[0].convert("RGB"), dtype=np.float32)
    assert correlation(np.asarray(image, dtype=np.float32), first) > 0.99


def test_16_bit_greyscale_keeps_its_contrast(tmp_path: Path) -> None:
    gradient = np.tile(np.linspace(0, 65535, 640), (480, 1)).astype(np.uint16)
    path = tmp_path / "scan.png"
    Image.fromarray(gradient).save(path)
    image, *_ = open_oriented(path.read_bytes(), 224, default_max_pixels())
    pixels = np.asarray(image, dtype=np.float32)[..., 0]
    assert pixels.min() < 5 and pixels.max() > 250  # not clipped to white
    assert correlation(pixels, gradient.astype(np.float32)) > 0.99


def test_32_bit_float_tiff_is_scaled_not_black(tmp_path: Path) -> None:
    gradient = np.tile(np.linspace(0.0, 1.0, 640, dtype=np.float32), (480, 1))
    path = tmp_path / "float.tif"
    Image.fromarray(gradient).save(path)  # mode F, values 0..1, as scientific software writes
    with Image.open(path) as written:
        assert written.mode == "F"
    image, *_ = open_oriented(path.read_bytes(), 224, default_max_pixels())
    pixels = np.asarray(image, dtype=np.float32)[..., 0]
    assert pixels.min() < 5 and pixels.max() > 250
    assert correlation(pixels, gradient) > 0.99


def png_claiming(width: int, height: int) -> bytes:
    """A tiny PNG whose header claims a huge size: a decompression bomb."""
    buffer = io.BytesIO()
    Image.new("RGB", (1, 1)).save(buffer, "PNG")
    data = bytearray(buffer.getvalue())
    ihdr = bytearray(data[12:29])  # chunk type + 13 bytes of header data
    ihdr[4:12] = struct.pack(">II", width, height)
    data[12:29] = ihdr
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(ihdr)))
    return bytes(data)


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", "empty file"),
        (b"hello, I am text", "not an image"),
        (png_claiming(100_000, 100_000), "decompression bomb"),
    ],
)
def test_unreadable_data_raises_with_a_clear_reason(data: bytes, reason: str) -> None:
    with pytest.raises(Exception) as raised:
        open_oriented(data, 224, default_max_pixels())
    assert reason in describe_error(raised.value)


@pytest.mark.parametrize(
    ("head", "reason"),
    [(b"", "not an image"), (png_claiming(100_000, 100_000), "decompression bomb")],
    ids=["no-image", "bomb"],
)
def test_a_huge_file_that_is_no_image_is_refused_without_reading_it(
    tmp_path: Path, embedder: ClipEmbedder, head: bytes, reason: str
) -> None:
    path = tmp_path / "clip.jpg"  # a video misnamed, say: 256 MB (sparse, so cheap to make)
    path.write_bytes(head)
    os.truncate(path, 256 << 20)
    tracemalloc.start()
    try:
        with pytest.raises(Exception) as raised:
            load_image(
                str(path), preprocess=embedder.preprocess, target_size=224, max_pixels=default_max_pixels()
            )
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert reason in describe_error(raised.value)
    assert peak < 4 << 20  # the header only, not the file


def test_a_photo_followed_by_much_more_data_is_indexed_without_reading_it_whole(
    tmp_path: Path, embedder: ClipEmbedder
) -> None:
    photo = save(make_photo(13, (640, 480)), tmp_path / "photo.jpg")
    padded = tmp_path / "padded.jpg"  # the same JPEG, then zeros up to 256 MB (sparse: cheap)
    padded.write_bytes(photo.read_bytes())
    os.truncate(padded, 256 << 20)
    tracemalloc.start()
    try:
        decoded = load_image(
            str(padded), preprocess=embedder.preprocess, target_size=224, max_pixels=default_max_pixels()
        )
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 16 << 20  # decoded from disk and hashed as a stream
    whole = hashlib.sha256()
    with open(padded, "rb") as f:
        while chunk := f.read(8 << 20):
            whole.update(chunk)
    assert decoded.content_hash == whole.hexdigest()
    plain = ours(photo, embedder)
    assert np.array_equal(decoded.pixels.numpy(), plain.numpy())  # type: ignore[attr-defined]
    assert (decoded.width, decoded.height, decoded.format) == (640, 480, "JPEG")


def error_within(seconds: float, call: Callable[[], object], pipe: Path) -> BaseException | None:
    """What `call()` raises, or None; if it still waits after `seconds` (opening a named pipe
    for reading waits for a writer), a writer is opened to release it and the test fails."""
    raised: list[BaseException] = []

    def run() -> None:
        try:
            call()
        except BaseException as exc:  # handed to the test
            raised.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(seconds)
    if thread.is_alive():
        with open(pipe, "wb"):  # a writer that closes at once: the reader sees the end
            pass
        thread.join()
        pytest.fail(f"reading {pipe} waited for a writer")
    return raised[0] if raised else None


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="named pipes are POSIX")
def test_a_named_pipe_is_refused_at_once_not_waited_on(tmp_path: Path) -> None:
    """The scan keeps regular files, but a named pipe may take a file's place before it is
    read: hashing or decoding it must fail at once with a clear reason, not wait forever."""
    pipe = tmp_path / "photo.jpg"
    os.mkfifo(pipe)
    max_pixels = default_max_pixels()
    calls: list[Callable[[], object]] = [
        lambda: hash_file(str(pipe)),
        lambda: load_image(
            str(pipe), preprocess=lambda image, _=None: image, target_size=224, max_pixels=max_pixels
        ),
    ]
    for call in calls:
        error = error_within(10, call, pipe)
        assert isinstance(error, NotRegularFileError)
        assert describe_error(error) == "not a regular file (a named pipe is in its place)"
        assert is_read_failure(error) and not is_vanished(error)  # a file put back is read again
    device = error_within(10, lambda: hash_file(os.devnull), pipe)
    assert device is not None and describe_error(device) == "not a regular file (a device is in its place)"
    folder = error_within(10, lambda: hash_file(str(tmp_path)), pipe)
    assert isinstance(folder, IsADirectoryError) and is_vanished(folder)  # as open() tells it


def test_truncated_jpeg_fails(tmp_path: Path) -> None:
    data = save(make_photo(10, (800, 600)), tmp_path / "whole.jpg").read_bytes()
    with pytest.raises(OSError) as raised:
        open_oriented(data[: len(data) // 2], 224, default_max_pixels())
    assert "truncated" in describe_error(raised.value)


def test_own_pixel_limit(tmp_path: Path) -> None:
    data = save(make_photo(11, (800, 600)), tmp_path / "big.png").read_bytes()
    with pytest.raises(Image.DecompressionBombError) as raised:
        open_oriented(data, 224, max_pixels=100_000)
    assert "800x600" in describe_error(raised.value)


def test_files_are_never_handed_to_exotic_parsers(tmp_path: Path) -> None:
    buffer = io.BytesIO()
    make_photo(12, (64, 64)).save(buffer, "PCX")  # Pillow reads PCX, but pixsift does not
    with pytest.raises(Exception) as raised:
        open_oriented(buffer.getvalue(), 224, default_max_pixels())
    assert "not an image" in describe_error(raised.value)
