"""What the user asked of the console, for any command to read (no command imports another's CLI),
and where log lines go."""
from __future__ import annotations

import logging
import os
import sys

import click


def progress_disabled() -> bool:
    """True when the user asked for --quiet (progress bars off)."""
    ctx = click.get_current_context(silent=True)
    return bool(ctx and ctx.find_root().obj and ctx.find_root().obj.get("quiet"))


# syslog priorities, which journald reads from a "<N>" line prefix
_PRIORITY = {logging.DEBUG: 7, logging.INFO: 6, logging.WARNING: 4, logging.ERROR: 3, logging.CRITICAL: 2}


class JournalFormatter(logging.Formatter):
    """``<priority>name: message``: the journal keeps the level and adds its own timestamp."""

    def format(self, record: logging.LogRecord) -> str:
        priority = _PRIORITY.get(record.levelno, 6)
        return "\n".join(f"<{priority}>{line}" for line in super().format(record).splitlines())


def under_journal() -> bool:
    """Whether stderr is systemd's journal stream ($JOURNAL_STREAM names its device:inode)."""
    stream = os.environ.get("JOURNAL_STREAM", "")
    try:
        st = os.fstat(sys.stderr.fileno())
    except (OSError, ValueError, AttributeError):
        return False
    return stream == f"{st.st_dev}:{st.st_ino}"


def setup_logging(level: int) -> None:
    """Log lines on stderr: ``LEVEL name: message``, or journal priorities under systemd."""
    handler = logging.StreamHandler()
    if under_journal():
        handler.setFormatter(JournalFormatter("%(name)s: %(message)s"))
    else:
        handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=level, handlers=[handler])
