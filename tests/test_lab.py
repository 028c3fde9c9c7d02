"""The ``make lab`` launcher's helpers (``mechnb.lab``): bad ports and folders are named, free ports are real.

The end-to-end start of JupyterLab lives in ``tests/test_project.py``.
"""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from mechnb import lab


@pytest.mark.parametrize(
    ("start", "exc", "needle"),
    [(-5, ValueError, r"start: expected a port in 0\.\.65535, got -5"),
     (65536, ValueError, "start: expected a port in 0..65535, got 65536"),
     ("8888", TypeError, "start: expected an int port in 0..65535, got str '8888'"),
     (8888.0, TypeError, "start: expected an int port"), (True, TypeError, "start: expected an int port")],
)
def test_find_free_port_names_a_bad_start(start, exc, needle):
    with pytest.raises(exc, match=needle):
        lab.find_free_port(start)


@pytest.mark.parametrize(("tries", "exc"), [(0, ValueError), (-3, ValueError), (2.5, TypeError)])
def test_find_free_port_names_bad_tries(tries, exc):
    with pytest.raises(exc, match="tries: expected an int >= 1"):
        lab.find_free_port(9000, tries=tries)


def test_find_free_port_skips_a_taken_port_and_stays_below_65536():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((lab.HOST, 0))
        taken = s.getsockname()[1]
        got = lab.find_free_port(taken, tries=50)
        assert taken < got < taken + 50
        with pytest.raises(RuntimeError, match=rf"no free port in \[{taken}, {taken + 1}\)"):
            lab.find_free_port(taken, tries=1)
    # the range is cut at 65535: the last port or an error naming [65535, 65536), never an OverflowError
    try:
        assert lab.find_free_port(65535, tries=10) == 65535
    except RuntimeError as e:
        assert "[65535, 65536)" in str(e)


@pytest.mark.parametrize(
    ("port", "exc", "needle"),
    [("abc", TypeError, "port: expected an int port in 1..65535, got str 'abc'"),
     (0, ValueError, "port: expected a port in 1..65535, got 0"), (70000, ValueError, "got 70000"),
     (8888.5, TypeError, "got float"), (None, TypeError, "got NoneType")],
)
def test_lab_command_and_url_name_a_bad_port(port, exc, needle):
    with pytest.raises(exc, match=needle):
        lab.lab_command(port, ".")
    with pytest.raises(exc, match=needle):
        lab.lab_url(port, "tok")


@pytest.mark.parametrize("folder", [None, 3, ""])
def test_lab_command_names_a_bad_folder(folder):
    with pytest.raises(TypeError, match="notebook_dir: expected a folder path"):
        lab.lab_command(8899, folder)


def test_lab_command_accepts_str_and_path_alike(tmp_path):
    assert lab.lab_command(8899, str(tmp_path)) == lab.lab_command(8899, Path(tmp_path))
    assert f"--ServerApp.root_dir={tmp_path.resolve()}" in lab.lab_command(8899, tmp_path)


def test_lab_env_needs_a_string_token():
    with pytest.raises(TypeError, match="token: expected a non-empty string, got int"):
        lab.lab_env(123, base={})  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="token"):
        lab.lab_env("", base={})
