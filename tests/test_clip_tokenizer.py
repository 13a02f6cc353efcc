"""The torch-free CLIP tokenizer gives open_clip's token ids, string for string."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest

from pixsift.models.clip_tokenizer import ClipTokenizer, KnownWords, clean

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


def ascii_strings(count: int) -> list[str]:
    """Plain ASCII, which skips ftfy, mixed with what must not: control characters, "&"
    entities, and a little mojibake and accented text."""
    rng = random.Random(11)
    controls = "".join(map(chr, [*range(0x00, 0x20), 0x7F]))
    alphabets = [
        "".join(map(chr, range(0x20, 0x7F))),
        "abc XYZ 09 .,;:!?'\"-_/\\()[]{}<>|@#$%^*+=~`\t\n\r",
        "ab &amp; &lt; &#39; &gt; \x0b\x0c\x1b[31m",
        "ab cd " + controls,
        "ab cd Ã© Ã  é ü \u2013 \u201c \u201d 🙂 \u00a0 \u2028",
    ]
    return [
        "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 80)))
        for alphabet in alphabets
        for _ in range(count)
    ]


def test_cleaning_equals_open_clips_with_or_without_ftfy() -> None:
    from open_clip.tokenizer import get_clean_fn

    theirs = get_clean_fn("lower")
    texts = STRINGS + random_strings(200) + ascii_strings(400)
    texts += [chr(code) for code in range(0x80)] + [f"a{chr(code)}b c" for code in range(0x80)]
    assert [text for text in texts if clean(text) != theirs(text)] == []


@pytest.mark.parametrize("context_length", [77, 24])
def test_token_ids_equal_open_clips(context_length: int) -> None:
    from open_clip.tokenizer import SimpleTokenizer

    ours = ClipTokenizer.from_open_clip(context_length)
    theirs = SimpleTokenizer(context_length=context_length)
    texts = STRINGS + random_strings(200) + ascii_strings(40)
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
    texts = STRINGS + random_strings(200) + ascii_strings(40)
    assert np.array_equal(loaded(texts), ours(texts))
    merges = json.loads((folder / "tokenizer.json").read_text(encoding="utf-8"))["model"]["merges"]
    assert len(merges) == 49152 - 256 - 2 and all(isinstance(merge, str) for merge in merges)


PLAIN_QUERIES = [
    "a photo of a dog",
    "Dog running on a beach",
    "two cats, sleeping on a red sofa!",
    "it's 3 o'clock in the afternoon",
    "sunset over the mountains... 1999",
]


def saved_with_known_words(folder: Path) -> tuple[ClipTokenizer, ClipTokenizer]:
    """The full tokenizer, and the one read back from its files with the known-words table."""
    full = ClipTokenizer.from_open_clip(77)
    full.save(folder / "tokenizer.json")
    full.save_known_words(folder / "known-words.json")
    return full, ClipTokenizer.from_file(folder / "tokenizer.json", 77, folder / "known-words.json")


def test_plain_words_are_tokenized_without_building_the_bpe(tmp_path: Path) -> None:
    full, quick = saved_with_known_words(tmp_path)
    assert np.array_equal(quick(PLAIN_QUERIES), full(PLAIN_QUERIES))
    assert not quick.bpe_loaded


def test_text_with_unknown_pieces_builds_the_bpe_and_gets_the_same_ids(tmp_path: Path) -> None:
    full, quick = saved_with_known_words(tmp_path)
    assert np.array_equal(quick(["a photo of a xyzzyq"]), full(["a photo of a xyzzyq"]))
    assert quick.bpe_loaded
    texts = STRINGS + random_strings(200) + ascii_strings(40) + PLAIN_QUERIES
    assert np.array_equal(quick(texts), full(texts))


def test_known_words_are_whole_pieces_of_the_vocabulary(tmp_path: Path) -> None:
    saved_with_known_words(tmp_path)
    table = KnownWords.load(tmp_path / "known-words.json")
    assert 30_000 < len(table) < 49_408
    assert table.ids("dog") is not None and table.ids("dog's") is not None
    assert table.ids("café") is None  # not plain ASCII: the BPE decides
    assert table.ids("<start_of_text>") is None  # a special token, as the BPE reads it
