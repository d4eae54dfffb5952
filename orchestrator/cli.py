"""The `gmp` command line: exit 0 on success, 1 on a failure, 2 on bad input."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

from rich.console import Console
from rich.table import Table

EXIT_OK, EXIT_FAILURE, EXIT_BAD_INPUT = 0, 1, 2


class BadInputError(Exception):
    """User input (a file, a field, an argument) is wrong; the message names it."""


def _cmd_targets(args: argparse.Namespace, console: Console) -> int:
    import targets

    table = Table(title="gmp targets")
    for column in ("name", "dim", "log Z", "samples", "modes", "what"):
        table.add_column(column)
    for name in targets.names():
        facts = targets.info(name)
        table.add_row(
            name,
            facts.dim,
            _yes(facts.log_Z),
            _yes(facts.samples),
            _yes(facts.modes),
            facts.summary,
        )
    console.print(table)
    return EXIT_OK


def _yes(flag: bool) -> str:
    return "yes" if flag else "-"


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every `gmp` command."""
    parser = argparse.ArgumentParser(
        prog="gmp",
        description="Diffusion samplers with learnable Gaussian-mixture priors: studies on Ray, "
        "tracked in MLflow.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    listing = commands.add_parser(
        "targets", help="list every target with its dimension and what is known about it"
    )
    listing.set_defaults(handler=_cmd_targets)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `gmp` console script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    console = Console()
    handler: Callable[[argparse.Namespace, Console], int] = args.handler
    try:
        return handler(args, console)
    except BadInputError as err:
        Console(stderr=True).print(f"[bold red]error:[/] {err}")
        return EXIT_BAD_INPUT


if __name__ == "__main__":
    sys.exit(main())
