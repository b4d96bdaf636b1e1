"""Smoke tests of `scripts/benchmark.py train`: tiny crops, a step or two; speed is never asserted."""

import argparse

import pytest
import torch

from segaccel.benchmark import train

CONFIG = "configs/segformer/segformer_mit-b0_8xb2-160k_ade20k-512x512.yaml"


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    train.add_arguments(parser)
    return parser.parse_args([CONFIG, "--device", "cpu", "--steps", "1", "--warmup", "1", *argv])


def test_train_step_rows_and_flops_of_forward_and_backward():
    rows = train.run(parse("--batch", "1", "--crop", "64", "96", "--num-classes", "5"))
    (row,) = rows
    assert row["model"] == "segaccel"
    # batch 1: images/s is it/s (the table rounds images/s to 2 decimals, it/s to 3)
    assert row["it/s"] > 0 and row["images/s"] == pytest.approx(row["it/s"], abs=0.006)
    assert row["GFLOP/step"] > 0 and 0 < row["% matmul peak"] < 100


def test_forward_flops_are_counted_as_multiply_adds_times_two():
    class OneConv(torch.nn.Module):  # the `tensor` mode call of a segmentor, on one 1x1 convolution
        def __init__(self):
            super().__init__()
            self.conv = torch.nn.Conv2d(3, 4, kernel_size=1, bias=False)

        def forward(self, x, mode):
            return self.conv(x)

    # by hand: each of the 8 x 12 output pixels of each of 4 channels sums 3 products
    assert train.count_forward_flops(OneConv(), (8, 12)) == 2 * (8 * 12) * 4 * 3


def test_make_batch_is_what_the_dataloader_gives():
    batch = train.make_batch(2, (32, 48), num_classes=3, seed=0)
    assert [tuple(x.shape) for x in batch["inputs"]] == [(3, 32, 48)] * 2
    assert batch["inputs"][0].dtype == torch.uint8
    labels = batch["data_samples"][1].gt_sem_seg.data
    assert labels.shape == (1, 32, 48) and labels.max() < 3


def test_transformers_twin_has_the_same_architecture():
    pytest.importorskip("transformers")
    cfg = train.model_config(parse("--num-classes", "7", "--vs", "transformers"))
    ours = train.build_ours(cfg)
    theirs = train.build_transformers(ours.config)
    assert sum(p.numel() for p in ours.parameters()) == sum(p.numel() for p in theirs.parameters())
    assert theirs.config.num_labels == 7
    assert theirs.config.layer_norm_eps == ours.backbone.layer_norm_eps


def test_train_vs_transformers_side_by_side():
    pytest.importorskip("transformers")
    rows = train.run(parse("--crop", "64", "64", "--num-classes", "4", "--vs", "transformers", "--no-flops"))
    assert [r["model"] for r in rows] == ["segaccel", "transformers"]
    assert all(r["images/s"] > 0 for r in rows)


def test_with_cp_and_compile_variants_train_to_the_same_losses():
    """Same weights, same batch, same dropout draws: activation checkpointing and torch.compile
    (aot_eager here: inductor would compile C++ for minutes) give our losses step by step."""
    args = ["--batch", "1", "--crop", "64", "96", "--num-classes", "5", "--steps", "2", "--no-flops"]
    args += ["--with-cp", "--compile", "default", "--compile-backend", "aot_eager"]
    rows = train.run(parse(*args))
    assert [r["model"] for r in rows] == ["segaccel", "segaccel with_cp", "segaccel compile (default)"]
    assert rows[0]["max |loss - segaccel's|"] == "0.0e+00"
    for row in rows[1:]:
        assert float(row["max |loss - segaccel's|"]) <= 1e-5
        assert row["it/s"] > 0 and row["first step s"] > 0
