"""Shared fixtures: the data directory and one local Ray for the integration tests."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def data_dir() -> str:
    """`$METARAY_DATA_DIR`, else `../shared/data` beside the checkout (as in CI)."""
    path = Path(os.environ.get("METARAY_DATA_DIR", ROOT.parent / "shared" / "data"))
    assert path.is_dir(), f"test data not found at {path}; set METARAY_DATA_DIR"
    return str(path)


@pytest.fixture(scope="session")
def ray_local():
    import ray

    ray.init(num_cpus=2, include_dashboard=False)
    yield ray
    ray.shutdown()
