"""Fixtures of the deployment tests (helpers in deploy_support.py)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from deploy_support import target_dir


@pytest.fixture(scope="session")
def static_binary() -> Path:
    """The static musl binary that goes into the image, as scripts/build-image left it in
    the image's build context ($S3_BALANCE_STATIC_BIN names it)."""
    path = Path(os.environ.get("S3_BALANCE_STATIC_BIN") or target_dir() / "image-context" / "s3-balance")
    if not path.exists():
        message = f"static binary {path} not found (scripts/build-image builds it)"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    return path
