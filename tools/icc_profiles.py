"""Small ICC profiles made from numbers, for the tests and benchmarks of colour management.

Pillow's ImageCms can only make sRGB's (and LAB and XYZ), and ICC files are not shipped with
pixsift: these are built by hand as ICC v2 profiles, a colour space as a phone, a camera or a
print workflow names it in its files. `tag_jpeg` embeds one in a JPEG without re-encoding it.
"""

from __future__ import annotations

import itertools
import struct
from collections.abc import Sequence

D50 = (0.9642, 1.0, 0.8249)  # the ICC profile connection space's white

# The XYZ (adapted to D50, as ICC wants them) of the red, green and blue of some colour spaces.
DISPLAY_P3_PRIMARIES = [
    (0.51512, 0.24119, -0.00105),
    (0.29198, 0.69225, 0.04189),
    (0.15710, 0.06657, 0.78407),
]
ADOBE_RGB_PRIMARIES = [(0.60974, 0.31111, 0.01947), (0.20528, 0.62567, 0.06087), (0.14919, 0.06322, 0.74457)]
SRGB_PRIMARIES = [(0.43607, 0.22249, 0.01392), (0.38515, 0.71687, 0.09708), (0.14307, 0.06061, 0.71410)]


def _xyz(x: float, y: float, z: float) -> bytes:
    return b"XYZ " + bytes(4) + struct.pack(">3i", *(round(v * 65536) for v in (x, y, z)))


def _description(name: str) -> bytes:
    text = name.encode("ascii") + b"\0"
    return b"desc" + bytes(4) + struct.pack(">I", len(text)) + text + bytes(78)


def _profile(device_class: bytes, space: bytes, pcs: bytes, tags: list[tuple[bytes, bytes]]) -> bytes:
    """An ICC v2.1 profile of these tags (a header, a tag table, the tags' data)."""
    offset, table, data = 128 + 4 + 12 * len(tags), b"", b""
    for signature, body in tags:
        table += signature + struct.pack(">II", offset + len(data), len(body))
        data += body + bytes(-len(body) % 4)
    header = struct.pack(">I4sI", offset + len(data), bytes(4), 0x02100000) + device_class + space + pcs
    header += bytes(12) + b"acsp" + bytes(28) + _xyz(*D50)[8:]
    return header + bytes(128 - len(header)) + struct.pack(">I", len(tags)) + table + data


def rgb_profile(name: str, primaries: Sequence[tuple[float, float, float]], gamma: float) -> bytes:
    """An RGB display profile (matrix and gamma curves). `primaries`: the XYZ of red, green and
    blue, adapted to D50."""
    curve = b"curv" + bytes(4) + struct.pack(">IH", 1, round(gamma * 256))
    tags = [(b"desc", _description(name)), (b"wtpt", _xyz(*D50)), (b"cprt", b"text" + bytes(4) + b"none\0")]
    tags += [
        (band + b"XYZ", _xyz(*colour)) for band, colour in zip((b"r", b"g", b"b"), primaries, strict=True)
    ]
    tags += [(band + b"TRC", curve) for band in (b"r", b"g", b"b")]
    return _profile(b"mntr", b"RGB ", b"XYZ ", tags)


def gray_profile(name: str, gamma: float) -> bytes:
    """A grey display profile: a gamma curve from the device's grey to the D50 white's lightness."""
    curve = b"curv" + bytes(4) + struct.pack(">IH", 1, round(gamma * 256))
    tags = [(b"desc", _description(name)), (b"wtpt", _xyz(*D50)), (b"cprt", b"text" + bytes(4) + b"none\0")]
    return _profile(b"mntr", b"GRAY", b"XYZ ", [*tags, (b"kTRC", curve)])


# Display P3 (an iPhone's photos; its curve is sRGB's, close to a 2.2 gamma) and Adobe RGB
# (1998), as cameras shoot it: wider gamuts than sRGB, greens and reds most of all.
DISPLAY_P3 = rgb_profile("Display P3 lookalike", DISPLAY_P3_PRIMARIES, 2.2)
ADOBE_RGB = rgb_profile("Adobe RGB (1998) lookalike", ADOBE_RGB_PRIMARIES, 563 / 256)
# sRGB's primaries with a 2.2 gamma: what some cameras embed as "sRGB". Close, not the same:
# its darkest shades differ from sRGB's by a few levels.
SRGB_GAMMA_22 = rgb_profile("sRGB gamma 2.2", SRGB_PRIMARIES, 2.2)


def srgb_to_xyz(rgb: Sequence[float]) -> tuple[float, float, float]:
    """The D50 XYZ of an sRGB colour (0..1 a band)."""
    linear = [c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4 for c in rgb]
    x, y, z = (sum(p[axis] * c for p, c in zip(SRGB_PRIMARIES, linear, strict=True)) for axis in range(3))
    return x, y, z


def cmyk_profile(name: str, inks: dict[str, tuple[float, float, float]]) -> bytes:
    """A CMYK output profile with only the device-to-PCS table (A2B0, what reading a CMYK file
    needs): each corner of the CMYK cube is the paper (white) seen through the inks on it, each
    ink the sRGB colour (0..1) given in `inks` ("c", "m", "y", "k"), multiplied; in between,
    interpolated. A 2-point grid a side: exact on the cube's corners, where tests look."""
    entries = []
    for corner in itertools.product((0, 1), repeat=4):  # the first input varies slowest
        colour = [1.0, 1.0, 1.0]
        for ink, present in zip("cmyk", corner, strict=True):
            if present:
                colour = [a * b for a, b in zip(colour, inks[ink], strict=True)]
        # lut16 XYZ: 1.0 is 0x8000
        entries += [min(65535, round(v * 32768)) for v in srgb_to_xyz(colour)]
    identity = struct.pack(">9i", 65536, 0, 0, 0, 65536, 0, 0, 0, 65536)
    lut = b"mft2" + bytes(4) + struct.pack(">4B", 4, 3, 2, 0) + identity + struct.pack(">HH", 2, 2)
    lut += struct.pack(">8H", *[0, 65535] * 4) + struct.pack(f">{len(entries)}H", *entries)
    lut += struct.pack(">6H", *[0, 65535] * 3)
    tags = [(b"desc", _description(name)), (b"wtpt", _xyz(*D50)), (b"cprt", b"text" + bytes(4) + b"none\0")]
    return _profile(b"prtr", b"CMYK", b"XYZ ", [*tags, (b"A2B0", lut)])


# Printing inks as they are, not as a formula has them: magenta and yellow make a red of 93%.
PRINT_INKS = {"c": (0.0, 0.68, 0.94), "m": (0.93, 0.0, 0.55), "y": (1.0, 0.95, 0.0), "k": (0.13, 0.12, 0.12)}
PRINT_CMYK = cmyk_profile("CMYK print lookalike", PRINT_INKS)


def tag_jpeg(data: bytes, profile: bytes) -> bytes:
    """The JPEG `data` with `profile` embedded (an APP2 ICC_PROFILE segment after its start
    marker), its pixels untouched. The profile must fit one segment (64 KB)."""
    if data[:2] != b"\xff\xd8":
        raise ValueError("not a JPEG")
    payload = b"ICC_PROFILE\0\x01\x01" + profile
    if len(payload) + 2 > 0xFFFF:
        raise ValueError("profile too large for one segment")
    return data[:2] + b"\xff\xe2" + struct.pack(">H", len(payload) + 2) + payload + data[2:]
