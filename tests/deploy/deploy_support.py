"""Helpers of the deployment tests (tests/deploy): tool lookup, paths.

The tools come from scripts/install-test-deps: promtool and prometheus (Debian's prometheus),
podman and nginx (Debian), docker-compose and helm (binaries shipped in PyPI packages), and
kubernetes-validate, checkov, yamllint (a virtualenv of their own); their links are in
$S3_BALANCE_TOOLS/bin, which scripts/test puts on the PATH.

A missing tool skips its test on a developer's machine and FAILS it under CI=true: CI must
never pass a check it did not run.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
TOOLS_BIN = Path(os.environ.get("S3_BALANCE_TOOLS", "/var/tmp/s3-balance-tools")) / "bin"


def need(name: str) -> str:
    """Path of tool `name` (PATH, then $S3_BALANCE_TOOLS/bin); skips, or fails under CI."""
    found = shutil.which(name) or shutil.which(name, path=str(TOOLS_BIN))
    if found:
        return found
    message = f"{name} not found (scripts/install-test-deps installs it)"
    if os.environ.get("CI") == "true":
        pytest.fail(message)
    pytest.skip(message)


def target_dir() -> Path:
    return Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target"))
