"""What every sub-command shares: global options, consoles, output, progress, warnings.

Data goes to stdout (a Rich table, or JSON with ``--json``); progress, warnings and errors go to
stderr, so ``advkit ... --json | jq`` always sees clean JSON.
"""

from __future__ import annotations

import contextlib
import json
import sys
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table


@dataclass
class GlobalOptions:
    device: str = "auto"
    seed: int = 0
    json: bool = False
    verbosity: int = 0  # -1 quiet, 0 normal, >0 verbose

    @property
    def quiet(self) -> bool:
        return self.verbosity < 0


def stderr_console() -> Console:
    return Console(stderr=True, highlight=False, soft_wrap=True)


def stdout_console() -> Console:
    return Console(highlight=False, soft_wrap=True)


def get_options(ctx: typer.Context, **overrides: Any) -> GlobalOptions:
    """Global options from the top-level callback, with per-command options (non-None) on top."""
    root = ctx.find_root()
    opts = root.obj if isinstance(root.obj, GlobalOptions) else GlobalOptions()
    for key, value in overrides.items():
        if value is not None and value is not False:
            setattr(opts, key, value)
    root.obj = opts
    return opts


# Per-command spellings of the global options, so `advkit gen-adv ... --seed 1` works as well as
# `advkit --seed 1 gen-adv ...`.
DeviceOption = Annotated[
    str | None, typer.Option("--device", help="auto, cpu or cuda (default: the global --device).")
]
#: Seeds feed torch.Generator.manual_seed, which takes 64 bits; 63 keep them one signed integer everywhere.
MAX_SEED = 2**63 - 1
SeedOption = Annotated[
    int | None,
    typer.Option("--seed", help="Seed for every random choice (default: global --seed).", min=0, max=MAX_SEED),
]
JsonOption = Annotated[
    bool, typer.Option("--json", help="Print the result as JSON on stdout.")
]


def device_of(opts: GlobalOptions):
    from advkit.utils import resolve_device  # imports torch: only commands that compute pay for it

    return resolve_device(opts.device)


def emit(opts: GlobalOptions, result: dict[str, Any], render: Callable[[Console], None] | None = None) -> None:
    """Print ``result``: JSON when ``--json``, else the human rendering (or a key/value table)."""
    if opts.json:
        sys.stdout.write(json.dumps(result, indent=2, default=_json_default) + "\n")
        sys.stdout.flush()
        return
    console = stdout_console()
    if render is not None:
        render(console)
        return
    table = Table(show_header=False, box=None)
    for key, value in result.items():
        table.add_row(str(key), _format_value(value))
    console.print(table)


def _json_default(obj: Any) -> Any:
    if hasattr(obj, "tolist"):
        return obj.tolist()
    return str(obj)


def _format_value(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.6g}"
    if isinstance(value, (list, tuple)):
        return ", ".join(_format_value(v) for v in value)
    if isinstance(value, dict):
        return json.dumps(value, default=_json_default)
    return str(value)


class ProgressReporter:
    """Adapter from the library's ``on_progress(done, total)`` callbacks to a Rich bar on stderr."""

    def __init__(self, progress: Progress | None, description: str, unit: str) -> None:
        self._progress = progress
        self._task = None
        self._description = description
        self._unit = unit
        self._start = time.perf_counter()
        self._first_done: int | None = None

    @property
    def started(self) -> bool:
        return self._task is not None

    def __call__(self, done: int, total: int) -> None:
        if self._progress is None:
            return
        if self._task is None:
            # Shown from the first report on: a command that fails before any progress leaves
            # its one error line alone, without an empty bar line above it.
            self._progress.start()
            self._task = self._progress.add_task(self._description, total=total, rate="")
            self._first_done = done
            self._start = time.perf_counter()
        elapsed = time.perf_counter() - self._start
        new = done - (self._first_done or 0)
        rate = f"{new / elapsed:.1f} {self._unit}/s" if elapsed > 0 and new > 0 else ""
        self._progress.update(self._task, completed=done, total=total, rate=rate)


@contextlib.contextmanager
def progress_bar(opts: GlobalOptions, description: str, unit: str = "img") -> Iterator[ProgressReporter]:
    """A Rich progress bar on stderr (silent with ``-q``), yielded as an ``on_progress`` callback."""
    if opts.quiet:
        yield ProgressReporter(None, description, unit)
        return
    progress = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[rate]}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=stderr_console(),
        transient=False,
    )
    reporter = ProgressReporter(progress, description, unit)
    try:
        yield reporter
    finally:
        if reporter.started:
            progress.stop()


def install_warning_printer(opts: GlobalOptions) -> None:
    """Show library warnings as one ``warning: ...`` line each on stderr (hidden with ``-q``)."""

    def show(message, category, filename, lineno, file=None, line=None):  # noqa: ANN001
        if not opts.quiet:
            sys.stderr.write(f"warning: {message}\n")

    warnings.showwarning = show
