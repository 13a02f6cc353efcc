"""The image formats pixsift indexes, by Pillow's names, and the names users write for them.

Kept apart from the decoder (which imports Pillow) so that checking a search's format filter
stays cheap on the quick query path.
"""

from __future__ import annotations

# Pillow parsers the indexer allows; a file named .jpg is never handed to exotic plugins.
# (Multi-picture JPEGs open through the JPEG parser and report format "MPO".)
WANTED_FORMATS = ("JPEG", "PNG", "WEBP", "AVIF", "GIF", "BMP", "DIB", "TIFF", "HEIF")

# Format names a user may write for Pillow's: "jpg" is a JPEG, and a phone's multi-picture
# JPEG (Pillow's "MPO") is a JPEG to anyone asking for JPEGs.
FORMAT_ALIASES = {"JPG": ("JPEG", "MPO"), "JPEG": ("JPEG", "MPO"), "TIF": ("TIFF",), "HEIC": ("HEIF",)}

# Every name a format filter may use, in upper case.
FILTER_NAMES = frozenset([*WANTED_FORMATS, "MPO", *FORMAT_ALIASES])
