"""Colour management: images tagged with an ICC profile other than sRGB (Display P3, Adobe RGB,
CMYK, grey) are indexed, and shown as thumbnails, in their colours converted to sRGB; untagged
and sRGB images keep exactly the pixels they had. For the model, RGB and grey images are
converted once resized to its input, and embed as if converted before."""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageCms, ImageOps

from conftest import TinyModel
from icc_profiles import (
    ADOBE_RGB,
    ADOBE_RGB_PRIMARIES,
    DISPLAY_P3,
    DISPLAY_P3_PRIMARIES,
    PRINT_CMYK,
    SRGB_PRIMARIES,
    gray_profile,
    tag_jpeg,
)
from pixsift import colour
from pixsift.indexer.decode import default_max_pixels, open_oriented
from pixsift.models.clip import ClipEmbedder
from pixsift.models.embedder import Embedder
from pixsift.models.loading import load_embedder
from pixsift.models.naming import resolve_model_spec
from pixsift.models.pixels import PixelConfig, resize_and_crop
from pixsift.thumbnails import thumbnail
from sample_photos import make_photo
from serving import indexed_library
from test_engines import image_vectors

SRGB_PROFILE = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
# Saturated colours inside sRGB's gamut in every space tested (so none is clipped), and greys.
PATCHES = [(200, 60, 50), (70, 170, 60), (60, 80, 190), (220, 200, 70), (128, 128, 128), (255, 255, 255)]
# CMYK inks: red (magenta and yellow), green (cyan and yellow), blue (cyan and magenta), paper.
CMYK_PATCHES = [(0, 255, 255, 0), (255, 0, 255, 0), (255, 255, 0, 0), (0, 0, 0, 0)]


def patches(colours: Sequence[tuple[int, ...]], mode: str = "RGB", side: int = 64) -> Image.Image:
    """A row of flat squares, `side` pixels each, one per colour."""
    image = Image.new(mode, (side * len(colours), side))
    for number, value in enumerate(colours):
        image.paste(value, (number * side, 0, (number + 1) * side, side))
    return image


def centres(image: Image.Image, count: int) -> list[tuple[int, ...]]:
    """The colour at the centre of each of `count` squares in a row."""
    side = image.width // count
    return [image.getpixel((number * side + side // 2, image.height // 2)) for number in range(count)]  # type: ignore[misc]


def encoded(image: Image.Image, kind: str, profile: bytes | None = None) -> bytes:
    out = io.BytesIO()
    image.save(out, kind, quality=95, **({"icc_profile": profile} if profile else {}))
    return out.getvalue()


def decoded(data: bytes) -> Image.Image:
    return open_oriented(data, 224, default_max_pixels()).image


def expected_srgb(
    value: tuple[int, ...], primaries: list[tuple[float, float, float]], gamma: float
) -> np.ndarray:
    """The sRGB (0..255) of an RGB colour in a matrix-and-gamma space, worked out here (not by
    LittleCMS): to linear light, to XYZ by its primaries, back by sRGB's, sRGB's curve."""
    srgb = np.array(SRGB_PRIMARIES).T  # columns: r, g, b
    linear = (np.array(value) / 255.0) ** gamma
    out = np.linalg.solve(srgb, np.array(primaries).T @ linear).clip(0, 1)
    encoded = np.where(out <= 0.0031308, out * 12.92, 1.055 * out ** (1 / 2.4) - 0.055)
    return np.asarray(encoded * 255)


@pytest.mark.parametrize(
    ("profile", "primaries", "gamma"),
    # Both curves a gamma of 2.2 as ICC stores it, in 256ths
    [(DISPLAY_P3, DISPLAY_P3_PRIMARIES, 563 / 256), (ADOBE_RGB, ADOBE_RGB_PRIMARIES, 563 / 256)],
    ids=["Display P3", "Adobe RGB"],
)
@pytest.mark.parametrize("kind", ["PNG", "JPEG"])
def test_a_wide_gamut_colour_is_read_as_its_srgb_value(
    profile: bytes, primaries: list[tuple[float, float, float]], gamma: float, kind: str
) -> None:
    """Read as if sRGB, a P3 or Adobe RGB photo's saturated colours came out duller than they
    are, to the model and in thumbnails. A large JPEG is converted after its reduced-scale decode."""
    side = 1000 if kind == "JPEG" else 64  # a JPEG large enough to be decoded at reduced scale
    untagged = encoded(patches(PATCHES, side=side), kind)
    image = decoded(
        tag_jpeg(untagged, profile) if kind == "JPEG" else encoded(patches(PATCHES), kind, profile)
    )
    if kind == "JPEG":
        assert image.width < 6 * side  # decoded at reduced scale
    stored = centres(decoded(untagged), len(PATCHES))  # what JPEG kept of each colour
    for got, value in zip(centres(image, len(PATCHES)), stored, strict=True):
        want = expected_srgb(value, primaries, gamma)
        assert np.abs(np.array(got) - want).max() <= 2, (value, got, want)
    assert centres(image, len(PATCHES))[0] != stored[0]  # not as stored


def test_cmyk_red_stays_red_and_a_cmyk_profile_is_applied() -> None:
    """Pillow writes CMYK JPEGs as Adobe's tools do (inverted, with an Adobe marker): read back,
    red is red, green green, paper white. With a profile, its inks decide the colours: this
    one's magenta and yellow print a red of 93%, not the formula's pure red."""
    plain = encoded(patches(CMYK_PATCHES, "CMYK"), "JPEG")
    with Image.open(io.BytesIO(plain)) as stored:
        assert stored.mode == "CMYK" and "adobe" in stored.info  # Adobe-style, inverted CMYK
    want = [(255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 255)]
    for got, colour_ in zip(centres(decoded(plain), 4), want, strict=True):
        assert np.abs(np.subtract(got, colour_)).max() <= 4, (got, colour_)
    printed = centres(decoded(encoded(patches(CMYK_PATCHES, "CMYK"), "JPEG", PRINT_CMYK)), 4)
    # The profile's inks (see icc_profiles.PRINT_INKS), multiplied on white paper
    want = [(237, 0, 0), (0, 165, 0), (0, 0, 132), (255, 255, 255)]
    for got, colour_ in zip(printed, want, strict=True):
        assert np.abs(np.subtract(got, colour_)).max() <= 4, (got, colour_)


def test_a_grey_image_is_converted_by_its_grey_profile() -> None:
    """A scan in a grey space with a flatter curve than sRGB's (gamma 1.8): its middle grey is
    lighter in sRGB. The image comes out as RGB greys."""
    image = decoded(encoded(patches([(64,), (128,), (192,)], "L"), "PNG", gray_profile("Gray 1.8", 1.8)))
    greys = centres(image, 3)
    assert all(r == g == b for r, g, b in greys)
    assert [r for r, _, _ in greys] == pytest.approx(
        [round(255 * (v / 255) ** (1.8 / 2.2)) for v in (64, 128, 192)], abs=4
    )


def reference_decode(data: bytes) -> np.ndarray:
    """How pixsift decoded every image before colour management, step by step."""
    with Image.open(io.BytesIO(data)) as image:
        image.draft("RGB", (224, 224))
        image.load()
        return np.asarray(ImageOps.exif_transpose(image).convert("RGB"))


@pytest.mark.parametrize("kind", ["JPEG", "PNG"])
def test_untagged_and_srgb_images_keep_exactly_their_pixels(kind: str) -> None:
    """An sRGB profile (as most cameras, editors and browsers tag their files) is a no-op: the
    pixels are the very bytes decoded without it, never a round trip through LittleCMS."""
    rng = np.random.default_rng(3)
    photo = Image.fromarray(rng.integers(0, 256, (600, 800, 3), dtype=np.uint8))
    untagged = encoded(photo, kind)
    tagged = tag_jpeg(untagged, SRGB_PROFILE) if kind == "JPEG" else encoded(photo, kind, SRGB_PROFILE)
    with Image.open(io.BytesIO(tagged)) as image:
        assert image.info["icc_profile"] == SRGB_PROFILE
    today = reference_decode(untagged)
    assert np.array_equal(np.asarray(decoded(untagged)), today)
    assert np.array_equal(np.asarray(decoded(tagged)), today)
    for data in (untagged, tagged):  # as the indexer decodes: nothing left to convert either
        opened = open_oriented(data, 224, default_max_pixels(), defer_colours=True)
        assert opened.colours is None
        assert np.array_equal(np.asarray(opened.image), today)


@pytest.mark.parametrize(
    "profile",
    [DISPLAY_P3[:300], DISPLAY_P3[:16] + b"CMYK" + DISPLAY_P3[20:], b"\0" * 128 + b"junk", DISPLAY_P3[:100]],
    ids=["truncated", "claims CMYK", "zeros", "shorter than a header"],
)
def test_a_damaged_profile_leaves_the_image_as_stored(profile: bytes) -> None:
    photo = patches(PATCHES)
    assert np.array_equal(np.asarray(decoded(encoded(photo, "PNG", profile))), np.asarray(photo))


def test_without_littlecms_images_are_read_as_stored(monkeypatch: pytest.MonkeyPatch) -> None:
    """A Pillow built without LittleCMS (some distributions' packages) reads images as before."""
    monkeypatch.setattr(colour, "littlecms_available", lambda: False)
    photo = patches(PATCHES)
    assert np.array_equal(np.asarray(decoded(encoded(photo, "PNG", DISPLAY_P3))), np.asarray(photo))


def in_srgb(image: Image.Image, profile: bytes) -> Image.Image:
    source = ImageCms.ImageCmsProfile(io.BytesIO(profile))
    srgb = ImageCms.ImageCmsProfile(io.BytesIO(SRGB_PROFILE))
    return ImageCms.buildTransform(source, srgb, "RGB", "RGB").apply(image)


def test_indexing_embeds_the_converted_colours(tmp_path: Path, tiny_model: TinyModel) -> None:
    """An Adobe RGB photo is embedded as its sRGB conversion is: an untagged copy of that
    conversion is its nearest neighbour, not a copy of its pixels as stored. A CMYK print
    file and an image with a damaged profile are indexed too."""
    photos = tmp_path / "photos"
    photos.mkdir()
    photo = patches(PATCHES[:4], side=100)
    photo.save(photos / "tagged.png", icc_profile=ADOBE_RGB)
    in_srgb(photo, ADOBE_RGB).save(photos / "converted.png")
    photo.save(photos / "as-stored.png")
    patches(CMYK_PATCHES, "CMYK", 100).save(photos / "print.jpg", icc_profile=PRINT_CMYK)
    photo.save(photos / "damaged.png", icc_profile=ADOBE_RGB[:200])
    with indexed_library(tmp_path / "library", photos, tiny_model) as library:
        assert library.failures() == []
        assert library.status().counts.indexed == 5
        ranked = library.similar(photos / "tagged.png", k=4)
        by_name = {result.path.name: result.score for result in ranked}
        assert ranked[0].path.name == "converted.png" and ranked[0].score > 0.9999
        assert by_name["as-stored.png"] < ranked[0].score


def test_thumbnails_of_cmyk_and_grey_images_follow_their_profiles(tmp_path: Path) -> None:
    """A thumbnail shows a CMYK print file in its profile's colours (a large one is reduced in
    CMYK, a band at a time, then converted), and a grey scan by its grey profile."""
    for name, image in {
        "small": patches(CMYK_PATCHES, "CMYK"),
        "large": patches(CMYK_PATCHES, "CMYK", 1000),
    }.items():
        source = tmp_path / f"{name}.jpg"
        image.save(source, quality=95, icc_profile=PRINT_CMYK)
        with Image.open(
            thumbnail(str(source), tmp_path / "thumbnails", 1, 128, default_max_pixels())
        ) as made:
            assert "icc_profile" not in made.info
            got = centres(made.convert("RGB"), 4)
        for shown, want in zip(got, [(237, 0, 0), (0, 165, 0), (0, 0, 132), (255, 255, 255)], strict=True):
            assert np.abs(np.subtract(shown, want)).max() <= 8, (name, shown, want)
    grey = tmp_path / "grey.png"
    patches([(128,)], "L").save(grey, icc_profile=gray_profile("Gray 1.8", 1.8))
    with Image.open(thumbnail(str(grey), tmp_path / "thumbnails", 2, 32, default_max_pixels())) as made:
        assert made.convert("L").getpixel((16, 16)) == pytest.approx(
            round(255 * (128 / 255) ** (1.8 / 2.2)), abs=4
        )


def phone_photos(folder: Path, profile: bytes | None, count: int = 4) -> list[Path]:
    """JPEGs decoded at reduced scale as a phone's are (to 504 x 378), tagged with `profile`."""
    folder.mkdir(exist_ok=True)
    paths = []
    for seed in range(count):
        path = folder / f"photo_{seed}.jpg"
        data = encoded(make_photo(seed, (2016, 1512)), "JPEG")
        path.write_bytes(data if profile is None else tag_jpeg(data, profile))
        paths.append(path)
    return paths


def converted_first(embedder: Embedder, paths: list[Path]) -> np.ndarray:
    """Vectors as pixsift made them before: the decoded copy converted, then resized."""
    size, most = embedder.image_size, default_max_pixels()
    return embedder.embed_images([embedder.preprocess(decoded_as(path, size, most)) for path in paths])


def decoded_as(path: Path, size: int, max_pixels: int) -> Image.Image:
    return open_oriented(path.read_bytes(), size, max_pixels).image


def assert_converted_after_the_resize_embeds_as_before(embedder: Embedder, folder: Path) -> None:
    """A P3 phone photo's vector, converted after the resize, against converted before: a
    cosine of at least 0.999. The control that can fail: the same photo read as if sRGB (what
    a missed conversion would give) is further from it."""
    tagged, untagged = phone_photos(folder / "p3", DISPLAY_P3), phone_photos(folder / "plain", None)
    # after: as the indexer makes them now, converted once resized
    before, after = converted_first(embedder, tagged), image_vectors(embedder, tagged)
    as_stored = converted_first(embedder, untagged)
    cosines = np.sum(before * after, axis=1)
    assert np.all(cosines >= 0.999), cosines
    assert np.all(cosines > np.sum(before * as_stored, axis=1))


@pytest.mark.parametrize("engine", ["torch", "onnx", "onnx-int8"])
def test_a_p3_photo_converted_after_the_resize_embeds_as_before(engine: str, tmp_path: Path) -> None:
    """Both engines convert the model's input once resized: open_clip's transform (torch), and
    the ONNX path's own steps."""
    embedder = load_embedder(resolve_model_spec("synthetic-tiny"), "cpu", engine)
    assert_converted_after_the_resize_embeds_as_before(embedder, tmp_path)


@pytest.mark.slow
def test_a_p3_photo_converted_after_the_resize_embeds_as_before_with_vit_b_32(tmp_path: Path) -> None:
    """ViT-B-32 itself, with random weights (600 MB, so marked slow)."""
    import open_clip
    import torch

    torch.manual_seed(0)
    checkpoint = tmp_path / "random.pt"
    torch.save(open_clip.create_model("ViT-B-32").state_dict(), checkpoint)
    vit = ClipEmbedder.load(resolve_model_spec("ViT-B-32", str(checkpoint)), "cpu")
    assert_converted_after_the_resize_embeds_as_before(vit, tmp_path)


@pytest.mark.parametrize(
    "profile",
    [DISPLAY_P3, ADOBE_RGB, gray_profile("Gray 1.8", 1.8)],
    ids=["Display P3", "Adobe RGB", "grey"],
)
def test_rgb_and_grey_images_are_converted_once_resized(profile: bytes, tmp_path: Path) -> None:
    """Decoded for the model, the image is still as stored, with its conversion to come; the
    224 x 224 pixels converted then are within a level, on average, of the resized conversion
    (edges differ more: a conversion is not linear), far from the pixels as stored."""
    photo = make_photo(5, (1200, 900))
    grey = profile[16:20] == b"GRAY"
    data = encoded(photo.convert("L") if grey else photo, "JPEG", profile)
    as_stored = reference_decode(data)
    opened = open_oriented(data, 224, default_max_pixels(), defer_colours=True)
    assert opened.colours is not None and opened.image.mode == "RGB"
    assert np.array_equal(np.asarray(opened.image), as_stored)
    config = PixelConfig(224, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
    after = resize_and_crop(opened.image, config, opened.colours).astype(np.int16)
    before = resize_and_crop(decoded(data), config).astype(np.int16)
    stored = resize_and_crop(Image.fromarray(as_stored), config).astype(np.int16)
    assert np.abs(after - before).mean() < 1.0
    assert np.abs(stored - before).mean() > 3.0
    if grey:
        assert np.array_equal(after[..., 0], after[..., 1]) and np.array_equal(after[..., 0], after[..., 2])


def test_a_cmyk_image_is_converted_before_the_resize(tmp_path: Path) -> None:
    """The resize needs RGB, and only the profile makes a CMYK image's RGB right."""
    data = encoded(patches(CMYK_PATCHES, "CMYK", 100), "JPEG", PRINT_CMYK)
    opened = open_oriented(data, 224, default_max_pixels(), defer_colours=True)
    assert opened.colours is None
    assert np.array_equal(np.asarray(opened.image), np.asarray(decoded(data)))


def test_a_search_by_a_tagged_photo_finds_its_indexed_copy(tmp_path: Path, tiny_model: TinyModel) -> None:
    """A photo given as an example (not in the library) is decoded as the indexer decoded its
    copy: converted after the resize too, so the copy comes first with the same vector."""
    photos = tmp_path / "photos"
    phone_photos(photos, DISPLAY_P3, count=3)
    example = tmp_path / "example.jpg"
    example.write_bytes((photos / "photo_1.jpg").read_bytes())
    with indexed_library(tmp_path / "library", photos, tiny_model) as library:
        ranked = library.similar(example, k=3)
        assert ranked[0].path.name == "photo_1.jpg" and ranked[0].score > 0.99999
        assert ranked[1].score < 0.9999
