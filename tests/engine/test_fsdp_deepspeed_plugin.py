"""DeepSpeed ZeRO-2/3 as far as it builds without a GPU (deepspeed itself is not installed here):
Accelerate's `DeepSpeedPlugin`, built from the settings `accelerate launch --config_file
accelerate_configs/deepspeed_zero{2,3}.yaml` gives each process, reads the ZeRO stage, gradient
clipping, accumulation and (ZeRO-3) the 16-bit gather of the full weights on save."""

from __future__ import annotations

import pytest
from test_fsdp_wiring import launch_env


@pytest.mark.parametrize("stage", [2, 3])
def test_accelerate_deepspeed_plugin_reads_our_zero_configs(stage, monkeypatch):
    from accelerate.utils import DeepSpeedPlugin

    for key, value in launch_env(f"deepspeed_zero{stage}").items():
        monkeypatch.setenv(key, value)
    plugin = DeepSpeedPlugin()
    assert plugin.zero_stage == stage
    assert plugin.gradient_clipping == 1.0 and plugin.gradient_accumulation_steps == 1
    zero = plugin.deepspeed_config["zero_optimization"]
    assert zero["stage"] == stage
    assert zero["offload_optimizer"]["device"] == zero["offload_param"]["device"] == "none"
    # ZeRO-3 keeps no full copy anywhere: the export needs the 16-bit gather on save
    assert zero["stage3_gather_16bit_weights_on_model_save"] is (stage == 3)
    assert plugin.deepspeed_config["gradient_clipping"] == 1.0
