"""CLIP's text tokenizer without torch: Hugging Face `tokenizers` over open_clip's own BPE.

open_clip's tokenizer module imports torch (seconds at start-up), which a text query answered
by the ONNX text tower does not otherwise need. This builds the same byte-level BPE with the
`tokenizers` library, from the vocabulary file open_clip ships (`bpe_simple_vocab_16e6.txt.gz`),
the way Hugging Face's own CLIP converter does: the CLIP pre-tokenising pattern, byte-level
symbols, and `</w>` marking the end of each word. The text is cleaned first exactly as
open_clip cleans it (ftfy, HTML unescaping, whitespace, lower case), so the token ids are the
same; a test compares them with open_clip's on many strings.

Building that BPE (49,408 tokens, 48,894 merges) takes `tokenizers` about 0.13 s, a fifth of
a cold text search. Most queries are plain words the vocabulary holds whole, so an export also
saves those words with their ids (`KnownWords`, read in about 15 ms): a query made only
of them is tokenized from that table, and the BPE is built only for a text that needs it.
"""

from __future__ import annotations

import gzip
import html
import importlib.util
import json
import re
import threading
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from tokenizers import Tokenizer

START, END = "<start_of_text>", "<end_of_text>"
# open_clip's pre-tokenising pattern: contractions, letter runs, single digits, punctuation runs.
_PATTERN = r"""'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+"""
_MERGES = 49152 - 256 - 2  # how many merges of the file open_clip reads
# The same pattern for text that cleaning left printable ASCII: there \p{L} is [a-zA-Z], \p{N}
# is [0-9] and the only space is " ". `re` is enough for it (the `regex` module is not).
_ASCII_PATTERN = re.compile(r"""'s|'t|'re|'ve|'m|'ll|'d|[a-zA-Z]+|[0-9]|[^\sa-zA-Z0-9]+""")
_PRINTABLE_ASCII = re.compile(r"[\x20-\x7e]*")


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


class TokenizerFileError(Exception):
    """The saved BPE could not be read (a damaged file)."""


def _special_ids(tokenizer: Tokenizer) -> tuple[int, int]:
    start, end = tokenizer.token_to_id(START), tokenizer.token_to_id(END)
    if start is None or end is None:
        raise ValueError("not a CLIP tokenizer: it has no start and end tokens")
    return start, end


class KnownWords:
    """The token ids of the pieces of plain text that CLIP's vocabulary holds whole.

    A piece is what the pre-tokenising pattern cuts out (a word, a digit, a run of
    punctuation); BPE works on each piece alone, so a text whose pieces are all in the table
    has exactly the ids the table gives. Each id was made by the full tokenizer at export time.
    """

    def __init__(self, ids: dict[str, int], start: int, end: int) -> None:
        self._ids = ids
        self.start, self.end = start, end

    @classmethod
    def of(cls, tokenizer: Tokenizer) -> KnownWords:
        """Every printable-ASCII piece of the vocabulary that `tokenizer` encodes as one token."""
        symbol_bytes = {symbol: byte for byte, symbol in _bytes_to_unicode().items()}
        candidates = []
        for token in tokenizer.get_vocab():
            if not token.endswith("</w>") or not all(c in symbol_bytes for c in token[:-4]):
                continue
            word = bytes(symbol_bytes[c] for c in token[:-4]).decode("latin-1")
            if _ASCII_PATTERN.fullmatch(word) and _PRINTABLE_ASCII.fullmatch(word):
                candidates.append(word)
        encoded = tokenizer.encode_batch(candidates, add_special_tokens=False)
        ids = {word: e.ids[0] for word, e in zip(candidates, encoded, strict=True) if len(e.ids) == 1}
        return cls(dict(sorted(ids.items())), *_special_ids(tokenizer))

    @classmethod
    def load(cls, path: Path) -> KnownWords:
        data = json.loads(path.read_text(encoding="utf-8"))
        words = data["words"].split("\n")
        if len(words) != len(data["ids"]):
            raise ValueError(f"{path} is damaged: {len(words)} words for {len(data['ids'])} ids")
        return cls(dict(zip(words, data["ids"], strict=True)), int(data["start"]), int(data["end"]))

    def save(self, path: Path) -> None:
        # One string of words and a list of ids: a little quicker to load than a JSON object of
        # 33,000 keys (14 against 16 ms).
        words, ids = "\n".join(self._ids), list(self._ids.values())
        data = {"start": self.start, "end": self.end, "words": words, "ids": ids}
        path.write_text(json.dumps(data, separators=(",", ":")), encoding="utf-8")

    def __len__(self) -> int:
        return len(self._ids)

    def ids(self, cleaned: str) -> list[int] | None:
        """The BPE ids of already cleaned text, or None when a piece is not in the table."""
        if not _PRINTABLE_ASCII.fullmatch(cleaned) or START in cleaned or END in cleaned:
            return None
        ids = []
        for piece in _ASCII_PATTERN.findall(cleaned):
            token = self._ids.get(piece)
            if token is None:
                return None
            ids.append(token)
        return ids


class ClipTokenizer:
    """Texts to CLIP token ids: start, BPE tokens, end, zero padding; truncated like open_clip.

    With `known` words, the BPE (`load`) is built on the first text that needs it.
    """

    def __init__(
        self,
        load: Callable[[], Tokenizer],
        context_length: int,
        known: KnownWords | None = None,
    ) -> None:
        self._load = load
        self._tokenizer: Tokenizer | None = None
        self._building = threading.Lock()  # servers tokenize on several threads
        self.context_length = context_length
        self._known = known
        if known is None:
            start, end = _special_ids(self._bpe())
        else:
            start, end = known.start, known.end
        self._start, self._end = start, end

    @classmethod
    def from_open_clip(cls, context_length: int) -> ClipTokenizer:
        tokenizer = build_tokenizer(open_clip_bpe_path())
        return cls(lambda: tokenizer, context_length)

    @classmethod
    def from_file(cls, path: Path, context_length: int, known_words: Path | None = None) -> ClipTokenizer:
        """The tokenizer saved at `path`; with the table saved at `known_words`, if any, its BPE
        is read only when a text needs it."""
        from tokenizers import Tokenizer

        known = KnownWords.load(known_words) if known_words is not None else None
        return cls(lambda: Tokenizer.from_file(str(path)), context_length, known)

    @property
    def bpe_loaded(self) -> bool:
        """Whether the full BPE has been built (texts so far may all have been known words)."""
        return self._tokenizer is not None

    def save(self, path: Path) -> None:
        path.write_text(_with_merges_as_strings(self._bpe().to_str()), encoding="utf-8")

    def save_known_words(self, path: Path) -> None:
        (self._known or KnownWords.of(self._bpe())).save(path)

    def __call__(self, texts: Sequence[str]) -> np.ndarray:
        """Token ids, shape (len(texts), context_length), int64 as the text tower takes them."""
        result = np.zeros((len(texts), self.context_length), dtype=np.int64)
        for row, bpe_ids in enumerate(self._bpe_ids([clean(text) for text in texts])):
            ids = [self._start, *bpe_ids, self._end]
            if len(ids) > self.context_length:  # open_clip keeps the start and ends with END
                ids = ids[: self.context_length]
                ids[-1] = self._end
            result[row, : len(ids)] = ids
        return result

    def _bpe_ids(self, cleaned: Sequence[str]) -> Iterable[list[int]]:
        known = [self._known.ids(text) if self._known else None for text in cleaned]
        unknown = [text for text, ids in zip(cleaned, known, strict=True) if ids is None]
        encoded = iter(self._bpe().encode_batch(unknown, add_special_tokens=False) if unknown else [])
        return [ids if ids is not None else next(encoded).ids for ids in known]

    def _bpe(self) -> Tokenizer:
        with self._building:
            if self._tokenizer is None:
                try:
                    self._tokenizer = self._load()
                except Exception as exc:
                    raise TokenizerFileError(f"cannot read the tokenizer: {exc}") from exc
            return self._tokenizer
