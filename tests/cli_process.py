"""Run the real ``blip2`` command, as a user does, for tests of what they see: in a child process
(``run_blip2``) or through the real entry point in this process (``run_in_process``)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


def run_blip2(*args: object, site: Path | None = None, **env: str) -> subprocess.CompletedProcess:
    """``python -m blip2core.cli ARGS`` with ``env`` added to the environment (``BLIP2_DEBUG``,
    ``BLIP2_PLUGINS``, ...; ``""`` removes a variable; a developer's BLIP2_DEBUG is not inherited)
    and ``site`` (a folder of ``plugin_factory.write_distribution`` plugins) on the path."""
    environment = {name: value for name, value in os.environ.items() if name != "BLIP2_DEBUG"}
    environment.update(env)
    environment = {name: value for name, value in environment.items() if value != ""}
    if site is not None:
        environment["PYTHONPATH"] = os.pathsep.join(filter(None, [str(site), environment.get("PYTHONPATH")]))
    return subprocess.run(
        [sys.executable, "-m", "blip2core.cli", *map(str, args)],
        capture_output=True, text=True, env=environment, timeout=300,
    )


def error_lines(stderr: str) -> list[str]:
    """The lines of stderr that report an error (``Error: ...``)."""
    return [line for line in stderr.splitlines() if line.startswith("Error:")]


def run_in_process(capsys, *args: object) -> tuple[int, str, str]:
    """``blip2 ARGS`` through the real entry point (``blip2core.cli.main.main``, its error handling
    included) in this process: (exit code, stdout, stderr) captured by pytest's ``capsys``."""
    from blip2core.cli.main import main

    try:
        main([str(a) for a in args])
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    out, err = capsys.readouterr()
    return code, out, err
