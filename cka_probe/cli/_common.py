"""What every command shares: error reporting and the ``--verbose`` switch."""

from __future__ import annotations

import functools
import sys
import traceback

import click

from ..errors import CKAProbeError

EXIT_USAGE = 2


def report_errors(func):
    """Turn a :class:`CKAProbeError` (or ``OSError``) into one line on stderr and exit code 2.

    The traceback is printed only when the command was given ``--verbose``.
    """

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        verbose = bool(kwargs.get("verbose")) or bool(click.get_current_context().find_root().params.get("verbose"))
        try:
            return func(*args, **kwargs)
        except (CKAProbeError, OSError) as exc:
            if verbose:
                traceback.print_exc(file=sys.stderr)
            message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            click.echo(f"Error: {message}", err=True)
            sys.exit(EXIT_USAGE)

    return wrapper
