"""Naming models, finding their weights offline, and failing fast when the hub is unreachable."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import pytest

from conftest import CLOSED_PORT_URL, TinyModel, run_cli
from pixsift.errors import ModelError
from pixsift.models.bundled import BUNDLED_MODELS
from pixsift.models.clip import ClipEmbedder
from pixsift.models.naming import resolve_model_spec
from pixsift.models.spec import BUNDLED_TAG, DEFAULT_MODEL, DEFAULT_PRETRAINED, ModelSpec
from pixsift.models.weights import resolve_weights


def test_default_model() -> None:
    assert resolve_model_spec() == ModelSpec(DEFAULT_MODEL, DEFAULT_PRETRAINED)


def test_config_file_model_keeps_its_architecture(tiny_model: TinyModel) -> None:
    spec = resolve_model_spec(str(tiny_model.config), str(tiny_model.checkpoint))
    assert spec.name == str(tiny_model.config.resolve())
    assert spec.pretrained == str(tiny_model.checkpoint.resolve())
    assert spec.config_json is not None
    assert json.loads(spec.config_json) == json.loads(tiny_model.config.read_text())


def test_bundled_model_is_stored_by_name_not_by_install_path(tmp_path: Path, tiny_model: TinyModel) -> None:
    spec = resolve_model_spec("synthetic-tiny")
    assert (spec.name, spec.pretrained) == ("synthetic-tiny", BUNDLED_TAG)
    assert spec.is_bundled and spec.config_json is not None
    assert json.loads(spec.config_json) == json.loads(BUNDLED_MODELS["synthetic-tiny"].config.read_text())
    assert resolve_weights(spec).path == BUNDLED_MODELS["synthetic-tiny"].checkpoint

    own_weights = resolve_model_spec("synthetic-tiny", str(tiny_model.checkpoint))
    assert not own_weights.is_bundled and own_weights.config_json == spec.config_json

    unknown = ModelSpec("synthetic-huge", BUNDLED_TAG, config_json="{}")
    with pytest.raises(ModelError, match="no bundled model 'synthetic-huge'"):
        resolve_weights(unknown)


def test_bundled_model_loads_offline() -> None:
    embedder = ClipEmbedder.load(resolve_model_spec("synthetic-tiny"), "cpu")
    assert embedder.record.embed_dim == 128 and embedder.image_size == 64
    vectors = embedder.embed_texts(["a red circle", "a blue star"])
    assert vectors.shape == (2, 128)


@pytest.mark.parametrize(
    ("model", "pretrained", "message"),
    [
        ("NoSuchNet-42", None, "Unknown model 'NoSuchNet-42'"),
        ("ViT-B-32", "no_such_tag", "neither a pretrained tag of ViT-B-32 nor a checkpoint file"),
        ("missing/config.json", None, "not found"),
    ],
)
def test_bad_names_are_explained(model: str, pretrained: str | None, message: str) -> None:
    with pytest.raises(ModelError, match=message):
        resolve_model_spec(model, pretrained)


def test_config_file_errors(tmp_path: Path, tiny_model: TinyModel) -> None:
    (tmp_path / "broken.json").write_text("{not json")
    (tmp_path / "other.json").write_text('{"hello": 1}')
    with pytest.raises(ModelError, match="not valid JSON"):
        resolve_model_spec(str(tmp_path / "broken.json"), str(tiny_model.checkpoint))
    with pytest.raises(ModelError, match="not an open_clip model config"):
        resolve_model_spec(str(tmp_path / "other.json"), str(tiny_model.checkpoint))
    with pytest.raises(ModelError, match=r"as pretrained='/path/to/checkpoint.pt'\.$"):
        resolve_model_spec(str(tiny_model.config))
    with pytest.raises(ModelError, match=r"Checkpoint .* not found"):
        resolve_model_spec(str(tiny_model.config), str(tmp_path / "missing.pt"))
    with pytest.raises(ModelError, match="takes the path of a checkpoint file"):  # a tag, not a file
        resolve_model_spec("synthetic-tiny", "laion2b_s34b_b79k")


def test_config_and_checkpoint_messages_say_where_they_looked(
    tmp_path: Path, tiny_model: TinyModel, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A relative path is named as written and as the absolute path it was read as, as in
    every other message about a path: "my-clip.json" alone did not say which folder."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "weights").mkdir()
    here = re.escape(str(tmp_path))
    with pytest.raises(
        ModelError, match=rf"^Model config sub/clip\.json \({here}/sub/clip\.json\) not found\.$"
    ):
        resolve_model_spec("sub/clip.json", str(tiny_model.checkpoint))
    with pytest.raises(ModelError, match=rf"^Checkpoint clip\.pt \({here}/clip\.pt\) not found\. "):
        resolve_model_spec(str(tiny_model.config), "clip.pt")
    with pytest.raises(ModelError, match=rf"^Checkpoint weights \({here}/weights\) is a folder:"):
        resolve_model_spec(str(tiny_model.config), "weights")


def test_a_checkpoint_that_does_not_fit_is_a_model_error(tmp_path: Path, tiny_model: TinyModel) -> None:
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    spec = resolve_model_spec(str(tiny_model.config), str(tmp_path / "junk.pt"))
    with pytest.raises(ModelError, match="Cannot load"):
        ClipEmbedder.load(spec, "cpu")


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("empty", r"the checkpoint cannot be read \(the file is empty\)"),
        ("text", r"the checkpoint cannot be read \(.*\): it may be cut short or damaged"),
        ("truncated", r"the checkpoint cannot be read \(.*\): it may be cut short or damaged"),
        (
            "another model",
            r"the checkpoint's weights do not fit the model's architecture \(.*\): they were made",
        ),
    ],
)
def test_a_checkpoint_that_cannot_load_says_why(
    tmp_path: Path, tiny_model: TinyModel, content: str, message: str
) -> None:
    """torch said only "EOFError" for an empty file, "101" for a text file, and for another
    model's weights the heading of a list of keys it then cut off."""
    checkpoint = tmp_path / "weights.pt"
    whole = tiny_model.checkpoint.read_bytes()
    checkpoint.write_bytes(
        {
            "empty": b"",
            "text": b"hello\n",
            "truncated": whole[: len(whole) // 2],
            "another model": BUNDLED_MODELS["synthetic-tiny"].checkpoint.read_bytes(),
        }[content]
    )
    spec = resolve_model_spec(str(tiny_model.config), str(checkpoint))
    with pytest.raises(ModelError, match=f"^Cannot load {re.escape(spec.describe())}: {message}") as raised:
        ClipEmbedder.load(spec, "cpu")
    assert "\n" not in str(raised.value)


def test_a_folder_given_as_checkpoint_is_named_a_folder(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="is a folder: pretrained takes a checkpoint file"):
        resolve_model_spec("synthetic-tiny", str(tmp_path))


def test_fingerprint_identifies_the_weights_not_the_file(tiny_model: TinyModel, tmp_path: Path) -> None:
    spec = resolve_model_spec(str(tiny_model.config), str(tiny_model.checkpoint))
    moved = tmp_path / "renamed.pt"
    moved.write_bytes(tiny_model.checkpoint.read_bytes())
    first = ClipEmbedder.load(spec, "cpu").record
    second = ClipEmbedder.load(resolve_model_spec(str(tiny_model.config), str(moved)), "cpu").record
    assert first.fingerprint == second.fingerprint and len(first.fingerprint) == 16
    assert first.embed_dim == 64


def test_cuda_asked_for_without_a_gpu_is_explained() -> None:
    import torch

    from pixsift.models.clip import resolve_device

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    with pytest.raises(ModelError, match="no CUDA GPU"):
        resolve_device("cuda")
    assert str(resolve_device("auto")) == "cpu"


def test_a_device_torch_cannot_use_is_explained_before_the_model_loads() -> None:
    """An absent Apple GPU or a GPU number beyond the last is a ModelError, not torch's traceback
    when the model is moved there."""
    import torch

    from pixsift.models.clip import resolve_device

    if torch.backends.mps.is_available():
        pytest.skip("this machine has an Apple GPU")
    with pytest.raises(ModelError, match="no Apple GPU"):
        resolve_device("mps")
    if torch.cuda.is_available():
        with pytest.raises(ModelError, match="numbered from 0"):
            resolve_device(f"cuda:{torch.cuda.device_count()}")


def test_cached_hub_weights_are_used_without_any_network(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The weights of a pretrained tag, already in the hub cache, resolve with the hub unreachable."""
    import open_clip
    from huggingface_hub import constants

    repo_id = open_clip.get_pretrained_cfg(DEFAULT_MODEL, DEFAULT_PRETRAINED)["hf_hub"].rstrip("/")
    cache = tmp_path / "hub"
    repo_dir = cache / ("models--" + repo_id.replace("/", "--"))
    commit = "0123456789abcdef0123456789abcdef01234567"
    (repo_dir / "refs").mkdir(parents=True)
    (repo_dir / "refs" / "main").write_text(commit)
    snapshot = repo_dir / "snapshots" / commit
    snapshot.mkdir(parents=True)
    (snapshot / "open_clip_model.safetensors").write_bytes(b"weights")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))

    weights = resolve_weights(ModelSpec(DEFAULT_MODEL, DEFAULT_PRETRAINED))
    assert weights.path == snapshot / "open_clip_model.safetensors"
    assert weights.preprocess["resize_mode"] == "shortest"


def test_unreachable_hub_fails_fast_with_a_helpful_message(tmp_path: Path) -> None:
    """The real command, with the default model, on a machine where the hub cannot be reached."""
    from sample_photos import write_photos

    write_photos(tmp_path / "photos", 1)
    started = time.monotonic()
    result = run_cli(
        "index",
        str(tmp_path / "photos"),
        "--library",
        str(tmp_path / "lib"),
        env={"HF_HOME": str(tmp_path / "hf"), "HF_ENDPOINT": CLOSED_PORT_URL},
        timeout=120,
    )
    elapsed = time.monotonic() - started
    assert result.returncode == 1
    assert result.stderr.startswith("error: Cannot get the weights of ViT-B-32 (laion2b_s34b_b79k)")
    assert "--pretrained /path/to/checkpoint" in result.stderr
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    # open_clip alone retries for most of a minute; the probe gives up after a few seconds.
    assert elapsed < 60, f"took {elapsed:.0f} s"


def test_offline_mode_is_named_in_the_error(tmp_path: Path) -> None:
    from sample_photos import write_photos

    write_photos(tmp_path / "photos", 1)
    result = run_cli(
        "index",
        str(tmp_path / "photos"),
        "--library",
        str(tmp_path / "lib"),
        env={"HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf")},
    )
    assert result.returncode == 1
    assert "HF_HUB_OFFLINE is set" in result.stderr


def test_a_new_library_whose_model_cannot_load_keeps_no_folder(tmp_path: Path) -> None:
    """Else a later plain `pixsift index` would index the folder with the default model, not
    the one asked for: the failed first run leaves no library to run it in."""
    from sample_photos import write_photos

    write_photos(tmp_path / "photos", 1)
    library = ["--library", str(tmp_path / "lib")]
    offline = {"HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf")}
    failed = run_cli("index", str(tmp_path / "photos"), *library, "--model", "ViT-B-16", env=offline)
    assert failed.returncode == 1 and "Cannot get the weights of ViT-B-16" in failed.stderr
    again = run_cli("index", *library, env=offline)
    assert (again.returncode, again.stderr) == (
        1,
        f"error: No pixsift library at {tmp_path / 'lib'}. Create one by indexing a folder: "
        "pixsift index ~/Photos\n",
    )


def _files_under(folder: Path) -> dict[str, bytes | None]:
    """Every path under `folder` (itself included), with the bytes of each file."""
    return {
        str(path.relative_to(folder.parent)): path.read_bytes() if path.is_file() else None
        for path in sorted([folder, *folder.rglob("*")])
    }


@pytest.mark.parametrize(
    "options",
    [
        [],  # the default model: its weights are not cached, and the hub cannot be reached
        ["--model", "nosuch"],
        ["--model", "{config}"],  # a model-config file that is no open_clip config
        ["--pretrained", "{missing}"],
        ["--model", "synthetic-tiny", "--pretrained", "{config}"],  # a file, but no checkpoint
    ],
    ids=["unreachable-hub", "unknown-model", "bad-config", "missing-checkpoint", "not-a-checkpoint"],
)
def test_a_first_index_whose_model_cannot_be_had_leaves_no_library(
    tmp_path: Path, options: list[str]
) -> None:
    """`pixsift index ~/Photos --library NEW` that fails before it indexed anything made an
    empty library (library.db, library.lock and the folders above them), which every later
    command then met as a library "with no images indexed yet"."""
    from sample_photos import write_photos

    write_photos(tmp_path / "photos", 2)
    config = tmp_path / "config.json"
    config.write_text('{"embed_dim": 8}')
    names = {"config": str(config), "missing": str(tmp_path / "missing.pt")}
    new = tmp_path / "libraries" / "nested" / "lib"
    failed = run_cli(
        "index",
        str(tmp_path / "photos"),
        "--library",
        str(new),
        *(option.format(**names) for option in options),
        env={"HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf")},
    )
    assert failed.returncode == 1 and failed.stderr.startswith("error: "), failed.stderr
    assert "Traceback" not in failed.stderr
    assert not (tmp_path / "libraries").exists()  # the folders made for it went too
    status = run_cli("status", "--library", str(new))
    assert status.returncode == 1 and "No pixsift library at" in status.stderr


def test_a_failed_first_index_leaves_a_folder_the_user_made_as_it_was(tmp_path: Path) -> None:
    """Only what the failed run made goes: a folder made beforehand stays, empty or with what
    else it held, and so does a lock file left there before."""
    from sample_photos import write_photos

    write_photos(tmp_path / "photos", 1)
    empty, used = tmp_path / "empty", tmp_path / "used"
    empty.mkdir()
    used.mkdir()
    (used / "notes.txt").write_text("mine")
    (used / "library.lock").write_bytes(b"")
    before = {folder: _files_under(folder) for folder in (empty, used)}
    offline = {"HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf")}
    for folder in (empty, used):
        failed = run_cli("index", str(tmp_path / "photos"), "--library", str(folder), env=offline)
        assert failed.returncode == 1 and "Cannot get the weights" in failed.stderr
        assert _files_under(folder) == before[folder]


def test_a_model_that_cannot_load_for_an_empty_folder_keeps_no_folder(tmp_path: Path) -> None:
    """An empty folder's first run still loads the model asked for, to make it the library's:
    when that fails, the folder is not kept either, so a later plain `pixsift index` cannot
    choose the default model for it (and a new library is not left behind)."""
    (tmp_path / "empty").mkdir()
    not_a_checkpoint = tmp_path / "weights.pt"
    not_a_checkpoint.write_text("not weights")
    asked = ["--model", "synthetic-tiny", "--pretrained", str(not_a_checkpoint)]
    new, unembedded = tmp_path / "new-lib", tmp_path / "unembedded-lib"
    made = run_cli("index", str(tmp_path / "empty"), "--library", str(unembedded))
    assert made.returncode == 0, made.stderr
    (tmp_path / "other").mkdir()
    for library in (new, unembedded):
        failed = run_cli("index", str(tmp_path / "other"), "--library", str(library), *asked)
        assert failed.returncode == 1 and "Cannot load synthetic-tiny" in failed.stderr, failed.stderr
    assert not new.exists()
    status = run_cli("status", "--library", str(unembedded), "--format", "json")
    assert [root["path"] for root in json.loads(status.stdout)["roots"]] == [str(tmp_path / "empty")]


def _library_content(folder: Path) -> tuple[list[str], list[str]]:
    """The files of the library in `folder` but its lock file (which any run makes), and what
    its database holds."""
    import sqlite3
    from contextlib import closing

    names = sorted(path.name for path in folder.iterdir() if path.name != "library.lock")
    with closing(sqlite3.connect(folder / "library.db")) as db:
        return names, list(db.iterdump())


def test_a_failed_index_leaves_an_existing_library_as_it_was(tmp_path: Path, photos: Path) -> None:
    """A library made before, even one with nothing in it yet, is never taken back."""
    from pixsift import Library

    empty, unembedded = tmp_path / "empty-lib", tmp_path / "unembedded-lib"
    Library.open(empty).close()
    (tmp_path / "nothing").mkdir()  # indexed: a folder kept, no model chosen yet
    made = run_cli("index", str(tmp_path / "nothing"), "--library", str(unembedded))
    assert made.returncode == 0, made.stderr
    before = {folder: _library_content(folder) for folder in (empty, unembedded)}
    offline = {"HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf")}
    for folder in (empty, unembedded):
        failed = run_cli("index", str(photos), "--library", str(folder), env=offline)
        assert failed.returncode == 1 and "Cannot get the weights" in failed.stderr
        assert _library_content(folder) == before[folder]


def test_a_bundled_model_with_other_weights_is_shown_by_its_name(tmp_path: Path, photos: Path) -> None:
    """`--model synthetic-tiny --pretrained my.pt` is that model to `pixsift status`, not the path
    of its config inside the installed package; asking for it again is the same model, also to
    a library that recorded the path."""
    import sqlite3

    checkpoint = tmp_path / "my-weights.pt"
    checkpoint.write_bytes(BUNDLED_MODELS["synthetic-tiny"].checkpoint.read_bytes())
    library = tmp_path / "lib"
    args = ["index", str(photos), "--library", str(library), "--engine", "torch", "-q"]
    args += ["--model", "synthetic-tiny", "--pretrained", str(checkpoint)]
    assert run_cli(*args).returncode == 0

    status = run_cli("status", "--library", str(library))
    assert f"synthetic-tiny ({checkpoint})" in status.stdout, status.stdout
    assert "builtin" not in status.stdout
    model = json.loads(run_cli("status", "--library", str(library), "--format", "json").stdout)["model"]
    assert (model["name"], model["pretrained"]) == ("synthetic-tiny", str(checkpoint))
    assert run_cli(*args).returncode == 0

    with sqlite3.connect(library / "library.db") as db:  # as earlier versions recorded it
        db.execute("UPDATE model SET name = ?", (str(BUNDLED_MODELS["synthetic-tiny"].config),))
    again = run_cli(*args)
    assert again.returncode == 0, again.stderr


EMPTY_MODEL = (
    "The model name (--model) is empty: name one, e.g. ViT-B-32 or synthetic-tiny, "
    "or leave the option out for the default."
)
EMPTY_WEIGHTS = (
    "The weights (--pretrained) are empty: give a pretrained tag or a checkpoint file, "
    "or leave the option out for the model's default."
)
# As the Python API says them: its arguments, not the command's options.
EMPTY_MODEL_ARGUMENT = (
    "The model name (model) is empty: name one, e.g. ViT-B-32 or synthetic-tiny, "
    "or leave it out for the default."
)
EMPTY_WEIGHTS_ARGUMENT = (
    "The weights (pretrained) are empty: give a pretrained tag or a checkpoint file, "
    "or leave them out for the model's default."
)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--model", ""], EMPTY_MODEL),  # meant the default model, silently
        (["--model", "  "], EMPTY_MODEL),
        (["--pretrained", ""], EMPTY_WEIGHTS),  # the default model too
        (["--model", "synthetic-tiny", "--pretrained", ""], EMPTY_WEIGHTS),  # "Checkpoint . is a folder"
    ],
)
def test_an_empty_model_or_weights_option_is_refused(
    tmp_path: Path, options: list[str], message: str
) -> None:
    """`pixsift index --model "$MODEL"` with MODEL unset."""
    from sample_photos import write_photos

    write_photos(tmp_path / "photos", 1)
    new = run_cli("index", str(tmp_path / "photos"), "--library", str(tmp_path / "lib"), *options)
    assert (new.returncode, new.stdout, new.stderr) == (1, "", f"error: {message}\n")
    assert not (tmp_path / "lib").exists()


def test_an_empty_model_is_refused_by_a_library_that_has_one(library_dir: Path, photos: Path) -> None:
    """An existing library kept its own model when asked for "": refused all the same."""
    from pixsift import Library

    with Library.open(library_dir) as library:
        library.index(photos, model="synthetic-tiny")
        for model, pretrained, message in (
            ("", None, EMPTY_MODEL_ARGUMENT),
            (None, " ", EMPTY_WEIGHTS_ARGUMENT),
        ):
            with pytest.raises(ModelError) as refused:
                library.index(model=model, pretrained=pretrained)
            assert str(refused.value) == message
    result = run_cli("index", "--library", str(library_dir), "--model", "")
    assert (result.returncode, result.stderr) == (1, f"error: {EMPTY_MODEL}\n")


def test_weights_named_alone_keep_the_library_architecture(
    tiny_model: TinyModel, other_tiny_checkpoint: Path, tmp_path: Path, photos: Path
) -> None:
    """`pixsift index --reembed --pretrained new.pt` on a library made from a model-config file
    re-embeds with that architecture and the new weights, where it used to switch the library
    to ViT-B-32; without --reembed it says which option to leave out; and a tag of ViT-B-32
    is refused rather than taken as a switch of architecture."""
    library = tmp_path / "lib"
    base = ["--library", str(library), "--engine", "torch", "-q"]
    assert run_cli("index", str(photos), *tiny_model.index_args(), *base).returncode == 0
    config_name = str(tiny_model.config.resolve())

    asked = run_cli("index", "--pretrained", str(other_tiny_checkpoint), *base)
    assert asked.returncode == 1
    assert "Leave out --pretrained to keep using it" in asked.stderr, asked.stderr
    assert f"not {config_name} ({other_tiny_checkpoint})" in asked.stderr

    tag = run_cli("index", "--reembed", "--pretrained", DEFAULT_PRETRAINED, *base)
    assert tag.returncode == 1
    assert "--pretrained takes the path of a checkpoint file" in tag.stderr, tag.stderr

    reembedded = run_cli("index", "--reembed", "--pretrained", str(other_tiny_checkpoint), *base)
    assert reembedded.returncode == 0, reembedded.stderr
    model = json.loads(run_cli("status", "--library", str(library), "--format", "json").stdout)["model"]
    assert (model["name"], model["pretrained"]) == (config_name, str(other_tiny_checkpoint))


def test_weights_named_alone_for_a_bundled_model(tmp_path: Path, photos: Path) -> None:
    """A synthetic-tiny library given `--pretrained FILE` alone stays synthetic-tiny; with
    `--pretrained bundled` it goes back to the weights that ship with pixsift."""
    checkpoint = tmp_path / "my-weights.pt"
    checkpoint.write_bytes(BUNDLED_MODELS["synthetic-tiny"].checkpoint.read_bytes())
    library = tmp_path / "lib"
    base = ["--library", str(library), "--engine", "torch", "-q"]
    assert run_cli("index", str(photos), "--model", "synthetic-tiny", *base).returncode == 0
    for weights in (str(checkpoint), BUNDLED_TAG):
        result = run_cli("index", "--reembed", "--pretrained", weights, *base)
        assert result.returncode == 0, result.stderr
        status = json.loads(run_cli("status", "--library", str(library), "--format", "json").stdout)
        assert (status["model"]["name"], status["model"]["pretrained"]) == ("synthetic-tiny", weights)
