"""Mask2Former and EoMT trained through the CLI on the built-in dataset: the loss falls, validation mIoU
ends above the untrained model's, EoMT's masked attention is annealed to none by the end, and a run
stopped mid-way and resumed (`--resume`) ends bit-identical to the straight run, annealing included.

The models are narrow (32 channels, a few layers) so each run takes seconds on a CPU."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pytest
import torch
from engine_helpers import reset_accelerate
from safetensors.torch import load_file

from segaccel.config import load_config
from segaccel.engine.loop_context import TrainingInterrupted
from segaccel.engine.runner import Runner

pytest.importorskip("timm")

ROOT = Path(__file__).resolve().parents[2]
DATA = "{num_train: 200, num_val: 16, image_size: [48, 64], seed: 1}"
LOSS = """
    loss_decode:
      type: MaskClassificationLoss
      num_points: 512
      matcher: {type: HungarianMatcher, num_points: 512}"""
MASK2FORMER = f"""
  backbone:
    type: TimmBackbone
    model_name: resnet18
    out_indices: [1, 2, 3, 4]
    model_kwargs: {{layers: [1, 1, 1, 1], channels: [16, 32, 32, 32]}}
  decode_head:
    type: Mask2FormerHead
    in_channels: [16, 32, 32, 32]
    feat_channels: 32
    out_channels: 32
    num_classes: 4
    num_queries: 8
    pixel_decoder:
      norm_cfg: {{type: GN, num_groups: 8}}
      encoder:
        num_layers: 1
        layer_cfg:
          self_attn_cfg: {{embed_dims: 32, num_heads: 4, num_levels: 3, num_points: 2}}
          ffn_cfg: {{embed_dims: 32, feedforward_channels: 64}}
      positional_encoding: {{num_feats: 16, normalize: true}}
    positional_encoding: {{num_feats: 16, normalize: true}}
    transformer_decoder:
      num_layers: 3
      layer_cfg:
        self_attn_cfg: {{embed_dims: 32, num_heads: 4}}
        cross_attn_cfg: {{embed_dims: 32, num_heads: 4}}
        ffn_cfg: {{embed_dims: 32, feedforward_channels: 64}}{LOSS}"""
EOMT = f"""
  backbone:
    type: TimmBackbone
    model_name: vit_small_patch14_reg4_dinov2
    out_indices: [-1]
    final_norm: true
    model_kwargs: {{img_size: [48, 64], patch_size: 8, embed_dim: 32, depth: 4, num_heads: 2}}
  decode_head:
    type: EoMTHead
    in_channels: 32
    num_classes: 4
    num_queries: 8
    num_blocks: 2
    patch_size: 8
    mask_annealing_start_steps: [0.2, 0.4]   # fractions of max_iters
    mask_annealing_end_steps: [0.4, 0.6]{LOSS}"""


def write_config(tmp_path: Path, model: str, max_iters: int) -> Path:
    text = f"""
_base_: [{ROOT / "configs/_base_/datasets/synthetic.yaml"}, {ROOT / "configs/_base_/default_runtime.yaml"}]
model:
  type: EncoderDecoder
  data_preprocessor: {{mean: [123.675, 116.28, 103.53], std: [58.395, 57.12, 57.375], size_divisor: 32}}
{model}
train_dataloader: {{batch_size: 4, dataset: {{synthetic: {DATA}}}}}
val_dataloader: {{batch_size: 8, dataset: {{synthetic: {DATA}}}}}
test_dataloader: {{batch_size: 8, dataset: {{synthetic: {DATA}}}}}
optim_wrapper:
  optimizer: {{type: AdamW, lr: 1.0e-3, weight_decay: 0.05}}
  clip_grad: {{max_norm: 1.0}}
param_scheduler:
  - {{type: PolyLR, power: 0.9, begin: 0, end: {max_iters}}}
train_cfg: {{type: IterBasedTrainLoop, max_iters: {max_iters}, val_interval: {max_iters}}}
default_hooks:
  logger: {{interval: 10}}
  checkpoint: {{interval: {max_iters // 2}, max_keep_ckpts: 3, save_best: null}}
  visualization: {{interval: 0}}
"""
    path = tmp_path / "config.yaml"
    path.write_text(text)
    return path


def train_losses(work_dir: Path) -> list[float]:
    lines = (work_dir / "logs" / "scalars.jsonl").read_text().splitlines()
    return [r["loss"] for r in map(json.loads, lines) if r["mode"] == "train"]


@pytest.mark.parametrize("model", ["mask2former", "eomt"])
def test_training_through_the_cli(model, tmp_path, fresh_accelerate, script_module):
    config = write_config(tmp_path, MASK2FORMER if model == "mask2former" else EOMT, max_iters=100)
    untrained = script_module("test").main([str(config), "--work-dir", str(tmp_path / "untrained")])
    fresh_accelerate()
    trained = script_module("train").main([str(config), "--work-dir", str(tmp_path / "run")])
    losses = train_losses(tmp_path / "run")
    assert len(losses) == 10 and sum(losses[-3:]) / 3 < 0.85 * losses[0], losses
    assert trained["mIoU"] > untrained["mIoU"] + 10, (trained, untrained)
    if model == "eomt":  # annealed to none by 60% of the run: the exported model masks nothing
        weights = load_file(str(tmp_path / "run" / "model" / "model.safetensors"))
        assert weights["decode_head.attn_mask_probs"].tolist() == [0.0, 0.0]


def make_runner(config: Path, work_dir: Path, **kwargs) -> Runner:
    reset_accelerate()
    return Runner(load_config(config), work_dir=work_dir, config_path=str(config), **kwargs)


@pytest.mark.parametrize("model", ["mask2former", "eomt"])
def test_resume_mid_run_is_bit_identical(model, tmp_path, monkeypatch, fresh_accelerate):
    """12 iterations straight == 6, SIGINT, `--resume`, 6 more: every weight and buffer, bit for bit
    (EoMT: stopped while its second block's masking is being annealed, with random queries freed of
    their masks at each step)."""
    config = write_config(tmp_path, MASK2FORMER if model == "mask2former" else EOMT, max_iters=12)
    make_runner(config, tmp_path / "straight").train()

    original = Runner.after_train_iter

    def after_train_iter(self, iteration, metrics):
        original(self, iteration, metrics)
        if iteration == 6:
            if model == "eomt":  # step 6 ran with block 0 annealed away and block 1 half-way
                probs = self.unwrapped_model.decode_head.attn_mask_probs.tolist()
                assert probs[0] == 0.0 and 0.0 < probs[1] < 1.0, probs
            os.kill(os.getpid(), signal.SIGINT)

    monkeypatch.setattr(Runner, "after_train_iter", after_train_iter)
    with pytest.raises(TrainingInterrupted):
        make_runner(config, tmp_path / "resumed").train()
    monkeypatch.setattr(Runner, "after_train_iter", original)
    make_runner(config, tmp_path / "resumed", resume=True).train()

    straight = load_file(str(tmp_path / "straight" / "model" / "model.safetensors"))
    resumed = load_file(str(tmp_path / "resumed" / "model" / "model.safetensors"))
    assert straight.keys() == resumed.keys()
    different = [k for k in straight if not torch.equal(straight[k], resumed[k])]
    assert different == []
    assert train_losses(tmp_path / "straight")[-1] == train_losses(tmp_path / "resumed")[-1]
