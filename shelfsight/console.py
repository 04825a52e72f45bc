"""What the user asked of the console, for any command to read (no command imports another's CLI)."""
from __future__ import annotations

import click


def progress_disabled() -> bool:
    """True when the user asked for --quiet (progress bars off)."""
    ctx = click.get_current_context(silent=True)
    return bool(ctx and ctx.find_root().obj and ctx.find_root().obj.get("quiet"))
