"""Entry point of the ``cka-probe`` command; each verb lives in its own module."""

from __future__ import annotations

import click

from .. import __version__


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="cka-probe")
@click.option("-v", "--verbose", is_flag=True, help="Show tracebacks on errors.")
def main(verbose: bool) -> None:
    """Layer-by-layer CKA similarity of vision networks."""


def _register() -> None:
    from . import commands

    for command in commands.ALL:
        main.add_command(command)


_register()
