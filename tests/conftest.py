"""Shared fixtures. Tests run offline on tiny real diffusers models the suite builds once per session."""

from __future__ import annotations

import os

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))


@pytest.fixture(scope="session")
def tiny_models_dir(tmp_path_factory) -> Path:
    """A models folder holding tiny-sd1 and tiny-sdxl, each as a diffusers folder and a single file."""
    from backends.local.tiny import write_tiny_models

    models_dir = tmp_path_factory.mktemp("models")
    write_tiny_models(models_dir)
    return models_dir


@pytest.fixture(scope="session")
def model_manager(tiny_models_dir):
    from backends.local.models import ModelManager

    return ModelManager(tiny_models_dir, default="tiny-sd1", cache_size=4)


@pytest.fixture(scope="session")
def engine(model_manager):
    from backends.local.engine import LocalEngine

    return LocalEngine(model_manager)
