"""`shelfsight fleet`: devices and their tokens, bundles, staged rollouts and the fleet view.

It works on the server's database directly (the same ``--database`` / ``--data-dir`` the
server runs with), so it needs no running server, and every server worker sees a change
on its next request::

    shelfsight fleet --data-dir D device add STORE-12-CAM-3 --group north   # prints the token once
    shelfsight fleet --data-dir D bundle add out/bundle-v2
    shelfsight fleet --data-dir D rollout start BUNDLE_ID --percent 10 --min-fps 10 --max-unknown-rate 0.3
    shelfsight fleet --data-dir D status --json
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import click

from shelfsight.errors import ConfigError

from .bundles import BundleStore, open_bundle_store
from .rollouts import status_row
from .storage import FleetError, SqlStorage, open_storage


class _Fleet:
    """What the subcommands share: where the database and the bundle store are."""

    def __init__(self, database: str | None, data_dir: Path | None, bundle_store: str | None) -> None:
        if database is None and data_dir is None:
            raise ConfigError("no fleet database: pass --database postgresql://... or --data-dir DIR "
                              "(or set $SHELFSIGHT_FLEET_DB)")
        self.url = database or f"sqlite:///{data_dir / 'events.db'}"
        self.bundle_location = bundle_store or (data_dir / "bundles" if data_dir else None)

    def storage(self) -> SqlStorage:
        return open_storage(self.url, 1)

    def bundles(self) -> BundleStore:
        if self.bundle_location is None:
            raise ConfigError("no bundle store: pass --bundle-store DIR or s3://BUCKET/PREFIX (or --data-dir)")
        return open_bundle_store(self.bundle_location)


@click.group("fleet")
@click.option("--database", envvar="SHELFSIGHT_FLEET_DB",
              help="postgresql://... or sqlite:///PATH, as given to sync-server [$SHELFSIGHT_FLEET_DB].")
@click.option("--data-dir", type=click.Path(file_okay=False, path_type=Path),
              help="The server's --data-dir (its SQLite database and bundle store).")
@click.option("--bundle-store", envvar="SHELFSIGHT_BUNDLE_STORE",
              help="The server's bundle store: a directory (default: DATA_DIR/bundles) or s3://BUCKET/PREFIX "
                   "[$SHELFSIGHT_BUNDLE_STORE].")
@click.pass_context
def fleet(ctx: click.Context, database, data_dir, bundle_store) -> None:
    """Devices, tokens, bundles, staged rollouts and the fleet view of a sync server."""
    ctx.obj = _Fleet(database, data_dir, bundle_store)


def _echo_json(value) -> None:
    click.echo(json.dumps(value, indent=2, sort_keys=True))


# -- devices and tokens -----------------------------------------------------------------------
@fleet.group("device")
def device() -> None:
    """Register devices, revoke them, list them."""


@device.command("add")
@click.argument("name")
@click.option("--group", default="", help="The device group rollouts can target (e.g. a region or store).")
@click.option("--token-file", type=click.Path(dir_okay=False, path_type=Path),
              help="Write the token here (mode 0600) instead of printing it.")
@click.pass_obj
def device_add(obj: _Fleet, name: str, group: str, token_file: Path | None) -> None:
    """Register NAME and issue its token (shown once; the server keeps only its hash)."""
    store = obj.storage()
    try:
        token = store.add_device(name, group)
    finally:
        store.close()
    if token_file is None:
        click.echo(token)
        click.echo(f"device {name} added; give it this token (it is not shown again)", err=True)
    else:
        token_file.touch(mode=0o600, exist_ok=False)
        token_file.write_text(token + "\n")
        click.echo(f"device {name} added; token written to {token_file}", err=True)


@device.command("revoke")
@click.argument("name")
@click.pass_obj
def device_revoke(obj: _Fleet, name: str) -> None:
    """Revoke every token of NAME: its next request is refused (401)."""
    store = obj.storage()
    try:
        store.revoke_device(name)
    finally:
        store.close()
    click.echo(f"device {name} revoked")


@device.command("list")
@click.option("--json", "as_json", is_flag=True, help="JSON instead of a table.")
@click.pass_obj
def device_list(obj: _Fleet, as_json: bool) -> None:
    """Every device, its group and whether it is revoked."""
    store = obj.storage()
    try:
        devices = store.devices()
    finally:
        store.close()
    if as_json:
        _echo_json([{"id": d.id, "group": d.group, "revoked": d.revoked is not None} for d in devices])
        return
    for d in devices:
        click.echo(f"{d.id:<24} {d.group or '-':<12} {'revoked' if d.revoked is not None else 'active'}")


@fleet.group("admin")
def admin() -> None:
    """Admin tokens, for the server's admin routes (/v1/admin/*, /v1/stats, /metrics)."""


@admin.command("add")
@click.argument("name")
@click.pass_obj
def admin_add(obj: _Fleet, name: str) -> None:
    """Issue an admin token named NAME (shown once)."""
    store = obj.storage()
    try:
        click.echo(store.add_admin_token(name))
    finally:
        store.close()


# -- the fleet view ---------------------------------------------------------------------------
def _fmt(value, spec: str = "") -> str:
    return "-" if value is None else format(value, spec)


@fleet.command("status")
@click.option("--json", "as_json", is_flag=True, help="JSON instead of a table.")
@click.pass_obj
def status(obj: _Fleet, as_json: bool) -> None:
    """Each device's last seen time, bundle, FPS, unknown rate, errors and outbox backlog."""
    store = obj.storage()
    try:
        devices, active, stats = store.devices(), store.active_rollout(), store.stats()
    finally:
        store.close()
    rows = [status_row(d, time.time()) for d in devices]
    if as_json:
        _echo_json({"devices": rows, "rollout": active.to_dict() if active else None, "events": stats})
        return
    click.echo(f"{'DEVICE':<24} {'GROUP':<10} {'SEEN':>8} {'BUNDLE':<20} {'FPS':>6} {'UNKNOWN':>7} "
               f"{'ERRORS':>6} {'BACKLOG':>7} {'EVENTS':>8}")
    for r in rows:
        seen = "revoked" if r["revoked"] is not None else _fmt(r["seen_s_ago"], ".0f") + ("s" if r["seen_s_ago"]
                                                                                         is not None else "")
        click.echo(f"{r['id']:<24} {r['group'] or '-':<10} {seen:>8} {_fmt(r['bundle_id']):<20} "
                   f"{_fmt(r['fps'], '.1f'):>6} {_fmt(r['unknown_rate'], '.3f'):>7} {_fmt(r['errors']):>6} "
                   f"{_fmt(r['outbox_backlog']):>7} {r['events']:>8}")
    click.echo(f"{len(rows)} devices, {stats['events']} events held; "
               + (f"rollout {active.id} of {active.bundle} in progress" if active else "no rollout in progress"))


# -- bundles and rollouts ---------------------------------------------------------------------
@fleet.group("bundle")
def bundle() -> None:
    """Bundles in the fleet's bundle store."""


@bundle.command("add")
@click.argument("path", type=click.Path(exists=True, path_type=Path))
@click.pass_obj
def bundle_add(obj: _Fleet, path: Path) -> None:
    """Copy the bundle PATH (directory or .tar.gz, with its signature) into the store (a directory or S3)."""
    bundles, store = obj.bundles(), obj.storage()
    try:
        bundle_id = bundles.put(path)
        store.add_bundle(bundle_id, bundles.location(bundle_id))
    finally:
        store.close()
    click.echo(bundle_id)


@fleet.group("rollout")
def rollout() -> None:
    """Offer a bundle to a group or a share of devices, then promote or roll it back."""


@rollout.command("start")
@click.argument("bundle_id")
@click.option("--percent", type=int, help="Offer it to this share of devices (1..100, stable per device).")
@click.option("--group", help="Offer it to this device group.")
@click.option("--min-fps", type=float, help="Roll back when a device on it reports fewer frames per second.")
@click.option("--max-unknown-rate", type=float, help="Roll back when a device reports a higher unknown rate.")
@click.option("--max-errors", type=int, help="Roll back when a device reports more errors.")
@click.pass_obj
def rollout_start(obj: _Fleet, bundle_id, percent, group, min_fps, max_unknown_rate, max_errors) -> None:
    """Start offering BUNDLE_ID (added with `fleet bundle add`) to a canary."""
    store = obj.storage()
    try:
        started = store.start_rollout(bundle_id, group=group, percent=percent, min_fps=min_fps,
                                      max_unknown_rate=max_unknown_rate, max_errors=max_errors)
    finally:
        store.close()
    target = f"group {group}" if group is not None else f"{percent}% of devices"
    click.echo(f"rollout {started.id}: {bundle_id} offered to {target}")


def _end(obj: _Fleet, state: str, reason: str) -> None:
    store = obj.storage()
    try:
        ended = store.end_rollout(state, reason)
    finally:
        store.close()
    if ended is None:
        raise FleetError("no rollout in progress")
    click.echo(f"rollout {ended.id} of {ended.bundle} {state.replace('_', ' ')}")


@rollout.command("promote")
@click.pass_obj
def rollout_promote(obj: _Fleet) -> None:
    """Offer the rollout's bundle to every device."""
    _end(obj, "promoted", "promoted by command")


@rollout.command("rollback")
@click.option("--reason", default="rolled back by command", show_default=True)
@click.pass_obj
def rollout_rollback(obj: _Fleet, reason: str) -> None:
    """Stop the rollout: its devices are offered the last promoted bundle again."""
    _end(obj, "rolled_back", reason)


@rollout.command("status")
@click.option("--json", "as_json", is_flag=True, help="JSON instead of text.")
@click.pass_obj
def rollout_status(obj: _Fleet, as_json: bool) -> None:
    """Every rollout, newest last, and the bundle devices outside a rollout get."""
    store = obj.storage()
    try:
        rollouts, stable = store.rollouts(), store.stable_bundle()
    finally:
        store.close()
    if as_json:
        _echo_json({"rollouts": [r.to_dict() for r in rollouts], "stable": stable})
        return
    for r in rollouts:
        target = f"group {r.group}" if r.group is not None else f"{r.percent}%"
        click.echo(f"{r.id:>4} {r.bundle:<24} {target:<12} {r.state:<12} {r.reason}")
    click.echo(f"stable bundle: {stable or '-'}")
