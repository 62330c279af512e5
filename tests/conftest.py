"""Shared test helpers: where the repository's files are."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
PROFILES = sorted((REPO / "deploy" / "profiles").glob("*.yaml"))


@pytest.fixture
def local_cpu_data() -> dict:
    """The embedded default profile as a fresh mutable dict, for tests that break one field."""
    import yaml

    return yaml.safe_load((REPO / "deploy/profiles/local-cpu.yaml").read_text())
