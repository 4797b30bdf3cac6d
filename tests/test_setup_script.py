"""The README's test command is the one CI runs, and its script installs what is missing."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def readme_commands() -> list[str]:
    """The lines of the README's first ``bash`` block."""
    text = (ROOT / "README.md").read_text()
    match = re.search(r"```bash\n(.*?)```", text, re.DOTALL)
    assert match, "the README starts with a bash block of commands"
    return [line for line in match.group(1).splitlines() if line.strip()]


def test_ci_runs_the_readme_test_command():
    commands = readme_commands()
    assert len(commands) == 2
    test_command = commands[1]
    ci_lines = [
        line.strip()
        for line in (ROOT / ".ci" / "run").read_text().splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]
    assert test_command in ci_lines
    assert test_command == "bash scripts/test.sh"


def test_the_script_ends_in_the_pytest_command():
    script = (ROOT / "scripts" / "test.sh").read_text()
    last = [line for line in script.splitlines() if line.strip()][-1]
    assert last == 'exec xvfb-run -a python3 -m pytest -q "$@"'
    subprocess.run(["bash", "-n", str(ROOT / "scripts" / "test.sh")], check=True)


def _stub(folder: Path, name: str, body: str) -> None:
    path = folder / name
    path.write_text(f"#!/bin/sh\n{body}\n")
    path.chmod(0o755)


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
def test_the_script_installs_missing_system_packages_through_sudo(tmp_path):
    """A non-root user without Xvfb: apt-get through sudo installs it, then pytest runs."""
    log = tmp_path / "log"
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    _stub(bin_dir, "id", "echo 1000")
    # dpkg knows every package but xvfb and libxcb-cursor0
    _stub(bin_dir, "dpkg", 'case "$2" in xvfb|libxcb-cursor0) exit 1;; esac; exit 0')
    _stub(bin_dir, "sudo", f'echo "sudo $*" >> {log}')
    _stub(bin_dir, "apt-get", f'echo "apt-get $*" >> {log}')
    _stub(bin_dir, "xvfb-run", f'echo "xvfb-run $*" >> {log}')
    # pip is logged, never run; every other use of python3 is the real one
    python = shutil.which("python3")
    _stub(
        bin_dir,
        "python3",
        f'if [ "$1" = "-m" ] && [ "$2" = "pip" ]; then echo "python3 $*" >> {log}; '
        f'exit 0; fi; exec {python} "$@"',
    )
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}
    subprocess.run(
        ["bash", str(ROOT / "scripts" / "test.sh"), "--co"],
        check=True,
        env=env,
        cwd=tmp_path,
        capture_output=True,
        timeout=120,
    )
    lines = log.read_text().splitlines()
    assert lines[0] == "sudo apt-get update -qq"
    assert lines[1] == ("sudo apt-get install -y -qq --no-install-recommends xvfb libxcb-cursor0")
    # pip only when something is missing here (torch is installed: never torch)
    assert all(line == "python3 -m pip install -q -e .[testing]" for line in lines[2:-1])
    assert lines[-1] == "xvfb-run -a python3 -m pytest -q --co"


def test_plugin_tests_say_why_they_are_skipped_without_napari():
    """No napari: every plugin test module shows as skipped with the reason, none vanish."""
    hide = (
        "import importlib.util as u, sys, pytest\n"
        "f = u.find_spec\n"
        "u.find_spec = lambda n, *a: None if n in ('napari', 'qtpy') else f(n, *a)\n"
        "sys.exit(pytest.main(['-q', '-rs', '-p', 'no:cacheprovider', 'tests/napari']))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", hide], cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    modules = sorted(p.name for p in (ROOT / "tests" / "napari").glob("test_*.py"))
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"{len(modules)} skipped" in done.stdout
    for name in modules:
        assert f"SKIPPED [1] tests/napari/{name}: napari and Qt are not installed" in done.stdout
