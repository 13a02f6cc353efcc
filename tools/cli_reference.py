"""Generate docs/cli.md from the command line's own help, so the reference cannot drift.

    python tools/cli_reference.py > docs/cli.md

tests/test_docs.py fails when docs/cli.md differs from what this prints.
"""

from __future__ import annotations

import typer

from pixsift.cli import app

HEADER = """# CLI reference

Generated from `pixsift --help` by `python tools/cli_reference.py > docs/cli.md`; a test checks
that it matches the code. Every command takes `--library DIR` (default: `$PIXSIFT_LIBRARY`,
else the user data folder, e.g. `~/.local/share/pixsift`). `-h` is short for `--help`
everywhere, and `pixsift --version` prints the version.

Exit codes: 0 on success (also when a search finds nothing; a message goes to stderr), 1 on a
user error (a one-line message on stderr), 2 on bad usage, 3 when the command finished but found
trouble (`index`: some files or folders could not be read, the rest was indexed; `doctor`:
problems remain), 130 when interrupted (Ctrl-C, or SIGTERM during `index`), 141 (quietly) when
the program reading the output stops early (`| head -1`); `serve` stopped by Ctrl-C or SIGTERM
exits with 0. See docs/reliability.md.

`search` and `similar` with `--format json` print a list of results, `--format jsonl` one
result a line, each with the fields of the Python API's `SearchResult`: `rank`, `score` (cosine
similarity, a number), `path` (absolute), `id`, `width`, `height` and `format` (as Pillow
names it, e.g. `"JPEG"`). `--format paths` prints one path a line; `--format paths0` ends each
path with a NUL byte instead, as `find -print0` does, for `xargs -0`: a file name may hold a
newline. Paths print as their bytes; in JSON, a byte of a name that is not UTF-8 is written
`\\udcXX` (Python's surrogateescape: `path.encode("utf-8", "surrogateescape")` gives the bytes).

`status --format json` prints one object: `library` (its folder); `model`, null before the
first index run, else `name`, `pretrained`, `embed_dim` and `fingerprint`; `images` with the
counts `indexed`, `failed` and `pending`; `roots`, each with `path`, `include_hidden`,
`follow_symlinks`, `added_at`, `last_indexed_at` (ISO 8601 times in UTC to the
microsecond, `2024-05-01T18:30:00.000000Z`, as the HTTP service writes them; the last null
before the folder's first run) and `missing` (true when the folder is not on disk now:
unmounted, moved or deleted; index runs keep its images, and the table says `missing` beside
it); `index`, the search index file, with `state` (`"up to date"`;
`"caught up on load"`, saved before a few changes such as deletes, which every search replays
from the database as it loads the file, a normal state; `"stale"`, rebuilt as it is next
loaded; `"missing"`; `"damaged"`, its size or first bytes not what its header says, or its
header unreadable, rebuilt by the next search or index run, or by `pixsift reindex`; or
`"unreadable"`, the file cannot be opened: a search rebuilds the index, and saves it in its
place unless a folder stands there),
`damage` (why it is damaged or unreadable, else null), the `generation` it was saved at,
`changes` (how many changes loading it replays, when caught up on load), its `kind` (`flat`,
`hnsw` or `ivfpq`), `search_param` (its tuned efSearch or nprobe) and `tuned_recall_at_10`,
each null when not known; `generation`,
the database's, which grows with every change of vectors; and `disk_bytes`. With `--failed`
it adds `failures`, each with `path` and `error`.

`doctor --format json` prints one object: `library`, `healthy` (true when no problem
remains), `contents_read` (false when a damaged database or schema stopped the check before
the images were counted), the counts `images`, `vectors` (stored), `index_vectors` (in the
search index, null without one) and `sampled` (vectors compared), `problems`, each with
`message`, `repairable` and a `kind` scripts may test (`database`, `schema`,
`orphan-vectors`, `model`, `vector-size`, `index-damaged`, `index-foreign`,
`index-mismatch`, `missing-files`), and `notes` and `repairs`, lists of sentences.

`eval --format json` prints one object: `queries` (how many), `images` (in the library),
`model`, `recall` and `precision` (each an object from cut-off, as text, to its value), `mrr`
with its depth `mrr_depth` (also as `mrr@N`, N the largest cut-off), `median_latency_ms`, and
`per_query`, one object per query with `query` (what it was, as text), `line` (in the query
file), `text` or `image` (the other null), `relevant` (how many images answer it), `ranks`
(where they came, 1 being first, within the largest cut-off) and `latency_ms`.
"""


def reference() -> str:
    group = typer.main.get_command(app)
    root = typer.Context(group, info_name="pixsift")
    sections = [HEADER]
    for name, command in group.commands.items():  # type: ignore[attr-defined]
        context = typer.Context(command, info_name=name, parent=root)
        lines = [
            f"## pixsift {name}",
            "",
            (command.help or "").replace("\\[", "["),  # rich markup's escape: not for Markdown
            "",
            "```",
            command.get_usage(context),
            "```",
            "",
        ]
        lines += ["| option | description |", "| --- | --- |"]
        for param in command.get_params(context):
            record = param.get_help_record(context)
            if record is None or param.name == "help":
                continue
            opts, text = (part.replace("|", "\\|") for part in record)  # | would end the cell
            lines.append(f"| `{opts}` | {text} |")
        sections.append("\n".join(lines) + "\n")
    return "\n".join(sections)


if __name__ == "__main__":
    print(reference(), end="")
