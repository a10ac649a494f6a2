"""The ``advkit`` command line: thin sub-commands over the library.

Known failures (`advkit.errors.AdvkitError`) print one line ``error: ...`` on stderr and exit
non-zero; anything else does too, with the traceback only when ``ADVKIT_DEBUG=1``.
"""

from __future__ import annotations

import inspect
import os
import signal
import sys
import threading
import traceback
from typing import Annotated, Any

import typer
from typer.core import TyperGroup

import advkit
from advkit.cli._common import MAX_SEED, GlobalOptions, install_warning_printer
from advkit.errors import AdvkitError, UsageError

try:  # typer >= 0.2x vendors its own click; older typer uses the click package
    from typer import _click as click
except ImportError:  # pragma: no cover
    import click  # type: ignore[no-redef]

# click.Abort (Ctrl-C at a prompt); typer's vendored click has no Abort, where Ctrl-C arrives as is.
_ABORT: type[BaseException] = getattr(click, "Abort", None) or getattr(click.exceptions, "Abort", KeyboardInterrupt)


def _debug() -> bool:
    return os.environ.get("ADVKIT_DEBUG", "") not in ("", "0")


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def _reflow_help(command: click.Command) -> None:
    """Join the lines of each paragraph of ``command``'s help (and its sub-commands'): Typer keeps
    the line breaks of a docstring's later paragraphs, so the help came out broken at the source's
    line ends; Rich wraps the joined paragraphs to the terminal."""
    if command.help:
        paragraphs = inspect.cleandoc(command.help).split("\n\n")
        command.help = "\n\n".join(" ".join(line.strip() for line in p.splitlines()) for p in paragraphs)
    for sub in getattr(command, "commands", {}).values():
        _reflow_help(sub)


class AdvkitGroup(TyperGroup):
    """Runs the command line and maps every failure to a single ``error:`` line."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        _reflow_help(self)

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra: Any):  # noqa: ANN001
        code = 0
        previous_sigterm = _on_sigterm_raise()
        try:
            given = sys.argv[1:] if args is None else list(args)
            if "" in given:  # Path("") is ".": an empty name would act on the current folder
                raise UsageError('an empty argument ("") was given; name the file, folder or value')
            rv = super().main(
                args=args, prog_name=prog_name, complete_var=complete_var, standalone_mode=False, **extra
            )
            if isinstance(rv, int):
                code = rv
                if code == 130:  # typer turns KeyboardInterrupt into Exit(130) itself
                    sys.stderr.write("error: interrupted\n")
        except AdvkitError as exc:
            if _debug():
                traceback.print_exc()
            sys.stderr.write(f"error: {_one_line(exc)}\n")
            code = exc.exit_code
        except click.exceptions.NoArgsIsHelpError as exc:
            sys.stderr.write(exc.ctx.get_help() + "\n" if exc.ctx else "")
            code = 2
        except click.ClickException as exc:
            sys.stderr.write(f"error: {_one_line(exc.format_message())}\n")
            code = exc.exit_code
        except (_ABORT, KeyboardInterrupt):
            sys.stderr.write("error: interrupted\n")
            code = 130
        except Terminated:
            sys.stderr.write("error: terminated (SIGTERM)\n")
            code = 143
        except Exception as exc:  # noqa: BLE001  (the one place that turns bugs into a line)
            if _debug():
                traceback.print_exc()
            if isinstance(exc, OSError) and exc.filename is not None:
                # A path the system refused (a name too long, a file where a folder should be, ...).
                sys.stderr.write(f"error: {exc.filename}: {exc.strerror or _one_line(exc)}\n")
            else:
                sys.stderr.write(
                    f"error: internal error: {type(exc).__name__}: {_one_line(exc)} "
                    "(set ADVKIT_DEBUG=1 for the traceback)\n"
                )
            code = 1
        finally:
            if previous_sigterm is not None:
                signal.signal(signal.SIGTERM, previous_sigterm)
        if standalone_mode:
            sys.exit(code)
        return code


class Terminated(BaseException):
    """SIGTERM (`timeout`, `docker stop`, a batch scheduler's time limit), raised where the command
    is, so that it unwinds as after Ctrl-C: outputs left complete or resumable, lock files removed,
    one line on stderr. (A BaseException, as KeyboardInterrupt, so no ``except Exception`` eats it.)"""


def _raise_terminated(signum: int, frame: Any) -> None:
    raise Terminated


def _on_sigterm_raise() -> Any:
    """Install `_raise_terminated` for SIGTERM where a handler can be set (the main thread); the
    handler it replaces, or None."""
    if threading.current_thread() is not threading.main_thread():
        return None
    try:
        return signal.signal(signal.SIGTERM, _raise_terminated)
    except (ValueError, OSError):
        return None


app = typer.Typer(
    cls=AdvkitGroup,
    name="advkit",
    help="Adversarial robustness toolkit: AdvFilter defense, Pasadena attack, datasets and benchmarks.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"advkit {advkit.__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    ctx: typer.Context,
    device: Annotated[str, typer.Option(help="auto (CUDA if available), cpu or cuda.")] = "auto",
    seed: Annotated[int, typer.Option(help="Seed for every random choice.", min=0, max=MAX_SEED)] = 0,
    json_out: Annotated[bool, typer.Option("--json", help="Machine-readable result on stdout.")] = False,
    quiet: Annotated[bool, typer.Option("-q", "--quiet", help="No progress bars or warnings.")] = False,
    verbose: Annotated[int, typer.Option("-v", "--verbose", count=True, help="More detail.")] = 0,
    version: Annotated[
        bool,
        typer.Option("--version", callback=_version, is_eager=True, help="Show the version and exit."),
    ] = False,
) -> None:
    opts = GlobalOptions(device=device, seed=seed, json=json_out, verbosity=-1 if quiet else verbose)
    ctx.obj = opts
    install_warning_printer(opts)


def _register_commands() -> None:
    # Imported here so each command module stays importable on its own.
    from advkit.cli import (
        attack_denoise_cmd,
        attacks_cmd,
        bench_cmd,
        defend_cmd,
        gen_adv_cmd,
        models_cmd,
        predict_cmd,
        store_cmd,
        train_cmd,
    )

    models_cmd.register(app)
    attacks_cmd.register(app)
    predict_cmd.register(app)
    gen_adv_cmd.register(app)
    store_cmd.register(app)
    train_cmd.register(app)
    defend_cmd.register(app)
    attack_denoise_cmd.register(app)
    bench_cmd.register(app)


_register_commands()


def main() -> None:
    """Console-script entry point."""
    app()
