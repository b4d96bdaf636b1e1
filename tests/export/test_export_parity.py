"""Every shipped model family exports with a dynamic batch, height and width; onnxruntime's logits equal
the PyTorch model's (its data preprocessor, then `encode_decode`) within 1e-4 at two non-square sizes,
neither of them the traced size."""

import json

import pytest
import torch
from export_testing import BASES, pytorch_logits, random_image, tiny_model

from segaccel.deploy.backends import ExportedProgramBackend, OnnxRuntimeBackend
from segaccel.export import export_model

SIZES = [(2, 70, 99), (1, 97, 62)]  # (batch, h, w): wider, then taller than high


def images(batch: int, h: int, w: int, seed: int) -> torch.Tensor:
    return torch.stack(
        [torch.from_numpy(random_image(h, w, seed + i)).permute(2, 0, 1).contiguous() for i in range(batch)]
    )


@pytest.mark.parametrize("family", list(BASES))
def test_family_exports_to_onnx_with_dynamic_shapes(family, tmp_path):
    model = tiny_model(family)
    result = export_model(model, tmp_path / family, format="onnx")
    assert result.max_abs_diff <= 1e-4
    config = json.loads((tmp_path / family / "config.json").read_text())
    input_range = config["export"]["input_range"]
    assert input_range["batch"] == [1, None]
    for dim in ("height", "width"):  # symbolic: any size from the traced range's minimum on
        assert input_range[dim][1] is None

    session = OnnxRuntimeBackend(tmp_path / family / "model.onnx", providers=["CPUExecutionProvider"])
    for k, (batch, h, w) in enumerate(SIZES):
        pixels = images(batch, h, w, seed=10 * k)
        mask = torch.ones((batch, h, w), dtype=torch.uint8)
        got = session(pixels, mask)
        expected = pytorch_logits(model, pixels)
        assert got.shape == (batch, 5, h, w)
        assert (got - expected).abs().max().item() <= 1e-4, (family, (h, w))
        assert len(torch.unique(expected.argmax(1))) > 1  # a model that predicts several classes


def test_padding_mask_gives_the_preprocessor_pad_value(tmp_path):
    """Where the mask is 0 the graph sees `pad_val` after normalisation, as PyTorch's padding does."""
    model = tiny_model("pspnet", data_preprocessor={"pad_val": 0.5})
    export_model(model, tmp_path / "psp", format="onnx")
    session = OnnxRuntimeBackend(tmp_path / "psp" / "model.onnx", providers=["CPUExecutionProvider"])
    pixels = images(2, 66, 90, seed=3)
    mask = torch.ones((2, 66, 90), dtype=torch.uint8)
    mask[0, 50:, :] = 0
    mask[1, :, 71:] = 0
    got = session(pixels, mask)
    expected = pytorch_logits(model, pixels, mask)
    assert (got - expected).abs().max().item() <= 1e-4
    assert (got - session(pixels, torch.ones_like(mask))).abs().max().item() > 1e-3  # the mask matters


def test_exported_program_format_runs_any_size(tmp_path):
    model = tiny_model("segformer")
    result = export_model(model, tmp_path / "pt2", format="exported-program")
    assert (tmp_path / "pt2" / "model.pt2").is_file() and result.max_abs_diff <= 1e-4
    program = ExportedProgramBackend(tmp_path / "pt2" / "model.pt2")
    for k, (batch, h, w) in enumerate(SIZES):
        pixels = images(batch, h, w, seed=20 + k)
        got = program(pixels, torch.ones((batch, h, w), dtype=torch.uint8))
        assert (got - pytorch_logits(model, pixels)).abs().max().item() <= 1e-4
