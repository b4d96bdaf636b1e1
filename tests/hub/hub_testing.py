"""Helpers for the Hub tests: the HF cache layout, tiny models and subprocesses of the real client."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import torch

from segaccel.models import Segmentor

REPO_ROOT = Path(__file__).resolve().parents[2]

# the smallest real SegFormer: MiT with one block per stage, spatial reduction 2 in the first stages
TINY_SEGFORMER = dict(
    backbone=dict(
        type="MixVisionTransformer",
        embed_dims=8,
        num_layers=(1, 1, 1, 1),
        num_heads=(1, 1, 1, 1),
        sr_ratios=(2, 2, 1, 1),
        drop_path_rate=0.0,
    ),
    decode_head=dict(type="SegformerHead", in_channels=[8, 8, 8, 8], channels=8, num_classes=3),
    data_preprocessor=dict(mean=[120.0, 115.0, 100.0], std=[60.0, 57.0, 58.0], size_divisor=32),
    id2label={0: "sky", 1: "road", 2: "car"},
    palette=[[70, 130, 180], [128, 64, 128], [0, 0, 142]],
    test_pipeline=[dict(type="Resize", scale=(48, 32), keep_ratio=True)],
)


def tiny_segformer(seed: int = 0, **overrides) -> Segmentor:
    """A tiny SegFormer with random weights and non-trivial BN statistics, in eval mode."""
    torch.manual_seed(seed)
    model = Segmentor(**{**TINY_SEGFORMER, **overrides})
    with torch.no_grad():
        for buffer_name, buffer in model.named_buffers():
            if buffer_name.endswith("running_mean"):
                buffer.normal_()
            elif buffer_name.endswith("running_var"):
                buffer.uniform_(0.5, 2.0)
    return model.eval()


def cache_repo(
    cache_dir: Path,
    repo_id: str,
    files: dict[str, Path | bytes],
    revision: str = "main",
    commit: str | None = None,
) -> str:
    """Lay out a model repo the way huggingface_hub's cache does; returns the commit hash.

    `models--{org}--{name}/refs/{revision}` holds the commit hash (no trailing newline) and
    `snapshots/{commit}/` the files (plain copies; a real cache links them to `blobs/`).
    """
    commit = commit or hashlib.sha1(f"{repo_id}@{revision}".encode()).hexdigest()
    folder = Path(cache_dir) / f"models--{repo_id.replace('/', '--')}"
    (folder / "refs").mkdir(parents=True, exist_ok=True)
    (folder / "refs" / revision).write_text(commit)
    snapshot = folder / "snapshots" / commit
    snapshot.mkdir(parents=True, exist_ok=True)
    for name, content in files.items():
        if isinstance(content, bytes):
            (snapshot / name).write_bytes(content)
        else:
            shutil.copy2(content, snapshot / name)
    return commit


def cache_folder(cache_dir: Path, repo_id: str, folder: Path, revision: str = "main") -> str:
    """Every file of a saved model folder into the cache as `repo_id`."""
    return cache_repo(
        cache_dir, repo_id, {p.name: p for p in Path(folder).iterdir() if p.is_file()}, revision
    )


def hub_env(hub_url: str, tmp_path: Path) -> dict[str, str]:
    """The environment of a subprocess that talks to the fake Hub with the real client."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGINGFACE_"))}
    env.update(
        HF_ENDPOINT=hub_url,
        HF_HUB_DISABLE_XET="1",  # hf_xet is installed: without this the client asks for Xet tokens
        HF_TOKEN="hf_fake_token_for_tests",
        HF_HOME=str(tmp_path / "hf-home"),
        HF_HUB_CACHE=str(tmp_path / "hf-home" / "hub"),
        HF_HUB_DISABLE_TELEMETRY="1",
        PYTHONPATH=str(REPO_ROOT) + os.pathsep + env.get("PYTHONPATH", ""),
    )
    return env


def run(args: list[str], env: dict[str, str], timeout: int = 300) -> str:
    """Run `python ARGS` in the repo root; fail the test with its output unless it exits 0."""
    proc = subprocess.run(
        [sys.executable, *args], cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=timeout
    )
    assert proc.returncode == 0, f"{' '.join(args)} failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-6000:]}"
    return proc.stdout + proc.stderr
