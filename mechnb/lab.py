"""Start JupyterLab on ``notebooks/``, bound to 127.0.0.1 and protected by a token.

This is what ``make lab`` runs (``python -m mechnb.lab``), and what the set-up test in
``tests/test_project.py`` starts, so the two cannot drift apart::

    python -m mechnb.lab                     # first free port from 8888, fresh random token
    python -m mechnb.lab --port 9000 --no-browser
    MECHNB_LAB_TOKEN=secret python -m mechnb.lab

The token reaches Jupyter through the ``JUPYTER_TOKEN`` environment variable (not the
command line, where other users of the machine could read it with ``ps``). The launcher
prints the URL to open, then *replaces itself* with the Jupyter server process, so Ctrl-C
or a signal to its PID stops Jupyter directly.
"""

from __future__ import annotations

import argparse
import os
import secrets
import socket
import sys
from collections.abc import Sequence
from pathlib import Path

__all__ = ["HOST", "default_notebook_dir", "find_free_port", "lab_command", "lab_env", "lab_url", "main"]

#: JupyterLab is only ever bound to the loopback interface.
HOST = "127.0.0.1"


def default_notebook_dir() -> Path:
    """``notebooks/`` of the checkout mechnb is installed from (editable install), else of the CWD."""
    checkout = Path(__file__).resolve().parent.parent
    return checkout / "notebooks" if (checkout / "pyproject.toml").is_file() else Path.cwd() / "notebooks"


def _check_port(name: str, port: object, *, allow_zero: bool = False) -> int:
    """``port`` as an int in ``[1, 65535]`` (``[0, 65535]`` with ``allow_zero``); bools, strings and floats raise."""
    lo = 0 if allow_zero else 1
    if isinstance(port, bool) or not isinstance(port, int):
        raise TypeError(f"{name}: expected an int port in {lo}..65535, got {type(port).__name__} {port!r}")
    if not lo <= port <= 65535:
        raise ValueError(f"{name}: expected a port in {lo}..65535, got {port}")
    return port


def _port_is_free(port: int, host: str = HOST) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def find_free_port(start: int = 8888, tries: int = 100, host: str = HOST) -> int:
    """The first port in ``[start, start + tries)`` (cut at 65535) that can be bound on ``host``.

    ``start=0`` asks the operating system for any free port. ``start`` must be in ``0..65535`` and
    ``tries`` at least 1; when every port is taken a ``RuntimeError`` names the range.
    """
    start = _check_port("start", start, allow_zero=True)
    if isinstance(tries, bool) or not isinstance(tries, int):
        raise TypeError(f"tries: expected an int >= 1, got {type(tries).__name__} {tries!r}")
    if tries < 1:
        raise ValueError(f"tries: expected an int >= 1, got {tries}")
    if not isinstance(host, str) or not host:
        raise TypeError(f"host: expected an address string such as {HOST!r}, got {host!r}")
    if start == 0:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind((host, 0))
            return int(s.getsockname()[1])
    stop = min(start + tries, 65536)
    for port in range(start, stop):
        if _port_is_free(port, host):
            return port
    raise RuntimeError(f"port: no free port in [{start}, {stop}) on {host}; pass --port")


def lab_command(port: int, notebook_dir: str | os.PathLike[str], open_browser: bool = False) -> list[str]:
    """The ``jupyter lab`` command line (run with the current interpreter, i.e. the venv's).

    ``port``: an int in ``1..65535``; ``notebook_dir``: a path (str or ``os.PathLike``).
    """
    port = _check_port("port", port)
    if not isinstance(notebook_dir, (str, os.PathLike)) or not str(notebook_dir):
        raise TypeError(f"notebook_dir: expected a folder path (str or os.PathLike), got {notebook_dir!r}")
    cmd = [
        sys.executable, "-m", "jupyterlab",
        f"--ServerApp.ip={HOST}",
        f"--ServerApp.port={int(port)}",
        "--ServerApp.port_retries=0",  # the printed URL must be the real one
        f"--ServerApp.root_dir={Path(notebook_dir).resolve()}",
        f"--ServerApp.open_browser={bool(open_browser)}",
        "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
    ]
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        cmd.append("--allow-root")  # Jupyter refuses to start as root without it (containers, CI)
    return cmd


def lab_env(token: str, base: dict[str, str] | None = None) -> dict[str, str]:
    """The environment for the server: ``base`` (default ``os.environ``) plus ``JUPYTER_TOKEN``."""
    if token is not None and not isinstance(token, str):
        raise TypeError(f"token: expected a non-empty string, got {type(token).__name__}")
    if not token:
        raise ValueError("token: expected a non-empty string (JupyterLab must not run without a token)")
    env = dict(os.environ if base is None else base)
    env["JUPYTER_TOKEN"] = token
    return env


def lab_url(port: int, token: str) -> str:
    """The URL that opens JupyterLab with the token filled in."""
    return f"http://{HOST}:{_check_port('port', port)}/lab?token={token}"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mechnb.lab", description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=None,
                        help="port to bind on 127.0.0.1 (default: the first free one from 8888)")
    parser.add_argument("--token", default=None,
                        help="access token (default: $MECHNB_LAB_TOKEN, else a fresh random one)")
    parser.add_argument("--notebook-dir", default=None, help="folder to serve (default: the checkout's notebooks/)")
    parser.add_argument("--no-browser", action="store_true", help="do not try to open a web browser")
    args = parser.parse_args(argv)

    if args.notebook_dir:
        notebook_dir = Path(args.notebook_dir)
    else:
        notebook_dir = default_notebook_dir()
        notebook_dir.mkdir(exist_ok=True)  # git does not keep an empty folder
    if not notebook_dir.is_dir():
        parser.error(f"--notebook-dir: {notebook_dir} is not a folder")
    port = args.port if args.port is not None else find_free_port(8888)
    if not 0 < port < 65536:
        parser.error(f"--port: expected 1..65535, got {port}")
    token = args.token or os.environ.get("MECHNB_LAB_TOKEN") or secrets.token_urlsafe(24)

    cmd = lab_command(port, notebook_dir, open_browser=not args.no_browser)
    env = lab_env(token)
    print(f"mechnb: JupyterLab on {notebook_dir}\n"
          f"mechnb: open  {lab_url(port, token)}\n"
          f"mechnb: stop with Ctrl-C", flush=True)
    os.execve(sys.executable, cmd, env)  # never returns
    return 0  # pragma: no cover


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
