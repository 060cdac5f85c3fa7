"""Entry point of the ``cka-probe`` command; each verb lives in its own module.

Usage errors (an unknown option, a value out of range) are reported like every other error: one
``Error:`` line and exit code 2, without click's usage block. A reader that stops early
(``cka-probe models | head``) ends the command quietly, as Unix tools do, with click's exit code for
a closed pipe (1).
"""

from __future__ import annotations

import os
import sys

import click

from .._version import __version__
from ._options import EXIT_BROKEN_PIPE, EXIT_USAGE, one_line


class _Group(click.Group):
    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        try:
            code = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
            sys.stdout.flush()  # a closed pipe shows here when the output was still buffered
        except BrokenPipeError:
            _quiet_broken_pipe()
        except click.ClickException as exc:
            click.echo(f"Error: {one_line(exc.format_message())}", err=True)
            sys.exit(exc.exit_code if exc.exit_code != 1 else EXIT_USAGE)
        except click.Abort:
            click.echo("Aborted!", err=True)
            sys.exit(1)
        sys.exit(code if isinstance(code, int) else 0)


def _quiet_broken_pipe() -> None:
    """End without a word when the reader of stdout went away (Python's advice: point stdout at devnull,
    so that the flush at exit does not fail again)."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    sys.exit(EXIT_BROKEN_PIPE)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="cka-probe")
@click.option("-v", "--verbose", is_flag=True, help="Show tracebacks on errors.")
def main(verbose: bool) -> None:
    """Layer-by-layer CKA similarity of vision networks."""


def _register() -> None:
    from .compare import compare
    from .figure import figure
    from .identify import identify
    from .layers import layers
    from .models import models
    from .train import train
    from .validate import validate
    from .zoo import zoo

    for command in (compare, figure, identify, layers, models, zoo, train, validate):
        main.add_command(command)


_register()
