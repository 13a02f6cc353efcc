"""The torch-free CLIP tokenizer gives open_clip's token ids, string for string."""

from __future__ import annotations

import random

import numpy as np
import pytest

from pixsift.models.clip_tokenizer import ClipTokenizer

STRINGS = [
    "a photo of a dog",
    "A PHOTO  of\tthe  Cat!!",
    "naïve café — \u201ccurly quotes\u201d and \u2018single\u2019 ones",
    "日本語のテキスト 東京タワー",
    "emoji 🐶🐱🚀 and flags 🇫🇷",
    "it's we'll they're I'd you've I'm she'll",
    "&amp; &lt;b&gt;bold&lt;/b&gt; &amp;amp; html",
    "numbers 12345, 3.14159 and 1e-9",
    "<start_of_text> spelled out <end_of_text>",
    "Ünïcödé ÅÄÖ straße ĳ ﬁ ligatures",
    "mojibake: Ã©tÃ© Ã  la plage",
    "tab\tnew\nline\rcarriage",
    "hello,world;foo:bar/baz\\qux",
    "Ελληνικά κείμενο, русский текст, عربي, עברית, हिन्दी",
    "x" * 300,
    " ".join(["word"] * 100),
    "",
    "   ",
    "a",
    "!!!???...",
    "DSC_0042.JPG IMG_2024-06-01 @home #sunset $5 %20 ^_^ ~tilde~",
]


def random_strings(count: int) -> list[str]:
    rng = random.Random(7)
    alphabet = "abcxyzABC 0123 .,!?'-éüñß日本🙂\t&;<>"
    return ["".join(rng.choice(alphabet) for _ in range(rng.randint(0, 120))) for _ in range(count)]


@pytest.mark.parametrize("context_length", [77, 24])
def test_token_ids_equal_open_clips(context_length: int) -> None:
    from open_clip.tokenizer import SimpleTokenizer

    ours = ClipTokenizer.from_open_clip(context_length)
    theirs = SimpleTokenizer(context_length=context_length)
    texts = STRINGS + random_strings(200)
    expected = theirs(texts).numpy()
    got = ours(texts)
    assert got.dtype == np.int64 and got.shape == (len(texts), context_length)
    mismatched = [text for text, a, b in zip(texts, got, expected, strict=True) if not np.array_equal(a, b)]
    assert mismatched == []
    truncated = got[STRINGS.index("x" * 300)]
    assert truncated[-1] == theirs.eot_token_id  # long texts end with END, as open_clip's do


def test_saved_tokenizer_loads_the_same(tmp_path: object) -> None:
    from pathlib import Path

    folder = Path(str(tmp_path))
    ours = ClipTokenizer.from_open_clip(77)
    ours.save(folder / "tokenizer.json")
    loaded = ClipTokenizer.from_file(folder / "tokenizer.json", 77)
    assert np.array_equal(loaded(STRINGS), ours(STRINGS))
