"""`shelfsight service unit`: the systemd unit that runs `shelfsight run --config FILE` as a service.

The unit restarts the device program when it fails (exit 1: a bug; exit 3: the camera or
stream is not there yet), but not on exit 2 (a mistake in the settings: restarting would
loop), sends SIGHUP on `systemctl reload` (the bundle is reloaded without stopping the
camera) and SIGTERM on stop (the current frame finishes, the outbox keeps what is unsent).
Log lines go to the journal with their priority (shelfsight.console.JournalFormatter).
"""
from __future__ import annotations

import shutil
import sys
from pathlib import Path

import click

UNIT = """\
[Unit]
Description={description}
Documentation=https://pypi.org/project/shelfsight/
Wants=network-online.target
After=network-online.target

[Service]
Type=exec
ExecStart={exec} run --config {config}
ExecReload=/bin/kill -HUP $MAINPID
Restart=on-failure
RestartSec=5
RestartPreventExitStatus=2
KillSignal=SIGTERM
TimeoutStopSec=30
{user}StateDirectory=shelfsight
WorkingDirectory=/var/lib/shelfsight
Environment=PYTHONUNBUFFERED=1
SupplementaryGroups=video
NoNewPrivileges=yes
ProtectSystem=full
PrivateTmp=yes

[Install]
WantedBy=multi-user.target
"""


@click.group()
def service() -> None:
    """Run the device program as a system service."""


@service.command("unit")
@click.option("--config", "config_file", type=click.Path(path_type=Path), default=Path("/etc/shelfsight/device.toml"),
              show_default=True, help="The settings file `run` reads (see `shelfsight run --help`).")
@click.option("--user", default="shelfsight", show_default=True, help="Account to run as ('' for root).")
@click.option("--executable", type=click.Path(path_type=Path), help="shelfsight to start (default: this one).")
@click.option("--description", default="shelfsight: recognise products on this device", show_default=True)
def unit(config_file: Path, user: str, executable: Path | None, description: str) -> None:
    """Print a systemd unit: `shelfsight service unit > /etc/systemd/system/shelfsight.service`."""
    exe = executable or _this_executable()
    click.echo(render_unit(exe, config_file, user, description), nl=False)


def render_unit(executable: Path, config_file: Path, user: str = "shelfsight",
                description: str = "shelfsight: recognise products on this device") -> str:
    return UNIT.format(description=description, exec=Path(executable).absolute(), config=Path(config_file).absolute(),
                       user=f"User={user}\n" if user else "")


def _this_executable() -> Path:
    found = shutil.which("shelfsight") or str(Path(sys.executable).with_name("shelfsight"))
    return Path(found)
