"""The exporter: the graph equals the PyTorch pipeline, export-friendly pooling, pinned sizes refused,
the parity check guarding an atomic write, fp16, the config.json written, and scripts/export.py."""

import json

import pytest
import torch
import torch.nn.functional as F
from export_testing import pytorch_logits, random_image, tiny_model

from segaccel.deploy.config import ExportedConfig
from segaccel.export import ExportError, ExportGraph, export_model, exporter, trace
from segaccel.models.heads.psp_head import AdaptiveAvgPool2d, adaptive_avg_pool2d


def pixels_of(*images) -> torch.Tensor:
    return torch.stack([torch.from_numpy(im).permute(2, 0, 1).contiguous() for im in images])


@pytest.mark.parametrize("channel_order", ["rgb", "bgr"])
def test_graph_equals_preprocessor_then_encode_decode(channel_order):
    model = tiny_model("fcn", data_preprocessor={"channel_order": channel_order, "pad_val": -1.5})
    pixels = pixels_of(random_image(45, 70, 1), random_image(45, 70, 2))
    mask = torch.ones((2, 45, 70), dtype=torch.uint8)
    mask[1, 30:] = 0
    with torch.no_grad():
        got = ExportGraph(model)(pixels, mask)
    assert torch.equal(got, pytorch_logits(model, pixels, mask))


@pytest.mark.parametrize("hw", [(7, 5), (13, 64), (33, 29), (1, 3)])
@pytest.mark.parametrize("out", [1, 2, 3, 6, (2, 5)])
def test_adaptive_pool_as_matrix_products_equals_torch(hw, out):
    x = torch.randn(2, 3, *hw, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(adaptive_avg_pool2d(x, out), F.adaptive_avg_pool2d(x, out), atol=1e-6)


def test_ppm_pool_is_the_native_kernel_in_eager_and_matrices_under_export():
    pool = AdaptiveAvgPool2d(3)
    x = torch.randn(1, 2, 10, 7)
    assert torch.equal(pool(x), F.adaptive_avg_pool2d(x, 3))
    dims = {"x": {2: torch.export.Dim.AUTO, 3: torch.export.Dim.AUTO}}
    program = torch.export.export(pool, (x,), dynamic_shapes=dims, strict=False)
    ops = {str(n.target) for n in program.graph.nodes if n.op == "call_function"}
    assert not any("adaptive_avg_pool" in op for op in ops)
    y = torch.randn(1, 2, 23, 11)  # another size than traced: the windows follow it
    assert torch.allclose(program.module()(y), F.adaptive_avg_pool2d(y, 3), atol=1e-6)


class PinnedWidth(torch.nn.Module):
    """A 'network' whose code turns the input width into a Python int (as some heads once did)."""

    def __init__(self):
        super().__init__()
        from segaccel.models.data_preprocessor import SegDataPreProcessor

        self.data_preprocessor = SegDataPreProcessor()
        self.conv = torch.nn.Conv2d(3, 2, 1)

    def encode_decode(self, x, metas):
        width = int(x.shape[-1])  # pins the width to the traced one
        return self.conv(x)[..., :width]


def test_a_pinned_size_is_an_error_naming_it():
    with pytest.raises(ExportError, match="width"):
        trace(ExportGraph(PinnedWidth()).eval(), (40, 56))


def test_config_json_holds_what_the_runtime_needs(tmp_path):
    test_pipeline = [{"type": "Resize", "scale": [96, 64], "keep_ratio": True}]
    slide = {"mode": "slide", "crop_size": [48, 64], "stride": [32, 40]}
    palette = [[i * 40, 0, 0] for i in range(5)]
    model = tiny_model("fcn", test_cfg=slide, test_pipeline=test_pipeline, palette=palette)
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "config.yaml").write_text("model: {}\n")
    export_model(model, tmp_path / "out", extra_dir=tmp_path / "src")
    cfg = ExportedConfig.read(tmp_path / "out")
    assert (cfg.format, cfg.file, cfg.dtype) == ("onnx", "model.onnx", "float32")
    assert cfg.test_cfg == slide and cfg.test_pipeline == test_pipeline
    assert cfg.id2label == {i: f"class_{i}" for i in range(5)} and cfg.palette[3] == [120, 0, 0]
    assert (cfg.num_classes, cfg.out_channels, cfg.align_corners) == (5, 5, False)
    assert cfg.min_input_size == tuple(model.min_input_size())
    raw = cfg.raw
    assert raw["export"]["inputs"] == ["pixel_values", "pixel_mask"]
    assert raw["export"]["outputs"] == ["logits"]
    assert raw["export"]["check"]["max_abs_diff"] <= 1e-4
    assert raw["data_preprocessor"]["mean"] == [123.675, 116.28, 103.53]
    assert raw["source_model"]["backbone"]["type"] == "ResNetV1c"
    assert (tmp_path / "out" / "config.yaml").read_text() == "model: {}\n"


def test_a_failed_check_leaves_the_previous_export_untouched(tmp_path, monkeypatch):
    out = tmp_path / "out"
    model = tiny_model("fcn")
    export_model(model, out)
    before = {p.name: p.read_bytes() for p in out.iterdir()}

    def differs(*args, **kwargs):
        raise ExportError("the exported graph differs from PyTorch by 1 (> 0.0001): not written")

    monkeypatch.setattr(exporter, "check_export", differs)
    with pytest.raises(ExportError, match="not written"):
        export_model(tiny_model("fcn", seed=1), out)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # no temporary folder left


def test_the_check_refuses_a_graph_that_differs(tmp_path, monkeypatch):
    """The check runs the written file: a graph that is not the model's is caught before the swap."""
    model = tiny_model("fcn")
    real_save = exporter._save_onnx

    def save_another_model(program, graph, example_hw, path, opset):
        other = ExportGraph(tiny_model("fcn", seed=7)).eval()
        real_save(exporter.trace(other, example_hw), other, example_hw, path, opset)

    monkeypatch.setattr(exporter, "_save_onnx", save_another_model)
    with pytest.raises(ExportError, match="differs from PyTorch"):
        export_model(model, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_float16_export_is_close_to_float32_pytorch(tmp_path):
    from segaccel.deploy.backends import OnnxRuntimeBackend

    model = tiny_model("segformer")
    result = export_model(model, tmp_path / "fp16", dtype="float16")
    assert result.dtype == "float16"
    session = OnnxRuntimeBackend(tmp_path / "fp16" / "model.onnx", providers=["CPUExecutionProvider"])
    pixels = pixels_of(random_image(66, 90, 4))
    got = session(pixels, torch.ones((1, 66, 90), dtype=torch.uint8))
    expected = pytorch_logits(model, pixels)
    assert got.dtype == torch.float32
    assert (got - expected).abs().max().item() < 2e-2 * max(1.0, expected.abs().max().item())
    assert (got.argmax(1) == expected.argmax(1)).float().mean().item() > 0.97


def test_export_script_on_a_model_folder(tmp_path, capsys, script_module):
    export_script = script_module("export")

    model = tiny_model("pspnet")
    model.save_pretrained(tmp_path / "model")
    (tmp_path / "model" / "metrics.json").write_text(json.dumps({"mIoU": 12.5}))
    argv = [str(tmp_path / "model"), str(tmp_path / "exported"), "--check-size", "50", "75"]
    result = export_script.main(argv)
    out = capsys.readouterr().out
    assert "max |onnxruntime - PyTorch|" in out and result.check_shape == (1, 3, 50, 75)
    assert result.max_abs_diff <= 1e-4
    assert json.loads((tmp_path / "exported" / "metrics.json").read_text()) == {"mIoU": 12.5}
    written = {p.name for p in (tmp_path / "exported").iterdir()}
    assert written == {"config.json", "model.onnx", "metrics.json"}


def test_export_script_errors_name_the_problem(tmp_path, script_module):
    export_script = script_module("export")

    with pytest.raises(FileNotFoundError, match="no such model folder"):
        export_script.main([str(tmp_path / "missing"), str(tmp_path / "out")])
    config = tmp_path / "cfg.yaml"
    config.write_text("model: {type: Segmentor}\n")
    with pytest.raises(ValueError, match="--checkpoint"):
        export_script.main([str(config), str(tmp_path / "out")])
