#!/usr/bin/env bash
# Set up a fresh Debian/Ubuntu machine for the test suite, then run it.
#
#   bash scripts/test.sh            # what the README and .ci/run run
#   bash scripts/test.sh -x tests/test_cli.py   # extra arguments go to pytest
#
# Installs only what is missing: the apt packages of a virtual screen (Xvfb) and of Qt's
# xcb platform and OpenGL (through sudo when not root), the CPU build of PyTorch first
# (torch==2.13.0, so that the package's torch range installs nothing more) unless a
# torch is installed, then the package with its [testing] extra unless this checkout is
# installed with it. Then runs `xvfb-run -a python3 -m pytest -q`.
# The tests read real data from ../shared/data beside the repository.
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES="xvfb xauth libgl1 libgl1-mesa-dri libegl1 libglib2.0-0 libfontconfig1 libdbus-1-3
  libxkbcommon-x11-0 libxcb-icccm4 libxcb-image0 libxcb-keysyms1 libxcb-randr0
  libxcb-render-util0 libxcb-xinerama0 libxcb-xfixes0 libxcb-shape0 libxcb-cursor0"

missing=""
if command -v dpkg >/dev/null 2>&1; then
  for pkg in $APT_PACKAGES; do
    dpkg -s "$pkg" >/dev/null 2>&1 || missing="$missing $pkg"
  done
fi
if [ -n "$missing" ]; then
  SUDO=""
  if [ "$(id -u)" != "0" ]; then
    if ! command -v sudo >/dev/null 2>&1; then
      echo "scripts/test.sh: needs root or sudo to install:$missing" >&2
      exit 1
    fi
    SUDO="sudo"
  fi
  echo "scripts/test.sh: installing system packages:$missing"
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  # shellcheck disable=SC2086
  $SUDO apt-get install -y -qq --no-install-recommends $missing
fi
if ! command -v xvfb-run >/dev/null 2>&1; then
  echo "scripts/test.sh: xvfb-run is missing and this is no Debian/Ubuntu machine;" \
    "install Xvfb (package xvfb or xorg-x11-server-Xvfb) and run this again." >&2
  exit 1
fi

# Python packages, each only when missing: an installed torch is kept.
if ! python3 -c "import torch" 2>/dev/null; then
  python3 -m pip install -q torch==2.13.0
fi
if ! python3 - <<'EOF' 2>/dev/null
# Passes when this checkout is installed (editable) and every requirement of the
# package and of its [testing] extra, as pyproject.toml says now, is satisfied.
import importlib.metadata as md
import json
import pathlib
import tomllib

from packaging.requirements import Requirement

project = tomllib.loads(pathlib.Path("pyproject.toml").read_text())["project"]
extras = project["optional-dependencies"]
pending, seen = list(project["dependencies"]) + [f"{project['name']}[testing]"], set()
while pending:
    req = Requirement(pending.pop())
    if req.marker is not None and not req.marker.evaluate():
        continue
    if req.name == project["name"]:
        for extra in req.extras - seen:
            seen.add(extra)
            pending.extend(extras[extra])
        continue
    assert req.specifier.contains(md.version(req.name), prereleases=True), req
url = json.loads(md.distribution(project["name"]).read_text("direct_url.json") or "{}")
assert pathlib.Path(url["url"].removeprefix("file://")).resolve() == pathlib.Path.cwd()
EOF
then
  python3 -m pip install -q -e ".[testing]"
fi

# The README's test command.
exec xvfb-run -a python3 -m pytest -q "$@"
