"""``saestudio serve`` / ``saestudio worker`` at start-up: ``--data-dir`` is honoured, and
every setting that cannot work is one ``saestudio: error:`` line naming it, exit code 2,
never a traceback."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _run(args: list[str], tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("SAESTUDIO_")}
    clean.update(SAESTUDIO_DATA_DIR=str(tmp_path / "env-data"), **env)
    return subprocess.run(
        [sys.executable, "-m", "saestudio.cli", *args],
        capture_output=True, text=True, env=clean, cwd=tmp_path, timeout=120,
    )  # fmt: skip


def _one_error_line(r: subprocess.CompletedProcess[str], *names: str) -> str:
    assert r.returncode == 2, (r.returncode, r.stdout, r.stderr)
    lines = [x for x in r.stderr.splitlines() if x.strip()]
    assert len(lines) == 1 and lines[0].startswith("saestudio: error: "), r.stderr
    assert "Traceback" not in r.stderr
    for name in names:
        assert name in lines[0], lines[0]
    return lines[0]


@pytest.mark.parametrize("command", ["serve", "worker"])
def test_refusals_are_one_line_naming_the_setting(command: str, tmp_path: Path) -> None:
    port = ["--port", str(_free_port())] if command == "serve" else []
    blocked = tmp_path / "a-file"
    blocked.write_text("")
    r = _run([command, "--data-dir", str(blocked / "data"), *port], tmp_path)
    _one_error_line(r, "--data-dir", "SAESTUDIO_DATA_DIR", str(blocked / "data"))
    r = _run(
        [command, *port],
        tmp_path,
        SAESTUDIO_DATABASE_URL="postgresql+psycopg://nobody@127.0.0.1:1/none",
    )
    _one_error_line(r, "SAESTUDIO_DATABASE_URL", "127.0.0.1:1")
    r = _run([command, *port], tmp_path, SAESTUDIO_BROKER_URL="redis://:pw@127.0.0.1:1/0")
    line = _one_error_line(r, "SAESTUDIO_BROKER_URL")
    assert "pw" not in line  # the password is never printed


def test_serve_refuses_an_open_host_without_token_and_a_busy_port(tmp_path: Path) -> None:
    r = _run(["serve", "--host", "0.0.0.0", "--port", str(_free_port())], tmp_path)
    _one_error_line(r, "SAESTUDIO_HOST", "0.0.0.0", "SAESTUDIO_API_TOKEN")
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        r = _run(["serve", "--port", str(port)], tmp_path)
    _one_error_line(r, "--port", "SAESTUDIO_PORT", str(port), "in use")


def test_data_dir_flag_wins_over_the_environment(tmp_path: Path) -> None:
    """Both commands read --data-dir: a refusal names the flag's folder, not the env's."""
    flag = tmp_path / "file"
    flag.write_text("")
    for command in ("serve", "worker"):
        r = _run([command, "--data-dir", str(flag), "--help"], tmp_path)
        assert r.returncode == 0 and "--data-dir DIR" in r.stdout
        port = ["--port", str(_free_port())] if command == "serve" else []
        r = _run([command, "--data-dir", str(flag), *port], tmp_path)
        _one_error_line(r, str(flag))
        assert not (tmp_path / "env-data").exists()
