"""The `pixsift` command: parses arguments, calls the library, formats what it returns.

Exit codes: 0 on success (also when a search finds nothing: the message goes to stderr),
1 on a user error (one line on stderr, never a traceback), 2 on bad usage, 3 when a command
finished but found trouble (files an index run could not read, problems doctor left), 130 on
Ctrl-C, 141 when the output's reader stopped reading (`| head -1`), as other Unix tools do.
"""

from __future__ import annotations

import codecs
import io
import logging
import math
import os
import signal
import sys
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from enum import StrEnum
from typing import TYPE_CHECKING, Annotated, Any, Optional, TypeVar, cast

import typer
from typer.core import TyperGroup

from pixsift import __version__
from pixsift.config import DEFAULT_LOAD_WAIT_S, LOCK_WAIT_S, MAX_BATCH_SIZE, MAX_WORKERS
from pixsift.errors import LibraryBusyError, PixsiftError, given_path
from pixsift.formatting import ResultFormat, StatusFormat, format_kept

if TYPE_CHECKING:
    from pixsift.library import Library
    from pixsift.search import QueryTerm, SearchFilters, SearchResult
    from pixsift.terminal_progress import TerminalProgress

# File and folder arguments are taken as text, not typer Paths: typer turns an empty one
# ("$UNSET") into ".", the working directory, and refuses one without read permission as bad
# usage (exit 2, a boxed "is not readable"). The library says what is wrong with either (exit 1,
# or 3 with a warning for a folder an index run could not walk).
EXIT_USER_ERROR = 1
EXIT_TROUBLE = 3  # finished, but some files could not be read, or problems remain
EXIT_INTERRUPTED = 130
EXIT_CLOSED_PIPE = 128 + 13  # 128 + SIGPIPE: what a shell shows for a tool its pipe stopped
_PILLOW_BOMB_WARNING = r"Image size \(\d+ pixels\) exceeds limit of \d+ pixels"
_PILLOW_EXIF_WARNING = r"(Possibly )?[Cc]orrupt EXIF"
T = TypeVar("T")


@contextmanager
def _quiet_on_closed_pipe() -> Iterator[None]:
    """End quietly with 141 when the reader of the output has gone (`pixsift search x | head -1`):
    typer would exit with 1, which pixsift keeps for errors it explains."""
    try:
        yield
    except BrokenPipeError:
        _output_to_devnull()
        sys.exit(EXIT_CLOSED_PIPE)
    except SystemExit as exit_:
        # rich, which prints the help, meets a closed pipe itself: it sends the rest to
        # /dev/null and exits with 1, raised while it handles the BrokenPipeError.
        if exit_.code == 1 and isinstance(exit_.__context__, BrokenPipeError):
            sys.exit(EXIT_CLOSED_PIPE)
        raise
    except OSError as error:
        # The output sent to a full disk (`> results.json`) or a failing device: one line, not
        # the traceback of the write. Any other OSError here is no output's, and stays as it is.
        if not _raised_writing_output(error):
            raise
        with suppress(OSError, ValueError):  # stderr may be on that disk too
            typer.echo(f"error: Cannot write the output: {error.strerror or error}.", err=True)
        _output_to_devnull()
        sys.exit(EXIT_USER_ERROR)


def _raised_writing_output(error: OSError) -> bool:
    """Whether `error` came from a write to stdout or stderr: the frame that raised it holds
    that stream (click's `echo`) or an object printing to it (rich's console, for the help).
    The failed bytes are dropped, so a second flush cannot tell."""
    from rich.console import Console  # here, on an error's way out: rich costs every start 30 ms

    traceback = error.__traceback__
    while traceback is not None and traceback.tb_next is not None:
        traceback = traceback.tb_next
    if traceback is None:
        return False
    for value in traceback.tb_frame.f_locals.values():
        streams = [value, getattr(value, "file", None)] if isinstance(value, (io.IOBase, Console)) else []
        for stream in streams:
            if isinstance(stream, io.IOBase):
                with suppress(OSError, ValueError):  # a test runner's capture has no descriptor
                    if stream.fileno() in (1, 2):
                        return True
    return False


def _output_to_devnull() -> None:
    """Send what is still buffered for stdout and stderr to /dev/null: flushed at exit into a
    closed pipe or a full disk, it would fail again, where Python prints "Exception ignored"."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    for stream in (sys.stdout, sys.stderr):
        with suppress(OSError, ValueError, AttributeError):  # not a real file (a test runner's capture)
            os.dup2(devnull, stream.fileno())
    os.close(devnull)


class _Commands(TyperGroup):
    """pixsift's commands, with a closed output pipe handled where they write: in a command
    (`invoke`), and in `--version` and `--help` (`make_context`)."""

    # Untyped on purpose: typer vendors its own click, whose classes it does not export.
    def make_context(self, *args: Any, **kwargs: Any) -> Any:
        with _quiet_on_closed_pipe():
            return super().make_context(*args, **kwargs)

    def invoke(self, *args: Any, **kwargs: Any) -> Any:
        with _quiet_on_closed_pipe(), _interrupt_reported():
            return super().invoke(*args, **kwargs)


@contextmanager
def _interrupt_reported() -> Iterator[None]:
    """Ctrl-C anywhere in a command (its imports, its output while the reader lags) says so
    and exits with 130: typer would end with 130 without a word. An index run reports its own
    interruption (IndexInterrupted) with its summary before this."""
    try:
        yield
    except KeyboardInterrupt:
        typer.echo("Interrupted.", err=True)
        raise typer.Exit(EXIT_INTERRUPTED) from None


app = typer.Typer(
    name="pixsift",
    cls=_Commands,
    help="Semantic image search: index photo folders with CLIP, then search them by text or image.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)

LibraryOpt = Annotated[
    # A string, not a Path: typer would turn an empty value into "." (the working directory),
    # and make a library wherever the command runs; the library refuses an empty path.
    Optional[str],  # noqa: UP045 (typer reads the annotation at run time)
    typer.Option(
        "--library",
        help="Library folder. Default: $PIXSIFT_LIBRARY, else the user data folder.",
        show_default=False,
        metavar="PATH",
    ),
]
DeviceOpt = Annotated[
    str,
    typer.Option(
        "--device", help="Where the model runs: auto (CUDA if available), cpu, cuda, cuda:N or mps."
    ),
]


class Engine(StrEnum):
    """How the model runs (pixsift.models.loading.ENGINES)."""

    auto = "auto"
    torch = "torch"
    onnx = "onnx"
    onnx_int8 = "onnx-int8"


EngineOpt = Annotated[
    Engine,
    typer.Option(
        "--engine",
        case_sensitive=False,  # ONNX as ONNX Runtime writes it; echoed in lower case
        help="How the model runs: auto (on a CPU, ONNX Runtime in int8 for each tower within cosine "
        "0.99 of open_clip, else fp32; torch on a GPU), torch, onnx (fp32) or onnx-int8. Exported "
        "and cached on first use.",
    ),
]
LimitOpt = Annotated[int, typer.Option("-k", "--limit", min=1, max=10_000, help="How many results.")]
MinScoreOpt = Annotated[
    Optional[float],  # noqa: UP045
    typer.Option("--min-score", help="Leave out results below this cosine similarity.", show_default=False),
]
UnderOpt = Annotated[
    Optional[str],  # noqa: UP045 (text, not a Path: Path("") would turn an empty value into ".")
    typer.Option("--under", metavar="PATH", help="Only images inside this folder.", show_default=False),
]
AfterOpt = Annotated[
    Optional[str],  # noqa: UP045
    typer.Option(
        "--after",
        metavar="DATE",
        help="Only images taken on or after DATE, e.g. 2024-05-01 or 2024-05-01T18:30 "
        "(the EXIF date, else the file's time; local time).",
        show_default=False,
    ),
]
BeforeOpt = Annotated[
    Optional[str],  # noqa: UP045
    typer.Option(
        "--before", metavar="DATE", help="Only images taken before DATE (exclusive).", show_default=False
    ),
]
MinWidthOpt = Annotated[
    Optional[int],  # noqa: UP045
    typer.Option(
        "--min-width", min=1, help="Only images at least this many pixels wide.", show_default=False
    ),
]
MinHeightOpt = Annotated[
    Optional[int],  # noqa: UP045
    typer.Option(
        "--min-height", min=1, help="Only images at least this many pixels high.", show_default=False
    ),
]
ImageFormatOpt = Annotated[
    Optional[list[str]],  # noqa: UP045
    typer.Option(
        "--image-format", help="Only images in this format (JPEG, PNG...); repeatable.", show_default=False
    ),
]
_WEIGHT_RULE = "(a positive number; one word before the first * is read as a weight)"
PlusOpt = Annotated[
    Optional[list[str]],  # noqa: UP045
    typer.Option(
        "--plus",
        help=f'Also towards this text; repeatable; weight as "0.5*text" {_WEIGHT_RULE}.',
        show_default=False,
    ),
]
MinusOpt = Annotated[
    Optional[list[str]],  # noqa: UP045
    typer.Option(
        "--minus",
        help=f'Away from this text; repeatable; weight as "0.5*text" {_WEIGHT_RULE}.',
        show_default=False,
    ),
]


def _no_nan(param: typer.CallbackParam, value: float | None) -> float | None:
    """Refuse NaN as the parser refuses a number out of range: click's range lets NaN through,
    as it compares false with both ends."""
    if value is not None and math.isnan(value):
        low, high = getattr(param.type, "min", None), getattr(param.type, "max", None)
        if low is not None and high is not None:
            raise typer.BadParameter(f"{value} is not a number from {low:g} to {high:g}.")
        raise typer.BadParameter(
            f"{value} is not a number{f' of {low:g} or more' if low is not None else ''}."
        )
    return value


WaitOpt = Annotated[
    float,
    typer.Option(
        "--wait",
        min=0,
        metavar="SECONDS",
        callback=_no_nan,
        # Any run that writes holds the library: an index run, a repair, a forget, a server's job.
        help="Seconds to wait while another pixsift run is indexing or repairing this library "
        "(0: refuse at once).",
    ),
]
FormatOpt = Annotated[
    ResultFormat,
    typer.Option(
        "--format",
        "-f",
        case_sensitive=False,  # JSON as it is usually written
        help="table, paths (one per line), paths0 (each ended by a NUL, for xargs -0), json or jsonl.",
    ),
]


def _version(value: bool) -> None:
    if value:
        typer.echo(f"pixsift {__version__}")
        raise typer.Exit()


@app.callback()
def _main(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Show the version.")
    ] = False,
) -> None:
    """Semantic image search: index photo folders with CLIP, then search them by text or image."""


@contextmanager
def _user_errors() -> Iterator[None]:
    """Turn the core's errors into one line on stderr and exit code 1 (Ctrl-C: see
    _interrupt_reported)."""
    try:
        yield
    except LibraryBusyError as exc:  # only the commands that take --wait meet it
        typer.echo(f"error: {exc.for_command_line()} To wait longer, use --wait SECONDS.", err=True)
        raise typer.Exit(EXIT_USER_ERROR) from None
    except PixsiftError as exc:
        kept = format_kept(exc.report)  # an index run stopped part-way: not all was lost
        typer.echo(f"error: {_problem(exc) if kept else exc.for_command_line()}", err=True)
        if kept:
            typer.echo(kept, err=True)
        raise typer.Exit(EXIT_USER_ERROR) from None


def _problem(exc: PixsiftError) -> str:
    """The error less its sentence on what was kept, which the line after it says in numbers
    (a full disk's "Everything saved before is kept", then "4 images ... are kept")."""
    from pixsift.errors import LibraryWriteError

    if isinstance(exc, LibraryWriteError) and exc.problem is not None:
        return exc.problem
    return exc.for_command_line()


@contextmanager
def _first_use_explained() -> Iterator[None]:
    """A command without progress bars (search, similar, eval, serve) says on stderr why a
    model's first use waits (its export, a minute for ViT-B-32) and that later runs will not.
    Only on a terminal, as index shows its phases: a script's stderr stays as it was."""
    from pixsift.models.preparing import listen_for_preparing, preparing_message

    if not sys.stderr.isatty():
        yield
        return
    with listen_for_preparing(lambda spec: typer.echo(preparing_message(spec), err=True)):
        yield


@contextmanager
def _terminal_progress(quiet: bool = False) -> Iterator[TerminalProgress | None]:
    """Progress bars on stderr when it is a terminal (and not `quiet`), else None: an index
    run's phases, and the line that says a command waits for another run to let go of the
    library (so a wait never looks like a hang)."""
    from rich.console import Console

    from pixsift.terminal_progress import TerminalProgress

    stderr = Console(stderr=True)
    if quiet or not stderr.is_terminal:
        yield None
        return
    with TerminalProgress(stderr) as bar:
        yield bar


def _committed(change: Callable[[TerminalProgress | None], T]) -> tuple[T, bool]:
    """Run a short change of the library (relocate, forget), given the terminal's progress
    display for its wait: its result, and whether Ctrl-C came once it was committed (it is
    kept; the command reports it, then exits with 130). A Ctrl-C before ends the command
    here, saying that nothing changed, where a bare "Interrupted." would leave the user to
    guess."""
    from pixsift.storage.interrupts import InterruptedAfterCommit

    try:  # the message once the display is gone, not in the middle of its line
        with _nothing_changed_on_interrupt(), _terminal_progress() as waiting:
            return change(waiting), False
    except InterruptedAfterCommit as interrupt:
        return cast(T, interrupt.result), True


@contextmanager
def _nothing_changed_on_interrupt() -> Iterator[None]:
    """A Ctrl-C before the library's change was committed: one line, exit 130."""
    from pixsift.storage.interrupts import InterruptedAfterCommit

    try:
        yield
    except InterruptedAfterCommit:
        raise
    except KeyboardInterrupt:
        typer.echo("Interrupted: nothing was changed.", err=True)
        raise typer.Exit(EXIT_INTERRUPTED) from None


@contextmanager
def _report_of_kept_change(interrupted: bool) -> Iterator[None]:
    """Print the report of a committed change with Ctrl-C held back (a Ctrl-C must not hide what
    was done), then exit with 130 if one came, while the change was made or while this printed."""
    from pixsift.storage.interrupts import interrupts_deferred

    try:
        with interrupts_deferred():
            yield
    except KeyboardInterrupt:
        interrupted = True
    if interrupted:
        typer.echo("Interrupted once the change above was saved: it is kept.", err=True)
        raise typer.Exit(EXIT_INTERRUPTED)


def _open(
    library: str | None, *, create: bool = False, device: str = "auto", engine: Engine = Engine.auto
) -> Library:
    from pixsift.library import Library

    return Library.open(library, create=create, device=device, engine=engine.value)


@app.command()
def index(
    folders: Annotated[
        # text, not Paths: see the note on file arguments at the top
        Optional[list[str]],  # noqa: UP045
        typer.Argument(
            help="Folders to index. Default: every folder indexed before.",
            show_default=False,
        ),
    ] = None,
    library: LibraryOpt = None,
    model: Annotated[
        Optional[str],  # noqa: UP045
        typer.Option(
            "--model",
            help="open_clip model name, model-config JSON path, or synthetic-tiny (bundled, offline), "
            "for a new library. Default: ViT-B-32.",
            show_default=False,
        ),
    ] = None,
    pretrained: Annotated[
        Optional[str],  # noqa: UP045
        typer.Option(
            "--pretrained",
            help="Pretrained tag or checkpoint file. Default: laion2b_s34b_b79k for ViT-B-32. Without "
            "--model, weights for the library's own model (ViT-B-32 for a new library).",
            show_default=False,
        ),
    ] = None,
    reembed: Annotated[
        bool, typer.Option("--reembed", help="Re-embed every image (required to change the model).")
    ] = False,
    include_hidden: Annotated[
        bool, typer.Option("--include-hidden", help="Also index hidden files and folders.")
    ] = False,
    follow_symlinks: Annotated[
        bool, typer.Option("--follow-symlinks", help="Follow symbolic links (loops are detected).")
    ] = False,
    device: DeviceOpt = "auto",
    engine: EngineOpt = Engine.auto,
    batch_size: Annotated[
        Optional[int],  # noqa: UP045
        typer.Option(
            "--batch-size",
            min=1,
            max=MAX_BATCH_SIZE,
            help="Images per model call. Default: 256 on a CUDA GPU, 32 otherwise.",
            show_default=False,
        ),
    ] = None,
    workers: Annotated[
        Optional[int],  # noqa: UP045
        typer.Option(
            "--workers",
            min=1,
            max=MAX_WORKERS,
            help="Decode threads. Default: CPU count, at most 8.",
            show_default=False,
        ),
    ] = None,
    wait: WaitOpt = LOCK_WAIT_S,
    quiet: Annotated[
        bool, typer.Option("--quiet", "-q", help="No progress bar, no summary; warnings go to stderr.")
    ] = False,
) -> None:
    """Index the images under FOLDERS (incrementally: only new and changed files are embedded).

    Exits with 3 when some files or folders could not be read (the rest is indexed).
    """
    from pixsift.arguments import check_index_arguments
    from pixsift.formatting import format_report, report_warnings
    from pixsift.indexer import IndexInterrupted
    from pixsift.storage.interrupts import InterruptedAfterCommit

    with _user_errors():  # before the library is made: a mistake must not leave an empty one
        check_index_arguments(folders or [], model, pretrained)
    with (
        _terminate_as_ctrl_c(),
        _user_errors(),
        # With no folder named, only an existing library has folders to index again: a new
        # one would be left behind empty, with the error "nothing to index yet".
        _open(library, create=bool(folders), device=device, engine=engine) as lib,
    ):
        try:
            with _terminal_progress(quiet) as bar:
                report = lib.index(
                    *(folders or []),
                    model=model,
                    pretrained=pretrained,
                    reembed=reembed,
                    include_hidden=include_hidden,
                    follow_symlinks=follow_symlinks,
                    batch_size=batch_size,
                    workers=workers,
                    progress=bar,
                    wait=wait,
                )
        except IndexInterrupted as interrupted:
            typer.echo(
                format_report(
                    interrupted.report,
                    library_removed=interrupted.library_removed,
                    reembedding=interrupted.reembedding,
                ),
                err=True,
            )
            raise typer.Exit(EXIT_INTERRUPTED) from None
        except InterruptedAfterCommit:
            if not reembed:
                raise
            # Ctrl-C while the library switched models: the one write a re-embedding run makes
            # before its scan, which reports interruptions itself (IndexInterrupted).
            typer.echo(
                "Interrupted once the library had switched to the new model: the old vectors are "
                "dropped and none is made yet. Run the same command without --reembed to embed "
                "the images with it.",
                err=True,
            )
            raise typer.Exit(EXIT_INTERRUPTED) from None
    if not quiet:
        typer.echo(format_report(report))
    elif trouble := report_warnings(report):  # a quiet run still says why it exits with 3
        typer.echo("\n".join(trouble), err=True)
    if not report.complete:
        raise typer.Exit(EXIT_TROUBLE)


@app.command()
def search(
    text: Annotated[str, typer.Argument(help="What to look for, in words.")],
    plus: PlusOpt = None,
    minus: MinusOpt = None,
    limit: LimitOpt = 10,
    min_score: MinScoreOpt = None,
    under: UnderOpt = None,
    after: AfterOpt = None,
    before: BeforeOpt = None,
    min_width: MinWidthOpt = None,
    min_height: MinHeightOpt = None,
    image_format: ImageFormatOpt = None,
    output: FormatOpt = ResultFormat.table,
    library: LibraryOpt = None,
    device: DeviceOpt = "auto",
    engine: EngineOpt = Engine.auto,
) -> None:
    """Images that match TEXT, best first."""
    from pixsift.search.quick import search_once  # one search per process: the quick path

    with _user_errors(), _first_use_explained():
        results = search_once(
            _text_not_blank(
                text, 'The text to search for is empty: say what to look for, as in pixsift search "a dog".'
            ),
            limit,
            library=library,
            plus=_terms(plus, "--plus"),
            minus=_terms(minus, "--minus"),
            min_score=min_score,
            filters=_filters(under, after, before, min_width, min_height, image_format),
            device=device,
            engine=engine.value,
        )
    _print_results(results, output, _outside_roots_hint(library, under) if not results else "")


UnlikeOpt = Annotated[
    Optional[list[str]],  # noqa: UP045 (text, not Paths: see the note on file arguments at the top)
    typer.Option(
        "--unlike",
        metavar="IMAGE",
        help="Away from this image file, indexed or not; repeatable.",
        show_default=False,
    ),
]


DiversityOpt = Annotated[
    Optional[float],  # noqa: UP045
    typer.Option(
        "--diversity",
        min=0.0,
        max=1.0,
        metavar="D",
        callback=_no_nan,
        help="From 0 (by relevance, as without it) to 1 (most varied): trades relevance for variety (MMR;"
        " with -k above 1000, the first 1000 are reordered and the rest follow by score).",
        show_default=False,
    ),
]


@app.command()
def similar(
    images: Annotated[
        list[str],  # text, not Paths: see the note on file arguments at the top
        typer.Argument(
            help="Image files, indexed or not; with several, images like all of them.",
            show_default=False,
        ),
    ],
    unlike: UnlikeOpt = None,
    diversity: DiversityOpt = None,
    plus: PlusOpt = None,
    minus: MinusOpt = None,
    limit: LimitOpt = 10,
    min_score: MinScoreOpt = None,
    under: UnderOpt = None,
    after: AfterOpt = None,
    before: BeforeOpt = None,
    min_width: MinWidthOpt = None,
    min_height: MinHeightOpt = None,
    image_format: ImageFormatOpt = None,
    output: FormatOpt = ResultFormat.table,
    library: LibraryOpt = None,
    device: DeviceOpt = "auto",
    engine: EngineOpt = Engine.auto,
) -> None:
    """Images that look like IMAGES, best first (the images given, --unlike ones too, left out).

    With several images, --unlike or --diversity, the examples are combined as the Python
    API's recommend() and the service's POST /recommend combine them (Rocchio): the mean of
    the images and --plus texts, less a quarter of the mean of the --unlike images and --minus
    texts. One image alone is searched with its --plus and --minus texts added in full.
    """

    def run(lib: Library) -> list[SearchResult]:
        filters = _filters(under, after, before, min_width, min_height, image_format)
        plus_terms, minus_terms = _terms(plus, "--plus"), _terms(minus, "--minus")
        if len(images) == 1 and not unlike and diversity is None:
            return lib.similar(
                images[0],  # a file's path: similar reads text as one
                limit,
                plus=plus_terms,
                minus=minus_terms,
                min_score=min_score,
                filters=filters,
            )
        return lib.recommend(
            [*_image_terms(images), *plus_terms],
            [*_image_terms(_unlike_paths(unlike)), *minus_terms],
            limit,
            filters=filters,
            diversity=diversity or 0.0,
            min_score=min_score,
        )

    _query(library, device, engine, output, run, under)


def _unlike_paths(paths: list[str] | None) -> list[str]:
    """The files given to --unlike; an empty one is named as that option's, where the core's
    "An image path is empty" would not say which of the command's images it was."""
    message = "--unlike is given an empty path: name an image file, or leave --unlike out."
    return [_not_empty(path, message) for path in paths or []]


def _image_terms(paths: list[str]) -> list[QueryTerm]:
    """Image files as examples for recommend(), which reads a plain string as a text."""
    from pixsift.search import QueryTerm

    return [QueryTerm(image=path) for path in paths]


@app.command()
def reindex(
    index_type: Annotated[
        # None keeps the kind chosen before, as --memory-budget keeps the budget: a default of
        # "auto" made `reindex --memory-budget 1GB` drop a kind forced earlier without a word.
        Optional[str],  # noqa: UP045
        typer.Option(
            "--index-type",
            metavar="auto|flat|hnsw|ivfpq",
            help="Search index kind: auto picks by size and memory budget; others force one. "
            "Default: as before (auto at first).",
            show_default=False,
        ),
    ] = None,
    memory_budget: Annotated[
        Optional[str],  # noqa: UP045
        typer.Option(
            "--memory-budget",
            metavar="SIZE",
            help="Memory the search index may use, e.g. 2GB or 512MB. Default: as before (2GB at first).",
            show_default=False,
        ),
    ] = None,
    library: LibraryOpt = None,
    wait: WaitOpt = LOCK_WAIT_S,
) -> None:
    """Rebuild the search index from the stored vectors: choose its kind, train and tune it.

    No image is read again. The choice is remembered: later reindex and index runs keep a
    forced kind (until --index-type auto); index runs rebuild an automatic one when the
    library has grown or shrunk a lot.
    """
    from pixsift.formatting import format_index_summary

    with _user_errors(), _open(library) as lib, _terminal_progress() as waiting:
        summary = lib.rebuild_index(index_type, memory_budget, wait=wait, progress=waiting)
    typer.echo(format_index_summary(summary))


@app.command()
def status(
    library: LibraryOpt = None,
    failed: Annotated[
        bool, typer.Option("--failed", help="Also list the files that failed, with why.")
    ] = False,
    output: Annotated[
        StatusFormat, typer.Option("--format", "-f", case_sensitive=False, help="table or json.")
    ] = StatusFormat.table,
) -> None:
    """What is indexed, with which model, and where the library is.

    Exits 0 whenever it could report, a damaged search index or failed files included (it
    reads only the index file's header and size); `pixsift doctor` is the check: it exits 3.
    """
    from pixsift.formatting import format_status, status_as_json

    with _user_errors(), _open(library) as lib:
        info = lib.status()
        failures = lib.failures() if failed else None
    typer.echo(
        status_as_json(info, failures) if output is StatusFormat.json else format_status(info, failures)
    )


@app.command()
def forget(
    folder: Annotated[
        str, typer.Argument(help="An indexed folder, as `pixsift status` lists it; it may be gone.")
    ],
    library: LibraryOpt = None,
    wait: WaitOpt = LOCK_WAIT_S,
) -> None:
    """Stop indexing a folder: drop it and its images from the library (files are left alone).

    For a folder renamed, moved or gone for good, whose images index runs keep (it may only be
    unmounted). Index the folder under its new name to add its images again. A folder inside
    another indexed folder is only dropped as a root: that folder's next run decides what stays.
    For a folder that moved, `pixsift relocate OLD NEW` keeps its images' ids instead.
    """
    with _user_errors(), _open(library) as lib:
        stored = lib.indexed_folder(folder)  # named as the library has it, not as typed (../x)
        removed, interrupted = _committed(lambda waiting: lib.forget(stored, wait=wait, progress=waiting))
        with _report_of_kept_change(interrupted):
            typer.echo(
                f"Forgot {stored}: {removed:,} image(s) removed from the library; no file was touched."
            )


@app.command()
def relocate(
    old: Annotated[
        str, typer.Argument(help="An indexed folder, as `pixsift status` lists it, now gone or empty.")
    ],
    new: Annotated[str, typer.Argument(help="The existing folder it now lives at.")],
    library: LibraryOpt = None,
    wait: WaitOpt = LOCK_WAIT_S,
) -> None:
    """Tell the library that an indexed folder moved: its images keep their ids and vectors.

    For a folder renamed or moved, or copied to a new disk and the old one gone: its images
    take their new paths, and the folder keeps its options. pixsift cannot tell a moved
    folder from an unplugged drive with a copy elsewhere, so say it here, before indexing the
    new place (which would give every image a new id). Refused when OLD still holds files
    (index the copy instead) or NEW is, holds or lies in another indexed folder. Then run the
    `pixsift index` command it prints, for what changed meanwhile.
    """
    from pixsift.indexer.relocation import catch_up_command

    with _user_errors(), _open(library) as lib:
        stored = lib.indexed_folder(old)  # named as the library had it, not as typed (../x)
        moved, interrupted = _committed(
            lambda waiting: lib.relocate(stored, new, wait=wait, progress=waiting)
        )
        with _report_of_kept_change(interrupted):
            target, command = catch_up_command(lib.status().roots, new)
            typer.echo(
                f"Relocated {stored} to {target}: {moved:,} image(s) moved, their ids and vectors kept. "
                f"To pick up what changed meanwhile: {command}"
            )


@app.command("eval")
def evaluate(
    queries: Annotated[
        str,  # text, not a Path: see the note on file arguments at the top
        typer.Argument(
            help='JSONL file: {"query": TEXT or "image": PATH, "relevant": [PATHS or GLOBS]}.',
            show_default=False,
        ),
    ],
    cutoffs: Annotated[
        str, typer.Option("--cutoffs", help="Ranks at which to measure recall and precision.")
    ] = "1,5,10",
    output: Annotated[
        StatusFormat,
        typer.Option(
            "--format", "-f", case_sensitive=False, help="table or json (with every query's ranks)."
        ),
    ] = StatusFormat.table,
    library: LibraryOpt = None,
    device: DeviceOpt = "auto",
    engine: EngineOpt = Engine.auto,
) -> None:
    """How well the library answers labelled queries: recall@k, precision@k, MRR, latency."""
    from pixsift.formatting import eval_as_json, format_eval

    ranks = _cutoffs(cutoffs)  # bad usage, refused before the library is opened
    with _user_errors(), _first_use_explained(), _open(library, device=device, engine=engine) as lib:
        report = lib.evaluate(queries, ranks)
    typer.echo(eval_as_json(report) if output is StatusFormat.json else format_eval(report))


def _cutoffs(text: str) -> tuple[int, ...]:
    """The ranks --cutoffs names; a bad one is bad usage (exit 2), as any option's bad value.
    Raised in the command's body, where typer does not know the option: named here."""
    from pixsift.errors import QueryError
    from pixsift.evaluation import checked_cutoffs

    try:
        return checked_cutoffs([int(part) for part in text.split(",") if part.strip()])
    except ValueError:
        raise typer.BadParameter(
            f"expected whole numbers separated by commas, got {text!r}", param_hint="'--cutoffs'"
        ) from None
    except QueryError as exc:
        raise typer.BadParameter(str(exc), param_hint="'--cutoffs'") from None


@app.command()
def serve(
    library: LibraryOpt = None,
    host: Annotated[
        str, typer.Option("--host", help="Address to listen on; beyond loopback an API key is required.")
    ] = "127.0.0.1",
    port: Annotated[
        int,
        typer.Option(
            "--port",
            min=0,
            max=65535,
            help="Port to listen on (0: a free one, which the log names as it starts).",
        ),
    ] = 8000,
    api_key: Annotated[
        Optional[str],  # noqa: UP045
        typer.Option(
            "--api-key",
            envvar="PIXSIFT_API_KEY",
            help="Key clients send in the X-API-Key header; enables writes (16+ characters).",
            show_default=False,
            show_envvar=True,
        ),
    ] = None,
    max_upload_mb: Annotated[
        float,
        typer.Option(
            "--max-upload-mb", min=0.1, max=1024, callback=_no_nan, help="Largest query image upload, in MB."
        ),
    ] = 20.0,
    max_megapixels: Annotated[
        float,
        typer.Option(
            "--max-megapixels",
            min=0.1,
            max=1000,
            callback=_no_nan,
            help="Largest query image, in megapixels.",
        ),
    ] = 50.0,
    max_concurrent_uploads: Annotated[
        int,
        typer.Option(
            "--max-concurrent-uploads",
            min=1,
            max=256,
            help="Query image uploads handled at once; more get 503 busy (each can take 0.5 GB).",
        ),
    ] = 4,
    load_wait: Annotated[
        float,
        typer.Option(
            "--load-wait",
            min=0,
            max=3600,
            callback=_no_nan,
            help="Seconds a search waits while the service loads its search index, then 503 "
            "index_loading (0: at once).",
        ),
    ] = DEFAULT_LOAD_WAIT_S,
    device: DeviceOpt = "auto",
    engine: EngineOpt = Engine.auto,
) -> None:
    # The backslash: rich markup would take "[server]" for a style and drop it from --help.
    r"""Serve the library over HTTP (JSON API, OpenAPI docs at /docs). Needs pixsift\[server]."""
    try:
        from pixsift.server.run import serve as run_server
        from pixsift.server.settings import check_bind
    except ImportError as exc:
        typer.echo(
            f"error: the HTTP service needs its extra: pip install 'pixsift[server]' ({exc})", err=True
        )
        raise typer.Exit(EXIT_USER_ERROR) from None
    from dataclasses import replace

    with _user_errors():
        settings = replace(
            check_bind(host, api_key),
            max_upload_bytes=int(max_upload_mb * 1024 * 1024),
            max_megapixels=max_megapixels,
            max_concurrent_uploads=max_concurrent_uploads,
            load_wait_s=load_wait,
        )
        with _first_use_explained(), _open(library, device=device, engine=engine) as lib:
            run_server(lib, host, port, settings)


@app.command()
def doctor(
    repair: Annotated[
        bool,
        typer.Option(
            "--repair", help="Fix what can be fixed: rebuild the search index, drop rows of files gone."
        ),
    ] = False,
    library: LibraryOpt = None,
    output: Annotated[
        StatusFormat, typer.Option("--format", "-f", case_sensitive=False, help="table or json.")
    ] = StatusFormat.table,
    wait: WaitOpt = LOCK_WAIT_S,
) -> None:
    """Check the library: database, search index against it, indexed files. Exits 3 if problems remain."""
    from pixsift.formatting import format_health, health_as_json
    from pixsift.storage.interrupts import InterruptedAfterCommit

    with _user_errors(), _open(library) as lib:
        try:
            with _nothing_changed_on_interrupt(), _terminal_progress() as waiting:
                report = (
                    lib.repair(wait=wait, progress=waiting)
                    if repair
                    else lib.check(wait=wait, progress=waiting)
                )
        except InterruptedAfterCommit as interrupt:
            kept = "; ".join(cast(list[str], interrupt.result))
            typer.echo(
                f"Interrupted part-way through the repair. Done and kept: {kept}. "
                "To finish: pixsift doctor --repair",
                err=True,
            )
            raise typer.Exit(EXIT_INTERRUPTED) from None
    typer.echo(health_as_json(report) if output is StatusFormat.json else format_health(report))
    if not report.healthy:
        raise typer.Exit(EXIT_TROUBLE)


def _filters(
    under: str | None,
    after: str | None,
    before: str | None,
    min_width: int | None,
    min_height: int | None,
    image_format: list[str] | None,
) -> SearchFilters:
    from pixsift.errors import QueryError
    from pixsift.search import SearchFilters
    from pixsift.search.filters import FilterError

    try:
        return SearchFilters(
            under=under,
            formats=tuple(image_format or ()),
            min_width=min_width,
            min_height=min_height,
            after=after,
            before=before,
        )
    except FilterError as exc:  # named as typed here: --under, not the API's "Filter under"
        raise QueryError(exc.worded(_FILTER_OPTIONS)) from None


# The option that sets each filter, by the name a FilterError gives it.
_FILTER_OPTIONS = {
    "under": "--under",
    "after": "--after",
    "before": "--before",
    "min_width": "--min-width",
    "min_height": "--min-height",
    "format": "--image-format",
    "formats": "--image-format",
}


def _terms(texts: list[str] | None, option: str) -> list[QueryTerm]:
    """The texts given to `option` (--plus or --minus) as query terms."""
    from pixsift.search import parse_weighted_text

    for text in texts or []:
        _text_not_blank(text, f"{option} is given an empty text: give it one, or leave {option} out.")
    return [parse_weighted_text(text) for text in texts or []]


def _not_empty(text: str, message: str) -> str:
    """`text`; QueryError(message) when it is blank. The core's "A query text is empty" does
    not say which of the command's texts it was."""
    from pixsift.errors import QueryError

    if not text.strip():
        raise QueryError(message)
    return text


def _text_not_blank(text: str, message: str) -> str:
    """`text`; QueryError(message) when it holds nothing to search for (see `is_blank_text`)."""
    from pixsift.errors import QueryError
    from pixsift.search.query import is_blank_text

    if is_blank_text(text):
        raise QueryError(message)
    return text


def _query(
    library: str | None,
    device: str,
    engine: Engine,
    output: ResultFormat,
    run: Callable[[Library], list[SearchResult]],
    under: str | None = None,
) -> None:
    """Open the library, run one query on it, print the results."""
    with _user_errors(), _first_use_explained(), _open(library, device=device, engine=engine) as lib:
        results = run(lib)
    _print_results(results, output, _outside_roots_hint(library, under) if not results else "")


def _print_results(results: list[SearchResult], output: ResultFormat, hint: str = "") -> None:
    from pixsift.formatting import format_results

    text = format_results(results, output)
    if text:
        typer.echo(text, nl=output is not ResultFormat.paths0)
    if not results:
        typer.echo(f"No matching images.{hint}", err=True)


def _outside_roots_hint(library: str | None, under: str | None) -> str:
    """Why a search under a folder found nothing, when that folder lies outside every indexed
    one (a typo, another library's folder). Asked only once nothing matched: it opens the
    library a second time."""
    from pixsift.indexer.roots import reaches_a_root

    if under is None:
        return ""
    try:
        with _open(library) as lib:
            roots = [root.path for root in lib.status().roots]
    except PixsiftError:
        return ""
    if reaches_a_root(under, roots):
        return ""
    return f" {given_path(under)} is not inside an indexed folder (indexed: {', '.join(roots) or 'none'})."


@contextmanager
def _terminate_as_ctrl_c() -> Iterator[None]:
    """Within the block, SIGTERM (`timeout`, a plain `kill`, a scheduler stopping the job)
    stops an index run as Ctrl-C does: it commits what it embedded, saves the search index and
    prints its summary, where the default would end it at once."""
    previous = signal.signal(signal.SIGTERM, _stop_as_on_ctrl_c)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _stop_as_on_ctrl_c(_signum: int, _frame: object) -> None:
    """Deliver SIGTERM as SIGINT, through the SIGINT handler in place: a commit under way
    holds it back as it holds Ctrl-C back."""
    if callable(signal.getsignal(signal.SIGINT)):
        signal.raise_signal(signal.SIGINT)
    else:  # Ctrl-C is ignored here (a script's background job): end as SIGTERM always did
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.raise_signal(signal.SIGTERM)


_OUTPUT_ERRORS = "pixsift-output"


def _escape_unencodable(error: UnicodeError) -> tuple[str | bytes, int]:
    """How text the output's encoding cannot hold is written, one character at a time.
    A file name that is not valid UTF-8 goes back as the bytes it is (surrogateescape); a
    character the encoding lacks (a Japanese name on a Latin-1 or cp1252 stdout, as Windows
    gives a redirected one) is written as a backslash escape instead of a traceback."""
    if not isinstance(error, UnicodeEncodeError):
        raise error
    char = error.object[error.start]
    if 0xDC80 <= ord(char) <= 0xDCFF:  # a byte surrogateescape decoding kept
        return bytes([ord(char) - 0xDC00]), error.start + 1
    return char.encode("ascii", "backslashreplace").decode("ascii"), error.start + 1


class _CliLogLines(logging.Handler):
    """Log records as the command's other lines on stderr: "warning: ...", "error: ..."."""

    def __init__(self) -> None:
        super().__init__()
        self.setFormatter(_CliLogFormat())

    def emit(self, record: logging.LogRecord) -> None:
        try:
            # sys.stderr as it is now: during a progress bar, rich's proxy prints above the bar.
            sys.stderr.write(self.format(record) + "\n")
            sys.stderr.flush()
        except Exception:
            self.handleError(record)


class _CliLogFormat(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        # A core warning whose advice names what to pass says it in the API's words, and carries
        # the command's (`--engine auto`) as `command_line`, as a PixsiftError does.
        command_line = getattr(record, "command_line", None)
        if isinstance(command_line, str):
            record = logging.makeLogRecord({**record.__dict__, "msg": command_line, "args": ()})
        return f"{record.levelname.lower()}: {super().format(record)}"  # the message, any traceback


def _log_as_the_command() -> None:
    """Print the warnings logged by pixsift's core (a model that falls back to torch) and by
    the libraries it uses in the command's own format. With no handler, Python printed the bare
    message; and once open_clip is imported, its first logging.info() call configured the root
    logger (logging.basicConfig) to print "WARNING:pixsift.models.loading:...". With a handler
    in place first, basicConfig does nothing. Only the command does this: a program using the
    library keeps its own logging."""
    logging.getLogger().addHandler(_CliLogLines())


def _buffer_unbuffered_stdout() -> None:
    """Put a buffer back between stdout and its file under PYTHONUNBUFFERED (or `python -u`,
    as many container images set it). Without one, a write that the output's reader cuts short
    (`pixsift search x -k 1000 | head -1`, head gone while the results are written) is taken as
    whole: the rest is dropped without a BrokenPipeError, and the command ends with 0, not 141.
    A buffered writer writes the rest, which fails as it should. Flushed at each line, so the
    output still comes as it is printed."""
    stream = sys.stdout
    raw = getattr(stream, "buffer", None)
    if isinstance(stream, io.TextIOWrapper) and isinstance(raw, io.RawIOBase):
        sys.stdout = io.TextIOWrapper(
            io.BufferedWriter(raw),
            encoding=stream.encoding,
            errors=stream.errors,
            line_buffering=True,
            write_through=True,
        )


def _hold_closed_streams() -> None:
    """Put /dev/null where stdout or stderr is closed (`>&-`, `2>&-`), whose descriptor would
    otherwise go to the next file opened (the search index being saved), where anything a
    library prints would land. Python leaves a closed stream None, so results went nowhere
    with exit 0, and a closed stderr failed every search (asked whether it was a terminal).
    Stdout's /dev/null is opened read-only, so each write fails ("Bad file descriptor"), as
    `cat >&-` does: results are not dropped unsaid. Stderr's takes the messages, unread."""
    for fd, name, flags in ((1, "stdout", os.O_RDONLY), (2, "stderr", os.O_WRONLY)):
        if getattr(sys, name) is not None:
            continue
        with suppress(OSError):
            held = os.open(os.devnull, flags)
            if held != fd:
                os.dup2(held, fd)
                os.close(held)
            setattr(sys, name, open(fd, "w", closefd=False))  # noqa: SIM115 (the process's, until it exits)


def main() -> None:
    """Console-script entry point."""
    _hold_closed_streams()  # first: a stream it puts in place is buffered, and left as it is below
    _buffer_unbuffered_stdout()
    codecs.register_error(_OUTPUT_ERRORS, _escape_unencodable)
    for stream in (sys.stdout, sys.stderr):
        reconfigure = getattr(stream, "reconfigure", None)
        if reconfigure is not None:
            reconfigure(errors=_OUTPUT_ERRORS)
    _log_as_the_command()
    # pixsift refuses oversized images itself (recorded as failures); Pillow's warning for
    # large-but-allowed ones would only break the progress display. Matched by its text, as
    # importing Pillow for its class would cost every command (a search included) 20 ms.
    warnings.filterwarnings("ignore", message=_PILLOW_BOMB_WARNING)
    # Broken EXIF only costs a photo its date and rotation, as pixsift handles it; Pillow's
    # warning about it would print in the middle of the progress display.
    warnings.filterwarnings("ignore", message=_PILLOW_EXIF_WARNING)
    try:
        app()
    except KeyboardInterrupt:
        typer.echo("Interrupted.", err=True)
        sys.exit(EXIT_INTERRUPTED)
