"""Test configuration: 8 fake CPU devices, set before jax is imported anywhere."""

import os

os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8").strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import pathlib  # noqa: E402

import pytest  # noqa: E402

SHARED_DATA = pathlib.Path(__file__).resolve().parents[1].parent / "shared" / "data"
AMAZON = SHARED_DATA / "amazon-game-video"


@pytest.fixture(scope="session")
def amazon_dir():
    """Path to ../shared/data/amazon-game-video, or skip when it is absent."""
    if not (AMAZON / "game" / "train.txt").exists():
        pytest.skip(f"shared benchmark data not found at {AMAZON}")
    return AMAZON
