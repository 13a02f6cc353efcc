"""CLIP's text tokenizer without torch: Hugging Face `tokenizers` over open_clip's own BPE.

open_clip's tokenizer module imports torch (seconds at start-up), which a text query answered
by the ONNX text tower does not otherwise need. This builds the same byte-level BPE with the
`tokenizers` library, from the vocabulary file open_clip ships (`bpe_simple_vocab_16e6.txt.gz`),
the way Hugging Face's own CLIP converter does: the CLIP pre-tokenising pattern, byte-level
symbols, and `</w>` marking the end of each word. The text is cleaned first exactly as
open_clip cleans it (ftfy, HTML unescaping, whitespace, lower case), so the token ids are the
same; a test compares them with open_clip's on many strings.
"""

from __future__ import annotations

import gzip
import html
import importlib.util
import json
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from tokenizers import Tokenizer

START, END = "<start_of_text>", "<end_of_text>"
# open_clip's pre-tokenising pattern: contractions, letter runs, single digits, punctuation runs.
_PATTERN = r"""'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+"""
_MERGES = 49152 - 256 - 2  # how many merges of the file open_clip reads


def open_clip_bpe_path() -> Path:
    """The BPE vocabulary open_clip ships, found without importing open_clip (nor torch)."""
    spec = importlib.util.find_spec("open_clip")
    if spec is None or spec.origin is None:
        raise ModuleNotFoundError("open_clip is not installed")
    return Path(spec.origin).with_name("bpe_simple_vocab_16e6.txt.gz")


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible map from bytes to printable characters, as open_clip and HF use it."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), 256)]
    codes = printable[:]
    extra = 0
    for byte in range(256):
        if byte not in printable:
            printable.append(byte)
            codes.append(256 + extra)
            extra += 1
    return dict(zip(printable, (chr(code) for code in codes), strict=True))


def build_tokenizer(bpe_path: Path) -> Tokenizer:
    """A `tokenizers.Tokenizer` with the vocabulary and merges open_clip builds from `bpe_path`."""
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, pre_tokenizers

    lines = gzip.decompress(bpe_path.read_bytes()).decode("utf-8").split("\n")
    merges = [tuple(line.split()) for line in lines[1 : _MERGES + 1]]
    symbols = list(_bytes_to_unicode().values())
    vocab_list = [*symbols, *(symbol + "</w>" for symbol in symbols), *("".join(m) for m in merges)]
    vocab = {token: index for index, token in enumerate([*vocab_list, START, END])}
    bpe = models.BPE(
        vocab=vocab,
        merges=[(a, b) for a, b in merges],
        end_of_word_suffix="</w>",
        continuing_subword_prefix="",
        fuse_unk=False,
    )
    tokenizer = Tokenizer(bpe)
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(_PATTERN), behavior="removed", invert=True),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tokenizer.decoder = decoders.ByteLevel()
    # Text that spells a special token is read as that token, as open_clip's pattern does.
    tokenizer.add_special_tokens([AddedToken(START, normalized=False), AddedToken(END, normalized=False)])
    return tokenizer


def _with_merges_as_strings(serialised: str) -> str:
    """The tokenizer's JSON with each merge written "a b" rather than ["a", "b"].

    `tokenizers` reads both forms; the string form loads about 40 ms faster (of 180 ms), which
    every cold text search pays. Byte-level symbols never contain a space, so nothing is lost.
    """
    data = json.loads(serialised)
    merges = data["model"]["merges"]
    if all(isinstance(pair, list) and " " not in "".join(pair) for pair in merges):
        data["model"]["merges"] = [" ".join(pair) for pair in merges]
    return json.dumps(data, ensure_ascii=False)


# Text made only of these characters is left as it is by ftfy (it has nothing to fix: no
# mojibake, no control characters, no HTML entity without an "&"), so cleaning it needs neither
# ftfy, whose import costs a cold query about 0.1 s, nor HTML unescaping. A test checks this
# against the full cleaning on many strings.
_NOTHING_TO_FIX = frozenset(map(chr, range(0x20, 0x7F))) - {"&"} | frozenset("\t\n\r")


def clean(text: str) -> str:
    """open_clip's default cleaning ("lower"): fix mojibake, unescape HTML, collapse spaces."""
    if not _NOTHING_TO_FIX.issuperset(text):
        import ftfy

        text = html.unescape(html.unescape(ftfy.fix_text(text)))
    return " ".join(text.split()).lower()


class ClipTokenizer:
    """Texts to CLIP token ids: start, BPE tokens, end, zero padding; truncated like open_clip."""

    def __init__(self, tokenizer: Tokenizer, context_length: int) -> None:
        self._tokenizer = tokenizer
        self.context_length = context_length
        start, end = tokenizer.token_to_id(START), tokenizer.token_to_id(END)
        if start is None or end is None:
            raise ValueError("not a CLIP tokenizer: it has no start and end tokens")
        self._start, self._end = start, end

    @classmethod
    def from_open_clip(cls, context_length: int) -> ClipTokenizer:
        return cls(build_tokenizer(open_clip_bpe_path()), context_length)

    @classmethod
    def from_file(cls, path: Path, context_length: int) -> ClipTokenizer:
        from tokenizers import Tokenizer

        return cls(Tokenizer.from_file(str(path)), context_length)

    def save(self, path: Path) -> None:
        path.write_text(_with_merges_as_strings(self._tokenizer.to_str()), encoding="utf-8")

    def __call__(self, texts: Sequence[str]) -> np.ndarray:
        """Token ids, shape (len(texts), context_length), int64 as the text tower takes them."""
        encoded = self._tokenizer.encode_batch([clean(text) for text in texts], add_special_tokens=False)
        result = np.zeros((len(texts), self.context_length), dtype=np.int64)
        for row, encoding in enumerate(encoded):
            ids = [self._start, *encoding.ids, self._end]
            if len(ids) > self.context_length:  # open_clip keeps the start and ends with END
                ids = ids[: self.context_length]
                ids[-1] = self._end
            result[row, : len(ids)] = ids
        return result
