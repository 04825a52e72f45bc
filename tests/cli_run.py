"""`shelfsight` run in this process, as a user types it: exit code, stdout, stderr."""
from __future__ import annotations

from shelfsight.app.cli import main


def run_cli(args, capsys) -> tuple[int, str, str]:
    try:
        main([str(a) for a in args])
        code = 0
    except SystemExit as e:
        code = e.code or 0
    out, err = capsys.readouterr()
    return code, out, err
