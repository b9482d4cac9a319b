"""The platform in a fresh interpreter: production settings refuse the default SECRET_KEY, and the
``platform/`` folder on sys.path never shadows the standard library's ``platform`` module."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration  # subprocesses


def test_production_refuses_the_default_secret_key():
    env = {**os.environ, "DEBUG": "false", "SECRET_KEY": ""}
    code = "import forgery_site.settings"
    result = subprocess.run(
        [sys.executable, "-c", code], env={**env, "PYTHONPATH": "platform"}, capture_output=True, text=True
    )
    assert result.returncode != 0 and "SECRET_KEY" in result.stderr
    ok = subprocess.run(
        [sys.executable, "-c", code],
        env={**env, "SECRET_KEY": "k3y-A" * 11, "WEBHOOK_SECRET": "w" * 32, "PYTHONPATH": "platform"},
        capture_output=True,
        text=True,
    )
    assert ok.returncode == 0, ok.stderr


def test_platform_is_not_shadowed():
    import platform

    root = Path(__file__).resolve().parents[2]
    result = subprocess.run(
        [sys.executable, "-c", "import platform; print(platform.system())"],
        capture_output=True,
        text=True,
        cwd=root,
    )
    assert result.stdout.strip() == platform.system()
    assert (root / "platform").is_dir() and not (root / "platform/__init__.py").exists()
