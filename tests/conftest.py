"""Shared fixtures: a private synthetic-data cache, a clean Accelerate state, the scripts as modules."""

import importlib.util
import types
from pathlib import Path

import pytest
from engine_helpers import reset_accelerate  # on pytest's pythonpath

# tests/export and tests/deploy export to ONNX and run it: they need the `onnx` extra.
ONNX_MODULES = ("onnxscript", "onnxruntime")
ONNX_DIRS = ("export", "deploy")


def pytest_collection_modifyitems(config, items):
    """Without the `onnx` extra, the export and runtime tests are skipped, saying why (the
    minimum-versions environment installs the declared floors, not that extra)."""
    missing = [name for name in ONNX_MODULES if importlib.util.find_spec(name) is None]
    if not missing:
        return
    skip = pytest.mark.skip(reason=f"the onnx extra is not installed ({', '.join(missing)} missing)")
    tests = Path(__file__).resolve().parent
    for item in items:
        parts = Path(item.fspath).resolve().relative_to(tests).parts
        if parts and parts[0] in ONNX_DIRS:
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    """Synthetic datasets go to one temporary cache for the session, never the home folder."""
    monkeypatch.setenv("SEGACCEL_CACHE", str(tmp_path_factory.getbasetemp() / "segaccel-cache"))


@pytest.fixture
def fresh_accelerate():
    """Reset Accelerate's process-wide state so a test can build its own `Accelerator`.

    Reset before and after the test; the fixture's value resets again, for a test that builds
    several (`fresh_accelerate()` before each `Runner`)."""
    reset_accelerate()
    yield reset_accelerate
    reset_accelerate()


@pytest.fixture(scope="session")
def script_module():
    """`load("test")`: `scripts/test.py` imported as a module named `segaccel_scripts_test`.

    Imported by its file name (`import test`), a script would shadow the standard library's `test`
    package, or be shadowed by it."""

    def load(name: str) -> types.ModuleType:
        path = Path(__file__).resolve().parents[1] / "scripts" / f"{name}.py"
        spec = importlib.util.spec_from_file_location(f"segaccel_scripts_{name}", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module

    return load


@pytest.fixture(autouse=True)
def _restore_segaccel_logger():
    """A `Runner` configures the `segaccel` logger (own handlers, no propagation); undo that after
    each test so log-capturing tests (caplog) still see records."""
    import logging

    yield
    log = logging.getLogger("segaccel")
    for handler in list(log.handlers):
        log.removeHandler(handler)
        handler.close()
    log.propagate = True
    log.setLevel(logging.NOTSET)


@pytest.fixture
def offline_cache(tmp_path, monkeypatch):
    """An empty Hugging Face cache folder, with HF_HUB_OFFLINE=1 (environment and constants).

    `huggingface_hub` reads both when it is imported, so its `constants` are patched too.
    """
    from huggingface_hub import constants

    cache = tmp_path / "hf-cache"
    cache.mkdir()
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    return cache
