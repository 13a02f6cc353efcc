"""Thumbnails of real image files: what they look like, and what making them costs in memory."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageCms, ImageOps

from conftest import TinyModel
from icc_profiles import ADOBE_RGB
from pixsift import BusyError, ImageError, ImageNotFoundError, thumbnails
from pixsift.thumbnails import JPEG_QUALITY, thumbnail
from serving import indexed_library

LIMIT = 200_000_000  # pixels: the tests' images are all within it


def smooth_image(width: int, height: int, seed: int) -> Image.Image:
    """A photo-like RGB image (smooth colour fields), cheap to make at any size."""
    cells = np.random.default_rng(seed).integers(0, 256, (height // 64 + 2, width // 64 + 2, 3), np.uint8)
    return Image.fromarray(cells).resize((width, height), Image.Resampling.BILINEAR)


def reference(path: Path, size: int) -> Image.Image:
    """What Pillow itself makes of the whole file (upright, RGB, Image.thumbnail), as a JPEG."""
    with Image.open(path) as image:
        upright = ImageOps.exif_transpose(image).convert("RGB")
    upright.thumbnail((size, size))
    encoded = io.BytesIO()
    upright.save(encoded, "JPEG", quality=JPEG_QUALITY)
    return Image.open(encoded)


def mean_difference(a: Image.Image, b: Image.Image) -> float:
    return float(np.abs(np.asarray(a, dtype=np.int16) - np.asarray(b, dtype=np.int16)).mean())


@pytest.mark.parametrize("mode", ["RGB", "RGBA", "L", "P", "LA"])
@pytest.mark.parametrize(("dimensions", "size"), [((2600, 1700), 256), ((900, 3000), 512), ((900, 700), 128)])
def test_a_thumbnail_is_the_image_shrunk_whatever_its_mode(
    tmp_path: Path, mode: str, dimensions: tuple[int, int], size: int
) -> None:
    """Large images are shrunk a band of rows at a time: the thumbnail has the size and the
    look of Pillow's own thumbnail of the whole image."""
    source = tmp_path / "image.png"
    smooth_image(*dimensions, seed=len(mode)).convert(mode).save(source, compress_level=1)
    made = thumbnail(str(source), tmp_path / "thumbnails", 1, size, LIMIT)
    with Image.open(made) as image:
        assert image.format == "JPEG" and image.mode == "RGB"
        expected = reference(source, size)
        assert image.size == expected.size
        assert mean_difference(image, expected) < 1


@pytest.mark.parametrize(("orientation", "suffix"), [(6, ".jpg"), (8, ".png"), (3, ".png")])
def test_a_thumbnail_is_upright(tmp_path: Path, orientation: int, suffix: str) -> None:
    source = tmp_path / f"rotated{suffix}"
    exif = Image.Exif()
    exif[0x0112] = orientation
    smooth_image(3000, 1000, seed=orientation).save(source, exif=exif.tobytes())
    made = thumbnail(str(source), tmp_path / "thumbnails", 1, 300, LIMIT)
    with Image.open(made) as image:
        expected = reference(source, 300)
        assert image.size == expected.size == ((100, 300) if orientation in (6, 8) else (300, 100))
        assert mean_difference(image, expected) < 3  # a JPEG's: decoded at reduced scale


@pytest.mark.parametrize(("dimensions", "size"), [((300, 200), 64), ((3000, 2000), 256)])
@pytest.mark.parametrize("kind", ["16-bit PNG", "float TIFF"])
def test_a_thumbnail_of_a_16_bit_or_float_image_keeps_its_tones(
    tmp_path: Path, kind: str, dimensions: tuple[int, int], size: int
) -> None:
    """Scans and scientific images: Pillow's own conversion clips 16-bit values above 255 to
    white (a grey ramp's thumbnail was almost all white) and casts floats of 0..1 to black."""
    width, height = dimensions
    ramp = np.tile(np.linspace(0.0, 1.0, width), (height, 1))
    if kind == "16-bit PNG":
        source = tmp_path / "scan.png"
        Image.fromarray((ramp * 65535).astype(np.uint16)).save(source)
    else:
        source = tmp_path / "measure.tif"
        Image.fromarray(ramp.astype(np.float32)).save(source)
    with Image.open(thumbnail(str(source), tmp_path / "thumbnails", 1, size, LIMIT)) as made:
        grey = np.asarray(made.convert("L"), dtype=np.float64)
    assert grey.shape == (round(height * size / width), size)
    assert grey[:, :3].mean() < 10 and grey[:, -3:].mean() > 245  # black to white, as the ramp
    assert abs(grey[:, size // 2].mean() - 128) < 10


# Run in a process of its own, so that its peak memory is the thumbnails' alone.
MEASURE = textwrap.dedent(
    """
    import resource, sys, threading
    from pathlib import Path
    from PIL import Image
    import pixsift.thumbnails as thumbnails

    source, cache = sys.argv[1], Path(sys.argv[2])
    thumbnails.DECODE_BUDGET_BYTES = 1  # no room for two at once: each runs alone
    Image.open(source).close()  # Pillow's plugins loaded before the baseline
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    failed = []

    def make(image_id):
        try:
            thumbnails.thumbnail(source, cache, image_id, 256, 200_000_000)
        except Exception as exc:
            failed.append(repr(exc))

    threads = [threading.Thread(target=make, args=(image_id,)) for image_id in range(1, 5)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    grown = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
    print(grown * 1024, len(list(cache.glob("*/256-*.jpg"))), failed)
    """
)


def test_thumbnails_of_large_pngs_take_one_decoded_copy_at_a_time(tmp_path: Path) -> None:
    """A PNG cannot be decoded at reduced scale as a JPEG can: a thumbnail decoded it whole and
    then made two more full-size copies (upright, RGB), about 3 x 550 MB for 12,000 x 12,000
    pixels, and any number of requests did so at once. Four thumbnails made at once by four
    threads now take about one decoded image (4 bytes a pixel) at the peak."""
    source = tmp_path / "large.png"
    width, height = 6000, 4000
    smooth_image(width, height, seed=7).save(source, compress_level=1)
    decoded = width * height * 4  # Pillow keeps RGB in 4 bytes a pixel
    measured = subprocess.run(
        [sys.executable, "-c", MEASURE, str(source), str(tmp_path / "thumbnails")],
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    grown, made, failed = measured.stdout.split(" ", 2)
    assert (int(made), failed.strip()) == (4, "[]")
    # one decoded copy and a band of rows being converted; it was 3 copies for each thread
    assert int(grown) < 1.5 * decoded, f"peak memory grew by {int(grown) / 2**20:.0f} MiB"


def test_a_thumbnail_made_while_its_image_is_deleted_leaves_nothing_behind(
    photos: Path, tmp_path: Path, tiny_model: TinyModel
) -> None:
    """The delete removed the image's cache folder while its thumbnail was being decoded; the
    thumbnail was then written into a folder made anew, kept for an image gone for good."""
    library = indexed_library(tmp_path / "library", photos, tiny_model)
    image_id = library.search("x", k=1)[0].id
    outcome: list[BaseException | Path] = []

    def make() -> None:
        try:
            outcome.append(library.thumbnail(image_id, 200))
        except BaseException as exc:
            outcome.append(exc)

    # Room for no other decode: the thumbnail waits there, its image looked up, until released.
    with thumbnails._DECODES.room_for(thumbnails.DECODE_BUDGET_BYTES):
        maker = threading.Thread(target=make)
        maker.start()
        deadline = time.monotonic() + 60
        while thumbnails._DECODES._waiting < 1:  # its image looked up, waiting to decode
            assert maker.is_alive() and time.monotonic() < deadline, outcome
            time.sleep(0.01)
        library.delete(image_id)
    maker.join(timeout=60)
    assert len(outcome) == 1 and isinstance(outcome[0], ImageNotFoundError), outcome
    assert not (library.path / "thumbnails" / str(image_id)).exists()
    library.close()


def test_thumbnails_waiting_for_room_to_decode_are_bounded(
    photos: Path, tmp_path: Path, tiny_model: TinyModel
) -> None:
    """Each thumbnail waiting for room among the large decodes under way holds its thread (in
    the service, a worker thread that searches need too) for up to 30 s: past a few waiting,
    one more is refused at once as busy, and the waiting ones are made once room is freed."""
    library = indexed_library(tmp_path / "library", photos, tiny_model)
    image_id = library.search("x", k=1)[0].id
    made: list[Path | BaseException] = []

    def make(size: int) -> None:
        try:
            made.append(library.thumbnail(image_id, size))
        except BaseException as exc:
            made.append(exc)

    with thumbnails._DECODES.room_for(thumbnails.DECODE_BUDGET_BYTES):  # no room for another
        waiting = [threading.Thread(target=make, args=(100 + n,)) for n in range(thumbnails.MAX_WAITING)]
        for thread in waiting:
            thread.start()
        deadline = time.monotonic() + 60
        while thumbnails._DECODES._waiting < thumbnails.MAX_WAITING:  # each one looked its image up
            assert time.monotonic() < deadline
            time.sleep(0.05)
        with pytest.raises(BusyError, match="try again shortly"):
            library.thumbnail(image_id, 99)
        assert all(thread.is_alive() for thread in waiting)  # refused at once, not after waiting
    for thread in waiting:
        thread.join(timeout=60)
    assert len(made) == thumbnails.MAX_WAITING and all(
        isinstance(path, Path) and path.is_file() for path in made
    )
    assert library.thumbnail(image_id, 99).is_file()  # room again
    library.close()


def colour_of(thumbnail_path: Path) -> str:
    with Image.open(thumbnail_path) as image:
        red, _, blue = image.convert("RGB").resize((1, 1)).tobytes()
    return "red" if red > blue else "blue"


@pytest.mark.parametrize("loss", ["deleted", "emptied"])
def test_a_library_made_anew_does_not_show_the_old_ones_thumbnails(
    tmp_path: Path, tiny_model: TinyModel, loss: str
) -> None:
    """library.db deleted or left empty, the rest left: the new database gives ids from 1 again,
    so a thumbnail cached for the old image 1 was served for the new image 1 whenever the two
    files had the same size and modification time (uncompressed images of one size, copied
    from a camera card with its times kept)."""
    red, blue = tmp_path / "Red", tmp_path / "Blue"
    for folder, colour in ((red, (255, 0, 0)), (blue, (0, 0, 255))):
        folder.mkdir()
        Image.new("RGB", (64, 48), colour).save(folder / "photo.bmp")
        os.utime(folder / "photo.bmp", ns=(10**18, 10**18))
    library_dir = tmp_path / "library"
    with indexed_library(library_dir, red, tiny_model) as library:
        assert colour_of(library.thumbnail(1, 32)) == "red"
    if loss == "deleted":
        (library_dir / "library.db").unlink()
    else:
        (library_dir / "library.db").write_bytes(b"")
    with indexed_library(library_dir, blue, tiny_model) as library:
        assert library.image(1).path == str(blue / "photo.bmp")
        assert colour_of(library.thumbnail(1, 32)) == "blue"  # not the old image's red


def test_a_thumbnail_of_an_emptied_file_says_empty_file_as_indexing_does(
    tmp_path: Path, tiny_model: TinyModel
) -> None:
    """A file left with no bytes (a copy cut short, a sync that truncated it) was "not an image
    format pixsift reads (or a damaged file)" to its thumbnail, and "empty file" to indexing."""
    photos = tmp_path / "photos"
    photos.mkdir()
    smooth_image(64, 48, seed=1).save(photos / "photo.jpg")
    with indexed_library(tmp_path / "library", photos, tiny_model) as library:
        (photos / "photo.jpg").write_bytes(b"")
        with pytest.raises(ImageError) as refused:
            library.thumbnail(1, 32)
        assert str(refused.value) == f"Cannot read image {photos / 'photo.jpg'}: empty file"
        library.index(photos, model=str(tiny_model.config), pretrained=str(tiny_model.checkpoint))
        assert [failure.error for failure in library.failures()] == ["empty file"]


SRGB = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB"))


def as_seen(image: Image.Image) -> Image.Image:
    """`image` in sRGB, as a colour-managed viewer (a browser) shows it: by its profile, if any."""
    profile = image.info.get("icc_profile")
    if not profile:
        return image.convert("RGB")
    return in_srgb(image, profile)


def in_srgb(image: Image.Image, profile: bytes) -> Image.Image:
    source = ImageCms.ImageCmsProfile(io.BytesIO(profile))
    return ImageCms.buildTransform(source, SRGB, "RGB", "RGB").apply(image.convert("RGB"))


@pytest.mark.parametrize("kind", ["JPEG", "PNG", "palette PNG", "large PNG"])
def test_a_thumbnail_of_a_wide_gamut_photo_shows_its_colours(tmp_path: Path, kind: str) -> None:
    """A photo in Adobe RGB (or a phone's Display P3) names its colour space in an ICC profile.
    Its thumbnail, a JPEG without a profile, kept the pixel values as stored: read as sRGB, as
    every viewer reads an untagged JPEG, its greens and reds were duller than the photo's."""
    width = 3000 if kind == "large PNG" else 600  # shrunk a band at a time
    photo = smooth_image(width, width * 2 // 3, seed=7)
    if kind == "palette PNG":
        photo = photo.quantize(64)
    source = tmp_path / ("photo.jpg" if kind == "JPEG" else "photo.png")
    photo.save(source, icc_profile=ADOBE_RGB, quality=95)  # PNG: no quality, a lossless copy
    made = thumbnail(str(source), tmp_path / "thumbnails", 1, 200, LIMIT)
    with Image.open(made) as image:
        shown = as_seen(image)
    # The photo as a colour-managed viewer shows it, and what a thumbnail of that looks like
    seen = tmp_path / "seen.png"
    in_srgb(photo, ADOBE_RGB).save(seen)
    assert mean_difference(shown, reference(seen, 200)) < 3  # JPEG's losses, on saturated colours
    assert mean_difference(shown, reference(source, 200)) > 8  # the colours as stored, as it had them


def test_a_thumbnail_keeps_the_colours_of_a_photo_with_a_damaged_or_non_rgb_profile(tmp_path: Path) -> None:
    """A profile that cannot be read, or one of another colour space than the thumbnail's RGB
    (a CMYK photo's, converted to RGB by formula), leaves the colours as they were made before."""
    photo = smooth_image(600, 400, seed=8)
    cases = {
        "damaged.jpg": (photo, ADOBE_RGB[:200]),
        "cmyk.jpg": (photo.convert("CMYK"), ADOBE_RGB[:16] + b"CMYK" + ADOBE_RGB[20:]),
        "grey.jpg": (photo.convert("L"), ADOBE_RGB),  # an RGB profile on grey pixels: not theirs
    }
    for name, (image, profile) in cases.items():
        image.save(tmp_path / name, quality=95)
        image.save(tmp_path / f"tagged-{name}", quality=95, icc_profile=profile)
        plain = thumbnail(str(tmp_path / name), tmp_path / "thumbnails", 1, 200, LIMIT)
        tagged = thumbnail(str(tmp_path / f"tagged-{name}"), tmp_path / "thumbnails", 2, 200, LIMIT)
        with Image.open(plain) as expected, Image.open(tagged) as made:
            assert "icc_profile" not in made.info
            assert mean_difference(made, expected) < 0.5, name


def test_thumbnails_cached_by_an_earlier_pixsift_are_made_anew(tmp_path: Path, tiny_model: TinyModel) -> None:
    """pixsift changed how thumbnails look (transparent areas over white, wide-gamut colours to
    sRGB), but a thumbnail cached before, named only by the file's size and time, went on being
    served as it was: a transparent logo on black, in a browser too (its ETag was the same)."""
    photos = tmp_path / "photos"
    photos.mkdir()
    logo = np.zeros((48, 64, 4), np.uint8)
    logo[12:36, 16:48] = (0, 0, 255, 255)  # a blue square; black under the transparent rest
    Image.fromarray(logo, "RGBA").save(photos / "logo.png")
    with indexed_library(tmp_path / "library", photos, tiny_model) as library:
        made = library.thumbnail(1, 32)
        stat = (photos / "logo.png").stat()
        # What an earlier pixsift left in the cache: its name, its black background.
        earlier = made.with_name(f"32-{stat.st_size}-{stat.st_mtime_ns}.jpg")
        made.rename(earlier)
        Image.fromarray(logo[..., :3]).resize((32, 24)).save(earlier)
        again = library.thumbnail(1, 32)
        assert again.name == made.name and not earlier.exists()  # made anew, the old one pruned
        assert min(Image.open(again).convert("RGB").getpixel((0, 0))) > 240  # type: ignore[arg-type]
