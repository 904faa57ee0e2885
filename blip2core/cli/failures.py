"""How ``blip2`` ends when something goes wrong: one line on stderr and an exit code, no traceback.

Exit codes: 0 when everything worked; 1 for an error: a problem with the input (every
``Blip2Error``: a spec, a checkpoint, an image, a plugin; a file that cannot be read or written)
or an unexpected one, whose line says how to see its traceback; 2 for a usage error (click);
130 when interrupted. Running out of memory is one line too, naming what may fit (a batch the
model runs out of memory on is split first: ``blip2core.inference.memory``). Every command, the
plugins' too (``blip2 train`` / ``blip2 eval``), runs through ``run_reporting_errors``.

``blip2 --debug COMMAND`` or ``BLIP2_DEBUG=1`` lets the exception through with its traceback, for
developers. Warnings of the ``Blip2Warning`` family are printed as one ``warning: ...`` line.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable
from typing import Any

import click

from blip2core.errors import Blip2Error, Blip2Warning

DEBUG_VARIABLE = "BLIP2_DEBUG"
DEBUG_HINT = f"rerun with blip2 --debug (or {DEBUG_VARIABLE}=1) for the traceback"


class DebugSwitch:
    """Whether tracebacks are wanted: ``--debug`` (set while the root command parses) or the env."""

    def __init__(self) -> None:
        self.flag = False

    def __bool__(self) -> bool:
        return self.flag or os.environ.get(DEBUG_VARIABLE, "").strip().lower() in ("1", "true", "yes", "on")


debug = DebugSwitch()


def run_reporting_errors(invoke: Callable[[], Any]) -> int:
    """Run ``invoke`` (the click command line, not in standalone mode); returns the exit code.

    An error becomes one line on stderr (``Error: ...``); with ``debug`` it propagates instead.
    """
    debug.flag = False
    with warnings.catch_warnings():
        warnings.showwarning = _one_line_warnings(warnings.showwarning)
        try:
            result = invoke()
        except (click.exceptions.Abort, KeyboardInterrupt):
            click.echo("Aborted.", err=True)
            return 130
        except click.ClickException as exc:
            exc.show()
            return exc.exit_code
        except click.exceptions.Exit as exc:
            return exc.exit_code
        except Blip2Error as exc:
            if debug:
                raise
            click.echo(f"Error: {exc}", err=True)
            return 1
        except OSError as exc:  # a file a command reads or writes: missing, no permission, disk full
            if debug:
                raise
            click.echo(f"Error: {exc}", err=True)
            return 1
        except Exception as exc:
            if debug:
                raise
            if _out_of_memory(exc):  # outside a batch a BatchFitter splits (e.g. loading the images)
                click.echo(f"Error: out of memory ({_one_line(exc)}); a smaller --batch-size, a smaller model "
                           "or a lower --dtype may fit", err=True)
                return 1
            click.echo(f"Error: unexpected {type(exc).__name__}: {_one_line(exc)} ({DEBUG_HINT})", err=True)
            return 1
    return result if isinstance(result, int) else 0


def _out_of_memory(exc: BaseException) -> bool:
    if isinstance(exc, MemoryError):
        return True
    from blip2core.inference.memory import is_out_of_memory  # imports torch: only once something failed

    return is_out_of_memory(exc)


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or "(no message)"


def _one_line_warnings(show: Callable[..., None]) -> Callable[..., None]:
    """``warnings.showwarning`` that prints Blip2Warning as ``warning: message`` (unless debugging)."""

    def show_warning(message: Any, category: type[Warning], *args: Any, **kwargs: Any) -> None:
        if issubclass(category, Blip2Warning) and not debug:
            click.echo(f"warning: {message}", err=True)
        else:
            show(message, category, *args, **kwargs)

    return show_warning
