"""The deployment's shell scripts parse (``bash -n``) and are executable: the image's entrypoint, the
local services and demo scripts, Label Studio's launcher and the GPU check."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration  # runs bash

ROOT = Path(__file__).resolve().parents[2]
SCRIPTS = sorted(p for p in (ROOT / "deploy").rglob("*.sh") if "node_modules" not in p.parts)


def test_the_scripts_are_found():
    names = {p.relative_to(ROOT).as_posix() for p in SCRIPTS}
    assert {"deploy/docker/entrypoint.sh", "deploy/local/services.sh", "deploy/local/demo.sh"} <= names


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_script_parses_and_is_executable(script):
    result = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    assert os.access(script, os.X_OK), f"{script.name} is not executable"
