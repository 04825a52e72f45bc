"""The `shelfsight` command line.

Subcommands live beside the code they drive and are imported only when invoked, so
`shelfsight run` on a device never imports TensorFlow. User mistakes (ShelfsightError,
bad options) print one line and exit non-zero; anything else is a bug and keeps its traceback.
"""
from __future__ import annotations

import difflib
import importlib
import logging
import sys
from dataclasses import dataclass

import click

from shelfsight.console import setup_logging
from shelfsight.errors import ShelfsightError

@dataclass(frozen=True)
class Entry:
    """A subcommand: where it lives, its one-line help (so `--help` imports nothing), and the
    pip extra its module needs."""

    target: str  # "module:attribute" of a click command
    summary: str
    extra: str = "edge"


# Add a line when a command works.
COMMANDS: dict[str, Entry] = {
    "sync": Entry("shelfsight.edge.cli.sync:sync", "Send queued events to the sync server and/or install bundle updates."),
    "sync-server": Entry("shelfsight.tools.server.server:sync_server",
                         "Run the reference sync server: device events, bundle offers.", "server"),
    "sync-keys": Entry("shelfsight.tools.server.keys:sync_keys", "Ed25519 keys for signed bundle updates.", "server"),
    "fleet": Entry("shelfsight.tools.server.fleet_cli:fleet",
                   "Devices, their tokens, staged rollouts and the fleet status of a sync server.", "server"),
    "train": Entry("shelfsight.training.cli:train", "Fine-tune an ImageNet backbone on product photos.", "train"),
    "ensemble": Entry("shelfsight.training.cli:ensemble_command",
                      "Combine training runs of one recipe into one model that averages them.", "train"),
    "eval": Entry("shelfsight.app.eval_cli:eval_command", "Evaluate a training run or a bundle.", "train"),
    "export": Entry("shelfsight.export.cli:export", "Compress and convert a training run into a bundle.", "train"),
    "import-onnx": Entry("shelfsight.export.onnx.cli:import_onnx_command",
                         "Convert an ONNX image classifier into a bundle.", "onnx"),
    "calibrate": Entry("shelfsight.edge.cli.objects:calibrate",
                       "Learn a fixed camera's empty scene for run --objects background."),
    "classify": Entry("shelfsight.edge.cli.recognize:classify", "Name the product in each image."),
    "run": Entry("shelfsight.edge.cli.recognize:run_command",
                 "Recognise products from a camera, stream, video or folder."),
    "demo": Entry("shelfsight.app.demo:demo", "Train, export, index, run and benchmark on the bundled sample.", "train"),
    "bench": Entry("shelfsight.tools.bench.cli:bench", "Benchmark bundles or .tflite files on this device."),
    "index": Entry("shelfsight.edge.cli.catalog:index", "Embed the catalog with the bundle's model; write a search index."),
    "enroll": Entry("shelfsight.edge.cli.catalog:enroll", "Add a product on the device from a few photos."),
    "search": Entry("shelfsight.edge.cli.catalog:search", "Find the catalog items that look most like IMAGE."),
    "service": Entry("shelfsight.edge.cli.service:service", "Run the device program as a service (systemd unit)."),
    "kiosk": Entry("shelfsight.edge.kiosk.cli:kiosk", "Serve the self-checkout screen: live view, top-3 to tap, taps that teach.",
                   "kiosk"),
    "feedback": Entry("shelfsight.edge.kiosk.cli:feedback", "Export the kiosk's confirmed photos as a dataset."),
}


class LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        # click's own listing imports every command for its help; the entries carry it instead
        with formatter.section("Commands"):
            formatter.write_dl([(name, COMMANDS[name].summary) for name in self.list_commands(ctx)])

    def resolve_command(self, ctx: click.Context, args: list[str]):
        name = args[0] if args else ""
        if name and not name.startswith("-") and name not in COMMANDS:
            close = difflib.get_close_matches(name, COMMANDS, n=1, cutoff=0.6)
            ctx.fail(f"no such command '{name}'." + (f" Did you mean '{close[0]}'?" if close else ""))
        return super().resolve_command(ctx, args)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        entry = COMMANDS.get(name)
        if entry is None:
            return None
        ctx.meta["shelfsight.command"] = name
        module, attr = entry.target.split(":")
        try:
            return getattr(importlib.import_module(module), attr)
        except ImportError as e:
            raise _not_installed(name, e) from None

    def invoke(self, ctx: click.Context):
        # heavy dependencies (TensorFlow, onnx2tf) are imported when a command runs, not when it loads
        try:
            return super().invoke(ctx)
        except ImportError as e:
            raise _not_installed(ctx.meta.get("shelfsight.command", ""), e) from None


def _not_installed(command: str, error: ImportError) -> click.ClickException:
    """One line naming the extra that brings a missing third-party module; our own module
    failing to import is a bug and keeps its traceback."""
    missing = getattr(error, "name", None) or str(error)
    if not command or missing.startswith("shelfsight"):
        raise error
    return click.ClickException(f"'{command}' needs {missing}, which is not installed: "
                                f"pip install 'shelfsight[{COMMANDS[command].extra}]'")


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-v", "--verbose", count=True, help="More log output (-vv for debug).")
@click.option("-q", "--quiet", is_flag=True, help="Only errors; no progress bars.")
@click.version_option(package_name="shelfsight")
@click.pass_context
def cli(ctx: click.Context, verbose: int, quiet: bool) -> None:
    """Recognise retail products on the device that sees them."""
    level = logging.ERROR if quiet else (logging.WARNING, logging.INFO, logging.DEBUG)[min(verbose, 2)]
    setup_logging(level)
    ctx.obj = {"quiet": quiet, "verbose": verbose}


GLOBAL_FLAGS = frozenset({"-q", "--quiet", "-v", "-vv", "-vvv", "--verbose"})


def hoist_global_flags(argv: list[str]) -> list[str]:
    """-q/-v anywhere before a "--" move in front of the command, where the group reads them
    (no subcommand uses these letters)."""
    end = argv.index("--") if "--" in argv else len(argv)
    flags = [a for a in argv[:end] if a in GLOBAL_FLAGS]
    return flags + [a for a in argv[:end] if a not in GLOBAL_FLAGS] + argv[end:]


def main(argv: list[str] | None = None) -> None:
    argv = hoist_global_flags(list(sys.argv[1:] if argv is None else argv))
    try:
        # every option also reads SHELFSIGHT_<COMMAND>_<OPTION> (a service's environment overrides)
        cli.main(args=argv, prog_name="shelfsight", standalone_mode=False, auto_envvar_prefix="SHELFSIGHT")
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
