"""Whether a number a caller gives (a threshold, a weight) is a finite float, and how to name
it in a message: a Python int too large for a float is neither NaN nor infinite, but
`math.isfinite` and `float` raise OverflowError for it rather than answer."""

from __future__ import annotations

import math
from typing import SupportsFloat

# Digits beyond which an int is named by its size: printing it whole would flood the message
# (and past 4,300 digits Python refuses to print it at all).
SHOWN_DIGITS_MAX = 30


def is_finite(number: SupportsFloat) -> bool:
    """`math.isfinite(number)`, False for an int too large to be a float."""
    try:
        return math.isfinite(number)
    except OverflowError:
        return False


def shown(number: object) -> str:
    """`number` as a message names it: its repr, or for a very long int, how long it is."""
    if isinstance(number, int):
        digits = int(number.bit_length() * math.log10(2)) + 1  # one too many at most
        if digits > SHOWN_DIGITS_MAX:
            return f"a whole number of about {digits} digits"
    return repr(number)
