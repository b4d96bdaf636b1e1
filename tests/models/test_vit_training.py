"""Training ViT backbones end to end on the built-in dataset: a tiny DINOv3 ViT trained through the
CLI lowers its loss (layer-wise lr decay groups in its log); a frozen backbone — ViT or a CNN with
BatchNorm — leaves every backbone tensor bit-identical while the head learns."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

pytest.importorskip("timm")

from segaccel.config import load_config  # noqa: E402
from segaccel.engine.runner import Runner  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
SMALL_DATA = "{num_train: 96, num_val: 12, image_size: [48, 64], seed: 5}"
TINY_VIT = {  # DINOv3's ViT (qkv bias, RoPE, 4 storage tokens): ViT-Tiny width, two blocks, 8-px patches
    "type": "TimmBackbone",
    "model_name": "vit_small_patch16_dinov3_qkvb",
    "out_indices": [-1],
    "final_norm": True,
    "model_kwargs": {"depth": 2, "patch_size": 8, "embed_dim": 192, "num_heads": 3},
}


def write_config(tmp_path: Path, backbone: dict, channels: int, **extra) -> Path:
    """A config on the built-in synthetic dataset with `backbone` under a BNHead."""
    cfg = {
        "_base_": [
            str(ROOT / "configs" / "_base_" / "datasets" / "synthetic.yaml"),
            str(ROOT / "configs" / "_base_" / "default_runtime.yaml"),
        ],
        "model": {
            "type": "EncoderDecoder",
            "data_preprocessor": {
                "type": "SegDataPreProcessor",
                "mean": [123.675, 116.28, 103.53],
                "std": [58.395, 57.12, 57.375],
            },
            "backbone": backbone,
            "decode_head": {
                "type": "BNHead",
                "in_channels": [channels],
                "in_index": [0],
                "input_transform": "resize_concat",
                "channels": channels,
                "dropout_ratio": 0,
                "num_classes": 4,
            },
        },
        "optim_wrapper": {"optimizer": {"type": "AdamW", "lr": 2e-3, "weight_decay": 1e-4}},
        "param_scheduler": [{"type": "LinearLR", "start_factor": 0.1, "begin": 0, "end": 5}],
        "train_cfg": {"type": "IterBasedTrainLoop", "max_iters": 100, "val_interval": 100},
        "default_hooks": {"visualization": {"interval": 0}},
        **extra,
    }
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


@pytest.mark.e2e
def test_tiny_dinov3_vit_trained_through_the_cli_lowers_its_loss(tmp_path):
    config = write_config(
        tmp_path,
        TINY_VIT,
        192,
        optim_wrapper={
            "optimizer": {"type": "AdamW", "lr": 2e-3, "weight_decay": 1e-4},
            "paramwise_cfg": {"decay_rate": 0.9, "decay_type": "layer_wise", "num_layers": 2},
        },
    )
    work_dir = tmp_path / "run"
    command = [
        sys.executable,
        str(ROOT / "scripts" / "train.py"),
        str(config),
        "--work-dir",
        str(work_dir),
        "train_cfg.max_iters=60",
        "train_cfg.val_interval=60",
        "default_hooks.logger.interval=10",
        "train_dataloader.batch_size=8",
        f"train_dataloader.dataset.synthetic={SMALL_DATA}",
        f"val_dataloader.dataset.synthetic={SMALL_DATA}",
        f"test_dataloader.dataset.synthetic={SMALL_DATA}",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    result = subprocess.run(command, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    records = [json.loads(line) for line in (work_dir / "logs" / "scalars.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in records if r["mode"] == "train"]
    assert len(losses) == 6 and losses[-1] < 0.8 * losses[0], losses
    log = (work_dir / "logs" / "train.log").read_text()
    for group in ("layer_0_decay", "layer_1_decay", "layer_2_decay", "layer_3_no_decay"):
        assert f"  {group}: lr " in log  # embeddings, blocks 0 and 1, the rest
    assert (work_dir / "model" / "model.safetensors").is_file()


@pytest.mark.parametrize(
    ("backbone", "channels"),
    [
        ({**TINY_VIT, "frozen": True}, 192),
        ({"type": "TimmBackbone", "model_name": "resnet18", "out_indices": [4], "frozen": True}, 512),
    ],
    ids=["dinov3-vit", "resnet18-batchnorm"],
)
def test_frozen_backbone_stays_bit_identical_while_the_head_trains(
    tmp_path, backbone, channels, fresh_accelerate
):
    import timm
    from safetensors.torch import save_file

    torch.manual_seed(0)
    source = timm.create_model(backbone["model_name"], pretrained=False, **backbone.get("model_kwargs", {}))
    for name, buffer in source.named_buffers():  # non-trivial BatchNorm statistics to keep
        if name.endswith(("running_mean", "running_var")):
            buffer.uniform_(0.5, 1.5)
    weights = {k: v.contiguous() for k, v in source.state_dict().items()}
    save_file(weights, str(tmp_path / "backbone.safetensors"))
    backbone = {**backbone, "pretrained": str(tmp_path / "backbone.safetensors")}

    config = write_config(tmp_path, backbone, channels)
    overrides = [
        "train_cfg.max_iters=6",
        "train_cfg.val_interval=6",
        "train_dataloader.batch_size=4",
        f"train_dataloader.dataset.synthetic={SMALL_DATA}",
        f"val_dataloader.dataset.synthetic={SMALL_DATA}",
    ]
    runner = Runner(load_config(config, overrides), work_dir=tmp_path / "run", config_path=str(config))
    runner.train()
    model = runner.unwrapped_model
    after = {k.removeprefix("timm_model."): v for k, v in model.backbone.state_dict().items()}
    assert after and set(after) <= set(weights)
    changed = [k for k, v in after.items() if not torch.equal(v, weights[k])]
    assert not changed  # weights and BatchNorm statistics alike
    if "resnet" in backbone["model_name"]:
        assert sum(k.endswith("running_mean") for k in after) == 20  # every BatchNorm of the trunk
    head = model.decode_head
    assert not torch.equal(head.conv_seg.weight, torch.zeros_like(head.conv_seg.weight))
    # the banner names the weights' licence (a local file: timm's record for the architecture's weights)
    expected = "dinov3-license" if "dinov3" in backbone["model_name"] else "apache-2.0"
    log = (tmp_path / "run" / "logs" / "train.log").read_text()
    assert re.search(rf"weights licence +: {expected} \(the backbone's weights", log)
    assert head.bn.num_batches_tracked.item() == 6  # the head did train, six steps
