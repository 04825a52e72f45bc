"""The `shelfsight` command line.

Subcommands live beside the code they drive and are imported only when invoked, so
`shelfsight run` on a device never imports TensorFlow. User mistakes (ShelfsightError,
bad options) print one line and exit non-zero; anything else is a bug and keeps its traceback.
"""
from __future__ import annotations

import importlib
import logging
import sys

import click

from shelfsight.errors import ShelfsightError

# name -> "module:attribute" of a click command. Add a line when a command works.
COMMANDS: dict[str, str] = {
    "sync": "shelfsight.edge.cli.sync:sync",
    "sync-server": "shelfsight.tools.server.server:sync_server",
    "sync-keys": "shelfsight.tools.server.keys:sync_keys",
    "train": "shelfsight.training.cli:train",
    "eval": "shelfsight.app.eval_cli:eval_command",
    "export": "shelfsight.export.cli:export",
    "import-onnx": "shelfsight.export.onnx.cli:import_onnx_command",
    "classify": "shelfsight.edge.cli.recognize:classify",
    "run": "shelfsight.edge.cli.recognize:run_command",
    "demo": "shelfsight.app.demo:demo",
    "bench": "shelfsight.tools.bench.cli:bench",
    "index": "shelfsight.edge.cli.catalog:index",
    "enroll": "shelfsight.edge.cli.catalog:enroll",
    "search": "shelfsight.edge.cli.catalog:search",
}


class LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        target = COMMANDS.get(name)
        if target is None:
            return None
        module, attr = target.split(":")
        return getattr(importlib.import_module(module), attr)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-v", "--verbose", count=True, help="More log output (-vv for debug).")
@click.option("-q", "--quiet", is_flag=True, help="Only errors; no progress bars.")
@click.version_option(package_name="shelfsight")
@click.pass_context
def cli(ctx: click.Context, verbose: int, quiet: bool) -> None:
    """Recognise retail products on the device that sees them."""
    level = logging.ERROR if quiet else (logging.WARNING, logging.INFO, logging.DEBUG)[min(verbose, 2)]
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    ctx.obj = {"quiet": quiet, "verbose": verbose}


def main(argv: list[str] | None = None) -> None:
    try:
        cli.main(args=argv, prog_name="shelfsight", standalone_mode=False)
    except ShelfsightError as e:
        click.echo(f"error: {e}", err=True)
        sys.exit(e.exit_code)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(130)
    except click.UsageError as e:
        where = e.ctx.command_path if e.ctx else "shelfsight"
        click.echo(f"error: {e.format_message()} (see '{where} --help')", err=True)
        sys.exit(e.exit_code)
    except click.ClickException as e:
        click.echo(f"error: {e.format_message()}", err=True)
        sys.exit(e.exit_code)
    except OSError as e:  # missing or unreadable files named by the user
        click.echo(f"error: {e.strerror or e}: {e.filename}" if e.filename else f"error: {e}", err=True)
        sys.exit(2)


if __name__ == "__main__":
    main()
