"""The ONNX Runtime fast path: as accurate as open_clip, exported and cached by itself, repaired
when damaged; the torch engine still there; and the GPU path where a GPU is."""

from __future__ import annotations

import json
import os
import pty
import re
import subprocess
import sys
import threading
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import TinyModel, needs_permissions, run_cli
from pixsift import Library
from pixsift.indexer.decode import default_max_pixels, load_image
from pixsift.indexer.progress import LOADING_PHASE
from pixsift.models.clip import ClipEmbedder, normalised_on_device
from pixsift.models.embedder import Embedder
from pixsift.models.loading import load_embedder
from pixsift.models.naming import resolve_model_spec
from pixsift.models.onnx_embedder import OnnxEmbedder
from pixsift.models.onnx_export import (
    COSINE_BAR,
    SETTLED_NS,
    Export,
    export_folder,
    export_model,
    read_export,
)
from pixsift.models.pixels import PixelConfig, preprocess, resize_and_crop
from pixsift.models.preparing import PREPARING_PHASE, preparing_message
from pixsift.models.spec import ModelSpec


@pytest.fixture(autouse=True)
def private_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """These tests make, damage and inspect exports: each in a cache of its own."""
    folder = tmp_path / "cache"
    monkeypatch.setenv("PIXSIFT_CACHE_DIR", str(folder))
    return folder


TEXTS = ["a photo of a dog", "a red car parked by the sea", "Snow on the mountains at dawn!", "café"]


def tiny_spec(tiny_model: TinyModel) -> ModelSpec:
    return resolve_model_spec(str(tiny_model.config), str(tiny_model.checkpoint))


def image_vectors(embedder: Embedder, photos: list[Path]) -> np.ndarray:
    pixels = [
        load_image(
            str(path),
            preprocess=embedder.preprocess,
            target_size=embedder.image_size,
            max_pixels=default_max_pixels(),
        ).pixels
        for path in photos
    ]
    return embedder.embed_images(pixels)


def assert_matches_open_clip(spec: ModelSpec, photos: list[Path]) -> OnnxEmbedder:
    """The default engine's vectors against fp32 open_clip's, for real photos and texts."""
    fast = load_embedder(spec, "cpu", "auto")
    assert isinstance(fast, OnnxEmbedder)  # the fast path holds the bar, so it is the default
    reference = ClipEmbedder.load(spec, "cpu")
    assert fast.record == reference.record
    ours, theirs = image_vectors(fast, photos), image_vectors(reference, photos)
    assert np.all(np.sum(ours * theirs, axis=1) >= COSINE_BAR)
    assert np.allclose(np.linalg.norm(ours, axis=1), 1.0, atol=1e-3)
    text_ours, text_theirs = fast.embed_texts(TEXTS), reference.embed_texts(TEXTS)
    assert np.all(np.sum(text_ours * text_theirs, axis=1) >= COSINE_BAR)
    # A control that can fail: different photos are told apart at that precision.
    off_diagonal = ours @ theirs.T - 2 * np.eye(len(photos))
    assert off_diagonal.max() < np.min(np.sum(ours * theirs, axis=1))
    return fast


def test_fast_path_matches_open_clip_on_photos_with_random_weights(
    tiny_model: TinyModel, photo_set: Path
) -> None:
    fast = assert_matches_open_clip(tiny_spec(tiny_model), sorted(photo_set.iterdir()))
    assert fast.precisions == {"image": "int8", "text": "int8"}


def test_fast_path_matches_open_clip_with_trained_weights(photo_set: Path) -> None:
    """The bundled synthetic-tiny model is trained: int8 must hold the bar on real weights too."""
    fast = assert_matches_open_clip(resolve_model_spec("synthetic-tiny"), sorted(photo_set.iterdir()))
    assert fast.precisions == {"image": "int8", "text": "int8"}


def test_pixels_match_open_clip_transform(tiny_model: TinyModel, photo_set: Path) -> None:
    reference = ClipEmbedder.load(tiny_spec(tiny_model), "cpu")
    config = PixelConfig.from_open_clip(dict(reference.model.visual.preprocess_cfg))
    assert config is not None
    for path in sorted(photo_set.iterdir())[:4]:
        with Image.open(path) as image:
            rgb = image.convert("RGB")
        for variant in (rgb, rgb.transpose(Image.Transpose.ROTATE_90), rgb.resize((301, 457))):
            ours = preprocess(variant, config)
            theirs = reference.preprocess(variant).numpy()
            assert ours.shape == theirs.shape == (3, 224, 224)
            assert np.allclose(ours, theirs, atol=1e-5)
            # The GPU path: decode workers resize and crop to uint8, the device normalises.
            resized = torch.from_numpy(resize_and_crop(variant, config)[np.newaxis])
            assert resized.dtype == torch.uint8
            assert np.allclose(normalised_on_device(resized, config)[0].numpy(), theirs, atol=1e-5)


def test_export_is_cached_and_reused_without_torch(tiny_model: TinyModel) -> None:
    spec = tiny_spec(tiny_model)
    load_embedder(spec, "cpu", "auto")
    tower = export_folder(spec) / "text-int8.onnx"
    made = tower.stat()
    again = load_embedder(spec, "cpu", "auto")
    kept = (tower.stat().st_ino, tower.stat().st_mtime_ns)
    assert kept == (made.st_ino, made.st_mtime_ns)  # not exported again
    assert isinstance(again, OnnxEmbedder)
    # A fresh process embeds a text from the cache without ever importing torch or open_clip.
    args = json.dumps(json.dumps([spec.name, spec.pretrained, spec.config_json]))
    script = (
        "import sys, json\n"
        "from pixsift.models.loading import load_embedder\n"
        "from pixsift.models.spec import ModelSpec\n"
        f"spec = ModelSpec(*json.loads({args}))\n"
        "vector = load_embedder(spec, 'cpu', 'auto').embed_texts(['a dog'])\n"
        "print(vector.shape[1], 'torch' in sys.modules, 'open_clip' in sys.modules)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=os.environ.copy(), check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["64", "False", "False"]


def test_int8_image_tower_is_made_for_one_image_per_call(tiny_model: TinyModel) -> None:
    """It only ever runs one image per call, so it is traced for one (its shape arithmetic
    folds away), keeps the patch convolution in fp32, and leaves no working file behind."""
    import onnx

    spec = tiny_spec(tiny_model)
    load_embedder(spec, "cpu", "auto")
    export = read_export(spec)
    assert export is not None
    assert sorted(path.name for path in export.folder.iterdir()) == sorted([*export.files, "meta.json"])

    def graph(name: str) -> onnx.GraphProto:
        return onnx.load(str(export.folder / name), load_external_data=False).graph

    int8, fp32 = graph("image-int8.onnx"), graph("image-fp32.onnx")
    assert int8.input[0].type.tensor_type.shape.dim[0].dim_value == 1
    assert fp32.input[0].type.tensor_type.shape.dim[0].dim_param  # batched calls: a dynamic axis
    operators = {node.op_type for node in int8.node}
    assert "ConvInteger" not in operators and operators & {"Conv", "FusedConv"}
    assert "DynamicQuantizeMatMul" in operators or "MatMulInteger" in operators
    assert len(int8.node) < len(fp32.node)


def test_damaged_export_is_made_again(tiny_model: TinyModel, photo_set: Path) -> None:
    spec = tiny_spec(tiny_model)
    photos = sorted(photo_set.iterdir())[:3]
    good = image_vectors(load_embedder(spec, "cpu", "auto"), photos)
    model_file = export_folder(spec) / "image-int8.onnx"

    # Same size, garbage inside: found when ONNX Runtime cannot load it, then exported again.
    model_file.write_bytes(b"\0" * model_file.stat().st_size)
    vectors = image_vectors(load_embedder(spec, "cpu", "auto"), photos)
    assert np.allclose(vectors, good, atol=1e-5)
    assert read_export(spec) is not None

    # Cut short: found before loading anything.
    model_file.write_bytes(model_file.read_bytes()[:100])
    assert read_export(spec) is None
    vectors = image_vectors(load_embedder(spec, "cpu", "auto"), photos)
    assert np.allclose(vectors, good, atol=1e-5)

    # Unreadable metadata.
    (export_folder(spec) / "meta.json").write_text("{not json", encoding="utf-8")
    assert read_export(spec) is None
    assert isinstance(load_embedder(spec, "cpu", "auto"), OnnxEmbedder)
    assert read_export(spec) is not None


def change_bytes_inside_a_weight(model_file: Path) -> None:
    """Change 64 bytes in the middle of the file's largest weight tensor, its size kept: the
    file still loads, and gives other vectors."""
    import onnx

    raw = max(
        (init.raw_data for init in onnx.load(str(model_file), load_external_data=False).graph.initializer),
        key=len,
    )
    data = bytearray(model_file.read_bytes())
    start = data.find(raw)
    assert len(raw) > 1000 and start > 0
    middle = start + len(raw) // 2
    data[middle : middle + 64] = bytes(byte ^ 0x5A for byte in data[middle : middle + 64])
    model_file.write_bytes(bytes(data))


def no_remake() -> Export:
    raise AssertionError("the export was not to be made again")


def test_bytes_changed_inside_an_export_file_are_found_by_the_next_index_run(
    tiny_model: TinyModel, photos: Path, tmp_path: Path
) -> None:
    """A cached tower with other bytes of its size loads as well as the real one and embeds
    every photo wrongly, without a word. An index run checks the checksums recorded at export,
    says what it found, exports again and stores the vectors a fresh export gives."""
    spec = tiny_spec(tiny_model)
    files = sorted(photos.iterdir())
    expected = image_vectors(load_embedder(spec, "cpu", "auto"), files)
    folder = export_folder(spec)
    change_bytes_inside_a_weight(folder / "image-int8.onnx")
    export = read_export(spec)
    assert export is not None  # every size as recorded: what a cold search checks sees nothing
    damaged = image_vectors(OnnxEmbedder(export, {"image": "int8"}, no_remake), files[:2])
    assert not np.allclose(damaged, expected[:2], atol=1e-2)  # the damage is real, and silent

    library = tmp_path / "lib"
    indexed = run_cli("index", str(photos), "--library", str(library), "-q", *tiny_model.index_args())
    assert indexed.returncode == 0, indexed.stderr
    assert indexed.stderr == (
        f"warning: The cached ONNX export of {spec.describe()} in {folder} is damaged: image-int8.onnx "
        "is not the file exported (its content changed since). Exporting the model again.\n"
    )
    with Library.open(library) as opened:
        for path, vector in zip(files, expected, strict=True):
            known = opened._catalog.known_file(str(path))
            stored = opened._catalog.vector(known.id) if known is not None else None
            assert stored is not None and np.allclose(stored, vector, atol=1e-5)
    made = read_export(spec)
    assert made is not None and set(made.checksums) == set(made.files)
    again = run_cli("index", str(photos), "--library", str(tmp_path / "lib2"), "-q", *tiny_model.index_args())
    assert (again.returncode, again.stderr) == (0, "")  # the new export passes its own check


def test_an_export_without_checksums_is_kept_and_checked_from_then_on(
    tiny_model: TinyModel, caplog: pytest.LogCaptureFixture
) -> None:
    """An export made by a pixsift that recorded no checksums is used as it is (exporting
    ViT-B-32 again would take minutes), and the checksums of the files loaded are recorded then:
    bytes changed after that are found."""
    spec = tiny_spec(tiny_model)
    load_embedder(spec, "cpu", "auto")
    folder = export_folder(spec)
    meta_file = folder / "meta.json"
    meta = json.loads(meta_file.read_text(encoding="utf-8"))
    made = {name: (folder / name).stat().st_mtime_ns for name in meta["files"]}
    meta_file.write_text(json.dumps({k: v for k, v in meta.items() if k != "sha256"}), encoding="utf-8")
    unverified = read_export(spec)
    assert unverified is not None and unverified.checksums == {}

    embedder = load_embedder(spec, "cpu", "auto")
    assert isinstance(embedder, OnnxEmbedder) and embedder.precisions == {"image": "int8", "text": "int8"}
    assert {name: (folder / name).stat().st_mtime_ns for name in meta["files"]} == made  # not exported
    recorded = json.loads(meta_file.read_text(encoding="utf-8"))["sha256"]
    in_use = ["image-int8.onnx", "known-words.json", "text-int8.onnx", "tokenizer.json"]
    assert recorded == {name: meta["sha256"][name] for name in in_use}
    assert sorted(path.name for path in folder.iterdir()) == sorted([*meta["files"], "meta.json"])

    good = embedder.embed_texts(TEXTS)
    change_bytes_inside_a_weight(folder / "text-int8.onnx")
    with caplog.at_level("WARNING"):
        again = load_embedder(spec, "cpu", "auto")
    assert "text-int8.onnx is not the file exported" in caplog.text
    assert np.allclose(again.embed_texts(TEXTS), good, atol=1e-5)


def test_an_export_file_cut_short_is_made_again_by_a_search(
    tiny_model: TinyModel, photos: Path, tmp_path: Path
) -> None:
    """A cut-short text tower is seen by the cold search's size check: the search leaves it
    to the library, which exports the model again and answers as before, with no traceback."""
    library = str(tmp_path / "lib")
    indexed = run_cli("index", str(photos), "--library", library, "-q", *tiny_model.index_args())
    assert indexed.returncode == 0, indexed.stderr
    before = run_cli("search", "a dog", "--library", library, "--format", "json")
    assert before.returncode == 0, before.stderr
    text_file = export_folder(tiny_spec(tiny_model)) / "text-int8.onnx"
    size = text_file.stat().st_size
    with open(text_file, "r+b") as cut:
        cut.truncate(size // 2)
    after = run_cli("search", "a dog", "--library", library, "--format", "json")
    assert after.returncode == 0, after.stderr
    assert "Traceback" not in after.stderr
    assert json.loads(after.stdout) == json.loads(before.stdout)
    assert text_file.stat().st_size == size


def scramble_a_weight(model_file: Path, rank: int) -> None:
    """Flip every byte of the file's `rank`-th largest weight tensor (0: the largest), its size
    kept: the file still loads, and gives other vectors for every input that tensor sees."""
    import onnx

    initializers = onnx.load(str(model_file), load_external_data=False).graph.initializer
    raw = sorted((init.raw_data for init in initializers), key=len, reverse=True)[rank]
    data = bytearray(model_file.read_bytes())
    start = data.find(raw)
    assert len(raw) > 1000 and start > 0
    data[start : start + len(raw)] = bytes(byte ^ 0x5A for byte in raw)
    with open(model_file, "r+b") as file:  # in place: the same file, as a stray write would leave it
        file.write(bytes(data))


def settle(folder: Path) -> None:
    """Wait until every file in `folder` was last changed SETTLED_NS ago: only then is the
    signature of a file found right recorded."""
    newest = max(path.stat().st_ctime_ns for path in folder.iterdir())
    time.sleep(max(0.0, (newest + SETTLED_NS - time.time_ns()) / 1e9 + 0.05))


# `pixsift search ARGS...` in a child that lists on stderr, after "opened:", the files Python opened.
AUDITED_SEARCH = """
import runpy, sys
opened = []
sys.addaudithook(lambda event, args: opened.append(str(args[0])) if event == "open" else None)
sys.argv = ["pixsift", "search", *sys.argv[1:]]
try:
    runpy.run_module("pixsift", run_name="__main__")
finally:
    sys.stderr.write("\\n".join(["opened:", *opened]))
"""


def opened_by_a_search(*args: str) -> list[str]:
    done = subprocess.run(
        [sys.executable, "-c", AUDITED_SEARCH, *args], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr
    return done.stderr.split("opened:\n", 1)[1].splitlines()


def cached_text_vector(spec: ModelSpec, text: str) -> np.ndarray:
    """The vector of `text` from the cached int8 text tower as it is, unchecked."""
    export = read_export(spec)
    assert export is not None
    return OnnxEmbedder(export, {"text": "int8"}, no_remake).embed_texts([text])


@pytest.mark.parametrize("times", ["changed", "set back"])
def test_a_text_tower_changed_in_place_is_found_by_a_cold_search(
    tiny_model: TinyModel, photos: Path, tmp_path: Path, times: str
) -> None:
    """A cold search cannot read its text tower through on every query; it records the `stat`
    of each file it found right, and reads through only a file whose `stat` changed. A text
    tower changed in place, its size kept (it loads, and ranks the photos otherwise), is found
    even when its modification time is set back: the search says so and answers as before."""
    spec = tiny_spec(tiny_model)
    library = str(tmp_path / "lib")
    indexed = run_cli("index", str(photos), "--library", library, "-q", *tiny_model.index_args())
    assert indexed.returncode == 0, indexed.stderr
    folder = export_folder(spec)
    text_file = folder / "text-int8.onnx"
    search = ("a dog", "--library", library, "--format", "json")
    settle(folder)
    assert str(text_file) in opened_by_a_search(*search)  # not checked since it was exported
    signed = json.loads((folder / "meta.json").read_text(encoding="utf-8"))["verified"]
    assert sorted(signed) == ["known-words.json", "text-int8.onnx", "tokenizer.json"]
    assert str(text_file) not in opened_by_a_search(*search)  # checked: its stat is enough now
    before = run_cli("search", *search)
    assert (before.returncode, before.stderr) == (0, "")

    made = text_file.stat()
    good = cached_text_vector(spec, "a dog")
    scramble_a_weight(text_file, rank=1)  # the largest is the token table: most rows unused
    if times == "set back":
        os.utime(text_file, ns=(made.st_atime_ns, made.st_mtime_ns))
    assert (text_file.stat().st_size, text_file.stat().st_mtime_ns == made.st_mtime_ns) == (
        made.st_size,
        times == "set back",
    )
    damaged = cached_text_vector(spec, "a dog")
    assert not np.allclose(damaged, good, atol=1e-2)  # the damage is real, and loads silently

    after = run_cli("search", *search)
    assert after.returncode == 0, after.stderr
    assert after.stderr == (
        f"warning: The cached ONNX export of {spec.describe()} in {folder} is damaged: text-int8.onnx "
        "is not the file exported (its content changed since). Exporting the model again.\n"
    )
    assert json.loads(after.stdout) == json.loads(before.stdout)
    again = run_cli("search", *search)
    assert (again.returncode, again.stderr, again.stdout) == (0, "", before.stdout)


@needs_permissions
def test_a_cold_search_with_a_read_only_model_cache_still_answers(
    tiny_model: TinyModel, photos: Path, tmp_path: Path
) -> None:
    """Where the cache cannot be written (shared, or on a read-only disk), a cold search cannot
    record what it checked: it reads the text tower through each time, and answers as usual."""
    library = str(tmp_path / "lib")
    indexed = run_cli("index", str(photos), "--library", library, "-q", *tiny_model.index_args())
    assert indexed.returncode == 0, indexed.stderr
    search = ("search", "a dog", "--library", library, "--format", "json")
    writable = run_cli(*search)
    folder = export_folder(tiny_spec(tiny_model))
    meta_file = folder / "meta.json"
    meta = json.loads(meta_file.read_text(encoding="utf-8"))
    meta.pop("verified", None)  # as before any file was checked: a search would record them
    meta_file.write_text(json.dumps(meta), encoding="utf-8")
    settle(folder)
    folder.chmod(0o555)
    try:
        for _ in range(2):
            read_only = run_cli(*search, obey_permissions=True)
            assert (read_only.returncode, read_only.stderr) == (0, "")
            assert json.loads(read_only.stdout) == json.loads(writable.stdout)
        assert json.loads(meta_file.read_text(encoding="utf-8")) == meta
    finally:
        folder.chmod(0o755)
    assert run_cli(*search).returncode == 0  # the control: where it can, a search records them
    assert "verified" in json.loads(meta_file.read_text(encoding="utf-8"))


def test_one_shot_int8_text_tower_gives_the_same_vectors(tiny_model: TinyModel) -> None:
    """A cold search loads the int8 text tower without repacking its weights: it must give
    exactly the vectors a long-running library's tower gives, or the two would rank apart."""
    spec = tiny_spec(tiny_model)
    load_embedder(spec, "cpu", "auto")
    export = read_export(spec)
    assert export is not None and export.model_file("text", "int8") is not None

    def no_remake() -> Export:
        raise AssertionError("the export is whole")

    texts = [*TEXTS, "a photo of a xyzzyq", "x" * 300]
    kept = OnnxEmbedder(export, {"text": "int8"}, no_remake).embed_texts(texts)
    one_shot = OnnxEmbedder(export, {"text": "int8"}, no_remake, one_shot=True).embed_texts(texts)
    assert np.array_equal(one_shot, kept)


def test_damaged_tokenizer_read_late_is_made_again(
    tiny_model: TinyModel, caplog: pytest.LogCaptureFixture
) -> None:
    """A query of known words never reads the BPE file, so where only sizes are checked (an
    embedder on an export as read) damage in it shows only at the first text that needs it:
    that text still gets its vector, from a fresh export. A load through a library finds it at
    once, by its checksum."""
    spec = tiny_spec(tiny_model)
    rare = ["a photo of a xyzzyq"]
    good = load_embedder(spec, "cpu", "auto").embed_texts([*TEXTS[:2], *rare])
    tokenizer_file = export_folder(spec) / "tokenizer.json"
    tokenizer_file.write_bytes(b"\0" * tokenizer_file.stat().st_size)  # same size: not noticed early
    export = read_export(spec)
    assert export is not None
    embedder = OnnxEmbedder(export, {"text": "int8"}, lambda: export_model(ClipEmbedder.load(spec, "cpu")))
    assert np.allclose(embedder.embed_texts(TEXTS[:2]), good[:2], atol=1e-5)
    assert tokenizer_file.read_bytes().startswith(b"\0")  # not needed for known words
    assert np.allclose(embedder.embed_texts(rare), good[2:], atol=1e-5)
    assert json.loads(tokenizer_file.read_text(encoding="utf-8"))  # exported again

    tokenizer_file.write_bytes(b"\0" * tokenizer_file.stat().st_size)
    with caplog.at_level("WARNING"):
        loaded = load_embedder(spec, "cpu", "auto")
    assert "tokenizer.json is not the file exported" in caplog.text
    assert json.loads(tokenizer_file.read_text(encoding="utf-8"))
    assert np.allclose(loaded.embed_texts([*TEXTS[:2], *rare]), good, atol=1e-5)


def test_metadata_of_another_shape_is_a_damaged_export(tiny_model: TinyModel) -> None:
    """meta.json that is JSON but not an export's (null, a list, a field of the wrong kind)."""
    spec = tiny_spec(tiny_model)
    load_embedder(spec, "cpu", "auto")
    meta_file = export_folder(spec) / "meta.json"
    good = json.loads(meta_file.read_text(encoding="utf-8"))
    shapes: list[object] = [None, [], "meta", {**good, "cosine": []}, {**good, "files": ["image-fp32.onnx"]}]
    for damaged in shapes:
        meta_file.write_text(json.dumps(damaged), encoding="utf-8")
        assert read_export(spec) is None
    assert isinstance(load_embedder(spec, "cpu", "auto"), OnnxEmbedder)
    assert read_export(spec) is not None


def test_new_weights_in_the_same_file_are_exported_again(
    tiny_model: TinyModel, other_tiny_checkpoint: Path, tmp_path: Path
) -> None:
    checkpoint = tmp_path / "weights.pt"
    checkpoint.write_bytes(tiny_model.checkpoint.read_bytes())
    spec = resolve_model_spec(str(tiny_model.config), str(checkpoint))
    first = load_embedder(spec, "cpu", "auto").record.fingerprint
    checkpoint.write_bytes(other_tiny_checkpoint.read_bytes())
    assert read_export(spec) is None
    second = load_embedder(spec, "cpu", "auto").record.fingerprint
    assert second != first
    assert second == ClipEmbedder.load(spec, "cpu").record.fingerprint


def test_new_weights_written_with_the_old_mtime_are_not_run_from_the_old_export(
    tiny_model: TinyModel, photos: Path, tmp_path: Path
) -> None:
    """A checkpoint overwritten with other weights of the same size whose mtime is put back
    (`cp -p`, `rsync -t`, `touch -r`): the export was taken as still fitting it, so searches on
    the default engine ran the old weights and passed the library's fingerprint check, while
    `--engine torch` refused them."""
    from pixsift.errors import ModelMismatchError
    from tiny_model import make_checkpoint

    checkpoint = make_checkpoint(tmp_path / "weights.pt", seed=0)
    other = make_checkpoint(tmp_path / "other" / "weights.pt", seed=1)  # its name is in the file
    library_dir = tmp_path / "library"
    with Library.open(library_dir) as library:
        library.index(photos, model=str(tiny_model.config), pretrained=str(checkpoint))
    before = checkpoint.stat()
    assert other.stat().st_size == before.st_size  # only the bytes tell them apart
    checkpoint.write_bytes(other.read_bytes())
    os.utime(checkpoint, ns=(before.st_atime_ns, before.st_mtime_ns))

    spec = resolve_model_spec(str(tiny_model.config), str(checkpoint))
    assert read_export(spec) is None
    for engine in ("auto", "torch"):
        with Library.open(library_dir, engine=engine) as library, pytest.raises(ModelMismatchError):
            library.search("a horse")
    assert load_embedder(spec, "cpu", "auto").record == ClipEmbedder.load(spec, "cpu").record


def test_a_checkpoint_only_touched_by_chmod_keeps_its_export(tiny_model: TinyModel, tmp_path: Path) -> None:
    """Its ctime changed, its bytes did not: the export is kept (read through once, then its
    new signature recorded), not made again."""
    checkpoint = tmp_path / "weights.pt"
    checkpoint.write_bytes(tiny_model.checkpoint.read_bytes())
    spec = resolve_model_spec(str(tiny_model.config), str(checkpoint))
    load_embedder(spec, "cpu", "auto")
    exported = read_export(spec)
    assert exported is not None
    checkpoint.chmod(0o600)
    settle(tmp_path)  # a signature is recorded only for a file that has settled
    assert read_export(spec) == exported
    meta = json.loads((exported.folder / "meta.json").read_text(encoding="utf-8"))
    assert meta["weights"]["signature"][2] == checkpoint.stat().st_ctime_ns


def test_a_running_library_keeps_its_weights_when_another_process_reexports(
    tiny_model: TinyModel, other_tiny_checkpoint: Path, photos: Path, tmp_path: Path
) -> None:
    """A server runs with its image tower loaded; meanwhile the checkpoint is replaced for a
    while and another process re-exports the model from it. The server's first text search
    must still use the library's own weights."""
    from pixsift import Library

    checkpoint = tmp_path / "weights.pt"
    checkpoint.write_bytes(tiny_model.checkpoint.read_bytes())
    library_dir = tmp_path / "library"
    with Library.open(library_dir) as library:
        library.index(photos, model=str(tiny_model.config), pretrained=str(checkpoint))
    with Library.open(library_dir) as fresh:
        expected = fresh.search("a horse", k=5)
    with Library.open(library_dir) as running:
        running.similar((photos / "photo_0100.jpg").read_bytes())  # the image tower only
        checkpoint.write_bytes(other_tiny_checkpoint.read_bytes())
        other = run_cli("search", "a horse", "--library", str(library_dir))
        assert other.returncode == 1 and "weights" in other.stderr  # it re-exported, then refused
        checkpoint.write_bytes(tiny_model.checkpoint.read_bytes())  # put back
        assert running.search("a horse", k=5) == expected


def test_an_export_of_the_same_weights_finished_first_is_kept(tiny_model: TinyModel) -> None:
    """Two processes exporting one model at once: the later one keeps the earlier's files."""
    from pixsift.models.onnx_export import export_model

    clip = ClipEmbedder.load(tiny_spec(tiny_model), "cpu")
    first = export_model(clip)
    files = {name: (first.folder / name).stat().st_ino for name in ["meta.json", *first.files]}
    second = export_model(clip)  # as the slower process finishes the same export
    assert second == first
    assert {name: (second.folder / name).stat().st_ino for name in files} == files
    assert [p.name for p in second.folder.parent.iterdir()] == [second.folder.name]  # no work left


def test_work_left_by_a_killed_export_is_removed_by_the_next(tiny_model: TinyModel) -> None:
    spec = tiny_spec(tiny_model)
    final = export_folder(spec)
    final.parent.mkdir(parents=True, exist_ok=True)
    abandoned, under_way = final.parent / f".{final.name}-killed", final.parent / f".{final.name}-busy"
    for work in (abandoned, under_way):
        work.mkdir()
        (work / "image-fp32.onnx").write_bytes(b"half a model")
    hours_ago = time.time() - 4 * 3600
    os.utime(abandoned, (hours_ago, hours_ago))
    load_embedder(spec, "cpu", "auto")  # exports the model
    assert not abandoned.exists()
    assert under_way.exists()  # another process's export may be under way: left alone


def test_a_cache_that_cannot_be_written_leaves_the_model_on_torch(
    tiny_model: TinyModel, photos: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A cache folder that cannot be made (a file in its way; read-only or full disks end the
    same): auto runs on torch, the ONNX engines say why, and neither ends in a traceback."""
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("", encoding="utf-8")
    cache = str(blocker / "cache")
    monkeypatch.setenv("PIXSIFT_CACHE_DIR", cache)
    spec = tiny_spec(tiny_model)
    assert isinstance(load_embedder(spec, "cpu", "auto"), ClipEmbedder)
    library = str(tmp_path / "lib")
    forced = run_cli("index", str(photos), "--library", library, "--engine", "onnx", *tiny_model.index_args())
    assert forced.returncode == 1, forced.stderr
    assert f"error: Cannot write the ONNX export of {spec.describe()} into {cache}/onnx" in forced.stderr
    assert "PIXSIFT_CACHE_DIR" in forced.stderr and "Traceback" not in forced.stderr


@needs_permissions
def test_a_read_only_cache_is_not_said_to_need_space(
    tiny_model: TinyModel, photos: Path, tmp_path: Path, private_cache: Path
) -> None:
    """A cache folder the user may not write (or on a read-only disk) needs another place, not
    room: the warning says so, and the run goes on on torch."""
    private_cache.mkdir(parents=True)
    private_cache.chmod(0o555)
    try:
        library = ["--library", str(tmp_path / "lib")]
        args = ["index", str(photos), *library, "-q", *tiny_model.index_args()]
        indexed = run_cli(*args, obey_permissions=True)
    finally:
        private_cache.chmod(0o755)
    assert (indexed.returncode, indexed.stderr) == (
        0,
        f"warning: Cannot write the ONNX export of {tiny_spec(tiny_model).describe()} into "
        f"{private_cache}/onnx: Permission denied. Point PIXSIFT_CACHE_DIR at a writable folder. "
        "Running on torch meanwhile.\n",
    )


@needs_permissions
def test_a_damaged_export_in_a_read_only_cache_is_not_said_to_be_exported_again(
    tiny_model: TinyModel, photos: Path, tmp_path: Path, private_cache: Path
) -> None:
    """A damaged export that cannot be removed (a read-only cache) cannot be made again: the
    warning said "Exporting the model again", and the export then failed. Now it says so at
    once: auto runs on torch, an ONNX engine is an error, and the damaged files are not used."""
    spec = tiny_spec(tiny_model)
    load_embedder(spec, "cpu", "auto")
    folder = export_folder(spec)
    change_bytes_inside_a_weight(folder / "image-int8.onnx")
    damaged = (
        f"The cached ONNX export of {spec.describe()} in {folder} is damaged: image-int8.onnx is not "
        "the file exported (its content changed since). It cannot be removed to export the model "
        "again (Permission denied): remove that folder, or point PIXSIFT_CACHE_DIR at a writable folder."
    )
    read_only = [folder, folder.parent, private_cache]
    for path in read_only:
        path.chmod(0o555)
    try:
        runs = {
            engine: run_cli(
                "index",
                str(photos),
                *("--library", str(tmp_path / f"lib-{engine}"), "-q", "--engine", engine),
                *tiny_model.index_args(),
                obey_permissions=True,
            )
            for engine in ("auto", "onnx-int8")
        }
    finally:
        for path in read_only:
            path.chmod(0o755)
    assert (runs["auto"].returncode, runs["auto"].stderr) == (
        0,
        f"warning: {damaged} Running on torch meanwhile.\n",
    )
    assert (runs["onnx-int8"].returncode, runs["onnx-int8"].stderr) == (1, f"error: {damaged}\n")
    torch_vectors = image_vectors(ClipEmbedder.load(spec, "cpu"), sorted(photos.iterdir())[:2])
    with Library.open(tmp_path / "lib-auto") as opened:
        for path, vector in zip(sorted(photos.iterdir())[:2], torch_vectors, strict=True):
            known = opened._catalog.known_file(str(path))
            stored = opened._catalog.vector(known.id) if known is not None else None
            assert stored is not None and np.allclose(stored, vector, atol=1e-5)


def test_the_command_prints_a_model_warning_as_its_own_lines(
    tiny_model: TinyModel, photos: Path, tmp_path: Path
) -> None:
    """Once open_clip was imported (to export, or to run on torch), its logging.info() calls set
    the root logger to basicConfig's format: "WARNING:pixsift.models.loading:Cannot write...",
    where the command's own warnings read "warning: ..."."""
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("", encoding="utf-8")
    unwritable = {"PIXSIFT_CACHE_DIR": str(blocker / "cache")}
    spec = tiny_spec(tiny_model)
    warning = (
        f"warning: Cannot write the ONNX export of {spec.describe()} into {blocker}/cache/onnx: "
        "Not a directory. Point PIXSIFT_CACHE_DIR at a writable folder. Running on torch meanwhile.\n"
    )
    library = ["--library", str(tmp_path / "lib")]
    indexed = run_cli("index", str(photos), *library, "-q", *tiny_model.index_args(), env=unwritable)
    assert (indexed.returncode, indexed.stderr) == (0, warning)
    searched = run_cli("search", "a dog", *library, "--format", "paths", env=unwritable)
    assert (searched.returncode, searched.stderr) == (0, warning)
    # Only the command prints so: a program using the library keeps Python's logging as it is.
    script = "import logging, pixsift.cli; print(logging.getLogger().handlers)"
    imported = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert imported.stdout == "[]\n"


class Phases:
    """An index run's progress listener that records the phases begun and ended."""

    def __init__(self) -> None:
        self.events: list[str] = []

    def start(self, phase: str, total: int | None = None) -> None:
        self.events.append(phase)

    def advance(self, steps: int = 1) -> None:
        pass

    def stop(self) -> None:
        self.events.append("(end)")

    def around_the_model(self) -> list[str]:
        """The phases from the model's loading to the embedding, each with its end."""
        first = self.events.index(LOADING_PHASE)
        return self.events[first : self.events.index("Embedding", first)]


def test_a_models_first_use_is_a_phase_of_its_own(
    tiny_model: TinyModel, other_tiny_checkpoint: Path, photos: Path, tmp_path: Path
) -> None:
    """Exporting a model takes a minute for ViT-B-32, once: an index run says so in its own
    phase, not under "Loading model", and a run with the export cached does not."""
    first, again, reembedded = Phases(), Phases(), Phases()
    with Library.open(tmp_path / "first") as library:
        library.index(
            photos, model=str(tiny_model.config), pretrained=str(tiny_model.checkpoint), progress=first
        )
    assert first.around_the_model() == [LOADING_PHASE, "(end)", PREPARING_PHASE, "(end)"]
    with Library.open(tmp_path / "second") as library:
        library.index(
            photos, model=str(tiny_model.config), pretrained=str(tiny_model.checkpoint), progress=again
        )
        # --reembed loads the new model before anything else: its first use is said there too
        other = str(other_tiny_checkpoint)
        library.index(
            photos, model=str(tiny_model.config), pretrained=other, reembed=True, progress=reembedded
        )
    assert again.around_the_model() == [LOADING_PHASE, "(end)"]
    assert reembedded.events[:4] == [LOADING_PHASE, "(end)", PREPARING_PHASE, "(end)"]
    assert PREPARING_PHASE not in reembedded.events[4:]


_ESCAPES = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\r")


def run_cli_on_a_terminal(*args: str) -> tuple[subprocess.CompletedProcess[str], str]:
    """The `pixsift` command with its stderr on a terminal (a pseudo-terminal), as in a shell:
    what it printed to stdout, and to the terminal without its escape codes."""
    terminal, its_side = pty.openpty()
    transcript: list[bytes] = []

    def read() -> None:  # drained as it comes: a full terminal buffer would stop the command
        while True:
            try:
                chunk = os.read(terminal, 65536)
            except OSError:  # the command ended, closing its side
                return
            if not chunk:
                return
            transcript.append(chunk)

    reader = threading.Thread(target=read)
    reader.start()
    try:
        with subprocess.Popen(
            [sys.executable, "-m", "pixsift", *args], stdout=subprocess.PIPE, stderr=its_side, text=True
        ) as command:
            os.close(its_side)
            stdout, _ = command.communicate(timeout=180)
        reader.join(timeout=10)
    finally:
        os.close(terminal)
    shown = _ESCAPES.sub("", b"".join(transcript).decode("utf-8", "replace"))
    return subprocess.CompletedProcess(command.args, command.returncode, stdout, ""), shown


def test_the_command_says_a_models_first_use_takes_longer(
    tiny_model: TinyModel, photos: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On a terminal, the first index run with a model shows the one-time setup among its
    progress bars, and a search that has to export the model says so in a line; later runs,
    with the export cached, show neither."""
    library = ["--library", str(tmp_path / "lib")]
    indexed, shown = run_cli_on_a_terminal("index", str(photos), *library, *tiny_model.index_args())
    assert indexed.returncode == 0, shown
    assert PREPARING_PHASE in shown and "Embedding" in shown
    other = ["--library", str(tmp_path / "other")]
    indexed, shown = run_cli_on_a_terminal("index", str(photos), *other, *tiny_model.index_args())
    assert indexed.returncode == 0, shown
    assert LOADING_PHASE in shown and PREPARING_PHASE not in shown
    monkeypatch.setenv("PIXSIFT_CACHE_DIR", str(tmp_path / "emptied-cache"))
    searched, shown = run_cli_on_a_terminal("search", "a dog", *library, "--format", "paths")
    assert searched.returncode == 0, shown
    assert shown == preparing_message(tiny_spec(tiny_model)) + "\n"
    assert len(searched.stdout.splitlines()) == 10
    searched, shown = run_cli_on_a_terminal("search", "a dog", *library, "--format", "paths")
    assert (searched.returncode, shown) == (0, "")


def test_an_install_without_onnx_runtime_leaves_the_cache_alone(
    tiny_model: TinyModel, photos: Path, tmp_path: Path
) -> None:
    """onnxruntime that cannot be imported (a package that fails as a broken install does stands
    in for it): auto runs on torch and says so, the ONNX engines say why, and the cache keeps
    nothing of it: no record of towers that "cannot be exported", which kept the fast path off
    once onnxruntime was back, and no removal of an export a whole install made."""
    shim = tmp_path / "shim" / "onnxruntime"
    shim.mkdir(parents=True)
    (shim / "__init__.py").write_text("raise ImportError(\"No module named 'onnxruntime'\")\n")
    paths = [str(shim.parent), *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]
    broken = {"PYTHONPATH": os.pathsep.join(paths)}
    spec = tiny_spec(tiny_model)
    library = str(tmp_path / "lib")

    indexed = run_cli("index", str(photos), "--library", library, "-q", *tiny_model.index_args(), env=broken)
    assert indexed.returncode == 0, indexed.stderr
    assert "No module named 'onnxruntime'" in indexed.stderr and "running on torch" in indexed.stderr
    assert indexed.stderr.startswith("warning: ") and indexed.stderr.count("\n") == 1
    assert not export_folder(spec).exists()
    forced = run_cli("search", "a dog", "--library", library, "--engine", "onnx", env=broken)
    assert forced.returncode == 1 and "Traceback" not in forced.stderr
    assert "cannot run through ONNX Runtime" in forced.stderr and "--engine torch" in forced.stderr

    assert isinstance(load_embedder(spec, "cpu", "auto"), OnnxEmbedder)  # a whole install exports
    made = read_export(spec)
    assert made is not None and not made.reason
    searched = run_cli("search", "a dog", "--library", library, "--format", "paths", env=broken)
    assert searched.returncode == 0 and len(searched.stdout.splitlines()) == 10, searched.stderr
    kept = read_export(spec)  # its files checked (their signatures recorded), but not made again
    assert kept is not None and replace(kept, signatures={}) == replace(made, signatures={})


@pytest.mark.skipif(sys.platform == "win32", reason="RLIMIT_FSIZE is POSIX")
def test_an_export_cut_short_by_a_full_disk_is_not_kept(tiny_model: TinyModel, private_cache: Path) -> None:
    """The text tower's files do not fit (a 4 MB file size limit stands in for a full disk):
    that run stays on torch, and the next one, with room, exports both towers, rather than
    remembering the text tower as one that cannot be exported."""
    spec = tiny_spec(tiny_model)
    script = (
        "import resource, signal, sys\n"
        "signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails instead\n"
        "resource.setrlimit(resource.RLIMIT_FSIZE, (4_000_000, 4_000_000))\n"
        "from pixsift.models.loading import load_embedder\n"
        "from pixsift.models.naming import resolve_model_spec\n"
        "embedder = load_embedder(resolve_model_spec(sys.argv[1], sys.argv[2]), 'cpu', 'auto')\n"
        "print(type(embedder).__name__)\n"
    )
    full = subprocess.run(
        [sys.executable, "-c", script, str(tiny_model.config), str(tiny_model.checkpoint)],
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert full.returncode == 0, full.stderr
    assert full.stdout.strip() == "ClipEmbedder" and "Running on torch" in full.stderr
    assert read_export(spec) is None
    embedder = load_embedder(spec, "cpu", "auto")
    assert isinstance(embedder, OnnxEmbedder) and set(embedder.precisions) == {"image", "text"}


def test_explicit_engines(tiny_model: TinyModel, photo_set: Path) -> None:
    spec = tiny_spec(tiny_model)
    photos = sorted(photo_set.iterdir())[:3]
    torch_engine = load_embedder(spec, "cpu", "torch")
    assert isinstance(torch_engine, ClipEmbedder)
    fp32 = load_embedder(spec, "cpu", "onnx")
    assert isinstance(fp32, OnnxEmbedder) and fp32.precisions == {"image": "fp32", "text": "fp32"}
    int8 = load_embedder(spec, "cpu", "onnx-int8")
    assert isinstance(int8, OnnxEmbedder) and int8.precisions == {"image": "int8", "text": "int8"}
    reference = image_vectors(torch_engine, photos)
    assert np.allclose(image_vectors(fp32, photos), reference, atol=1e-4)
    # The text tower runs on the tokens up to the last END only: the same vectors as open_clip's
    # full context, for short and long texts, alone and in a batch of mixed lengths.
    long_text = "a very long caption " * 30
    for batch in (TEXTS, [TEXTS[0]], [long_text], [TEXTS[0], long_text]):
        assert np.allclose(fp32.embed_texts(batch), torch_engine.embed_texts(batch), atol=1e-4)
    assert np.all(np.sum(image_vectors(int8, photos) * reference, axis=1) >= COSINE_BAR)


def test_forced_int8_below_the_bar_is_said(
    tiny_model: TinyModel, caplog: pytest.LogCaptureFixture, photos: Path, tmp_path: Path
) -> None:
    """In the words of the face it reaches: a program's log names `engine='auto'`, the
    command's stderr `--engine auto` (a program's log said `--engine auto` too)."""

    def said() -> list[str]:
        return [r.getMessage() for r in caplog.records if r.name == "pixsift.models.loading"]

    spec = tiny_spec(tiny_model)
    load_embedder(spec, "cpu", "auto")  # exports the model
    meta_path = export_folder(spec) / "meta.json"
    meta = json.loads(meta_path.read_text())
    assert "int8" in meta["cosine"]["text"]
    caplog.clear()
    load_embedder(spec, "cpu", "onnx-int8")
    assert said() == []  # within the bar: nothing to say
    meta["cosine"]["text"]["int8"] = 0.95  # as a model whose int8 text tower lost accuracy
    meta_path.write_text(json.dumps(meta))
    assert isinstance(load_embedder(spec, "cpu", "onnx-int8"), OnnxEmbedder)  # still as asked
    lead = (
        f"The int8 text tower of {spec.describe()} stayed only within cosine 0.9500 of fp32 "
        "open_clip, below the 0.99 that"
    )
    end = "asks of it; results may differ from fp32."
    assert said() == [f"{lead} engine='auto' {end}"]
    library = ["--library", str(tmp_path / "lib"), "--engine", "onnx-int8"]
    command = run_cli("index", str(photos), *library, "-q", *tiny_model.index_args())
    assert (command.returncode, command.stderr) == (0, f"warning: {lead} --engine auto {end}\n")


def test_unknown_engine_is_a_clear_error(tiny_model: TinyModel, tmp_path: Path) -> None:
    from pixsift import Library
    from pixsift.errors import ModelError

    with pytest.raises(ModelError, match="Unknown engine 'tensorrt'"):
        Library.open(tmp_path / "lib", engine="tensorrt")
    assert not (tmp_path / "lib").exists()


@pytest.mark.slow
def test_torch_engine_still_indexes_and_searches(tiny_model: TinyModel, photos: Path, tmp_path: Path) -> None:
    library = str(tmp_path / "lib")
    done = run_cli("index", str(photos), "--library", library, "--engine", "torch", *tiny_model.index_args())
    assert done.returncode == 0, done.stderr
    assert not (tmp_path / "cache" / "onnx").exists()  # the torch engine exports nothing
    by_torch = run_cli("search", "a dog", "--library", library, "--engine", "torch", "-k", "12", "-f", "json")
    by_default = run_cli("search", "a dog", "--library", library, "-k", "12", "-f", "json")
    assert by_torch.returncode == by_default.returncode == 0, by_torch.stderr + by_default.stderr
    torch_hits = [hit["path"] for hit in json.loads(by_torch.stdout)]
    default_hits = [hit["path"] for hit in json.loads(by_default.stdout)]
    assert len(torch_hits) == 12
    assert torch_hits[:3] == default_hits[:3]  # int8 text tower: the same best matches
    bad = run_cli("search", "a dog", "--library", library, "--engine", "tensorrt")
    assert bad.returncode == 2
    assert "tensorrt" in bad.stderr


@pytest.mark.skipif(not __import__("torch").cuda.is_available(), reason="needs a CUDA GPU (CI is CPU-only)")
def test_cuda_path_matches_the_cpu(tiny_model: TinyModel, photo_set: Path) -> None:
    """`--device cuda`: torch with fp16/bf16 autocast and pinned memory, close to fp32 on the CPU."""
    spec = tiny_spec(tiny_model)
    photos = sorted(photo_set.iterdir())
    gpu = load_embedder(spec, "cuda", "auto")
    assert isinstance(gpu, ClipEmbedder) and gpu.device.type == "cuda"
    cpu = ClipEmbedder.load(spec, "cpu")
    cosine = np.sum(image_vectors(gpu, photos) * image_vectors(cpu, photos), axis=1)
    assert np.all(cosine >= COSINE_BAR)
    texts = np.sum(gpu.embed_texts(TEXTS) * cpu.embed_texts(TEXTS), axis=1)
    assert np.all(texts >= COSINE_BAR)


def test_indexing_with_a_cached_export_never_imports_torch(
    tiny_model: TinyModel, photos: Path, tmp_path: Path
) -> None:
    load_embedder(tiny_spec(tiny_model), "cpu", "auto")  # the export, as a first run makes it
    script = (
        "import sys\n"
        "from pixsift import Library\n"
        f"with Library.open({str(tmp_path / 'lib')!r}) as library:\n"
        f"    report = library.index({str(photos)!r}, model={str(tiny_model.config)!r}, "
        f"pretrained={str(tiny_model.checkpoint)!r})\n"
        "    hits = library.search('a dog', k=3)\n"
        "print(report.embedded, len(hits), 'torch' in sys.modules, 'open_clip' in sys.modules)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=os.environ.copy(), check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["12", "3", "False", "False"]


def test_cli_offers_every_engine() -> None:
    from pixsift.cli import Engine
    from pixsift.models.loading import ENGINES

    assert tuple(engine.value for engine in Engine) == ENGINES


def test_default_engine_vectors_do_not_depend_on_the_batch(tiny_model: TinyModel, photo_set: Path) -> None:
    """A photo gets the same vector whatever else is indexed with it; a text likewise."""
    fast = load_embedder(tiny_spec(tiny_model), "cpu", "auto")
    photos = sorted(photo_set.iterdir())
    together = image_vectors(fast, photos)
    for index in (0, 5):
        alone = image_vectors(fast, [photos[index]])[0]
        assert np.allclose(alone, together[index], atol=1e-6)
    long_text = "a very long caption " * 30
    batch = fast.embed_texts([TEXTS[0], long_text, TEXTS[1]])
    assert np.allclose(fast.embed_texts([TEXTS[0]])[0], batch[0], atol=1e-6)
    assert np.allclose(fast.embed_texts([TEXTS[1]])[0], batch[2], atol=1e-6)
