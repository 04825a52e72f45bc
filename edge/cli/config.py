"""`--config device.toml`: every flag of a device command in a file, for a service.

The file's keys are the command's long option names (``source``, ``sink``, ``search-k`` or
``search_k``, ``bundle``), values as TOML types (lists for repeatable flags). click reads
them as defaults (its ``default_map``), so each value is converted and checked by the same
type as its flag, and the precedence is click's: command line, then environment
(``SHELFSIGHT_RUN_SOURCE``: ``SHELFSIGHT_<COMMAND>_<OPTION>``), then the file, then the
built-in default. Unknown keys and unreadable files are one-line errors.

    # /etc/shelfsight/device.toml
    bundle = "/var/lib/shelfsight/bundle"
    source = "0"
    sink = ["jsonl:/var/lib/shelfsight/events.jsonl"]
    outbox = "/var/lib/shelfsight/outbox.db"
    endpoint = "https://sync.example.com"
"""
from __future__ import annotations

import difflib
import sys
from pathlib import Path
from typing import Any

import click

if sys.version_info >= (3, 11):
    import tomllib
else:  # Python 3.10
    import tomli as tomllib

ENV_PREFIX = "SHELFSIGHT"


def config_option(f):
    """--config FILE, read before every other parameter (eager), feeding click's default_map."""
    return click.option("--config", "config_file", type=click.Path(dir_okay=False, path_type=Path), is_eager=True,
                        expose_value=False, callback=_load, help="TOML file of this command's settings "
                        "(keys: the long option names); flags and SHELFSIGHT_<COMMAND>_<OPTION> override it.")(f)


def read_config(path: Path, command: click.Command) -> dict[str, Any]:
    """The file's settings keyed by parameter name. Raises click.BadParameter (one line)."""
    try:
        settings = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as e:
        raise click.BadParameter(f"{path}: {e.strerror}", param_hint="--config") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise click.BadParameter(f"{path}: not valid TOML ({e})", param_hint="--config") from None
    names = _setting_names(command)
    out = {}
    for key, value in settings.items():
        name = names.get(key) or names.get(key.replace("_", "-"))
        if name is None:
            close = difflib.get_close_matches(key, list(names), n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            raise click.BadParameter(f"{path}: unknown setting '{key}'{hint}", param_hint="--config")
        out[name] = value
    return out


def _load(ctx: click.Context, _param: click.Parameter, path: Path | None) -> None:
    if path is not None:
        ctx.default_map = {**(ctx.default_map or {}), **read_config(path, ctx.command)}


def _setting_names(command: click.Command) -> dict[str, str]:
    """Every key a file may use -> the parameter it sets: long option names and argument names."""
    names: dict[str, str] = {}
    for param in command.params:
        if param.name in (None, "config_file"):
            continue
        if isinstance(param, click.Argument):
            names[param.name.replace("_", "-")] = param.name
            continue
        for opt in param.opts:
            if opt.startswith("--"):
                names[opt[2:]] = param.name
    return names
