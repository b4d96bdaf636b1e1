"""Smoke tests of `scripts/benchmark.py infer --speed`: tiny inputs, one timed call; speed never asserted."""

import argparse

import pytest
import torch

from segaccel.benchmark import infer

CONFIG = "configs/segformer/segformer_mit-b0_8xb2-160k_ade20k-512x512.yaml"


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    infer.add_arguments(parser)
    sizes = ["--whole-size", "64", "96", "--slide-size", "96", "128", "--slide-crop", "64", "64"]
    sizes += ["--slide-stride", "32", "48", "--num-classes", "3", "--device", "cpu"]
    return parser.parse_args([CONFIG, "--steps", "1", "--warmup", "1", *sizes, *argv])


def test_speed_rows_for_whole_and_slide():
    rows = infer.run(parse("--speed"))
    assert [(r["model"], r["mode"]) for r in rows] == [("segaccel", "whole"), ("segaccel", "slide")]
    assert rows[0]["input"] == "2x3x64x96" and rows[1]["input"] == "2x3x96x128"
    assert all(r["images/s"] > 0 for r in rows)


def test_slide_windows_match_the_segmentor_slide_inference():
    from segaccel.benchmark.train import build_ours, model_config

    model = build_ours(
        model_config(argparse.Namespace(config=CONFIG, cfg_options=[], num_classes=3, vs=None))
    )
    model.eval().test_cfg = {"mode": "slide", "crop_size": [64, 64], "stride": [32, 48]}
    x = torch.randn(1, 3, 96, 128)

    def encode(crops):
        hw = tuple(crops.shape[-2:])
        return model.encode_decode(crops, [{"img_shape": hw, "pad_shape": hw}] * len(crops))

    with torch.no_grad():
        expected = model.inference(x, [{"img_shape": (96, 128), "ori_shape": (96, 128)}])
        got = infer.slide_windows(encode, x, (64, 64), (32, 48), model.out_channels)
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)


def test_speed_vs_transformers():
    pytest.importorskip("transformers")
    rows = infer.run(parse("--vs", "transformers", "--batch", "1"))
    assert [(r["model"], r["mode"]) for r in rows] == [
        ("segaccel", "whole"),
        ("transformers", "whole"),
        ("segaccel", "slide"),
        ("transformers", "slide"),
    ]
