"""`segaccel.deploy`: an exported folder segments as the PyTorch model does through `inference_model`
(whole and slide, padded batches, tiny images, the test-time resize), with bounded slide memory, and
without importing the model code."""

import contextlib
import json
import subprocess
import sys

import pytest
import torch
from export_testing import random_image

from segaccel.data.collate import seg_collate
from segaccel.data.transforms import PackSegInputs, init_results
from segaccel.deploy import ExportedSegmentor, is_exported_folder
from segaccel.deploy import inference as deploy_inference
from segaccel.inference import inference_model
from segaccel.models.inference_modes import slide_windows
from segaccel.registry import ConfigError

SLIDE = {"mode": "slide", "crop_size": [48, 64], "stride": [32, 40]}
IMAGES = [random_image(70, 99, 1), random_image(70, 99, 2), random_image(45, 130, 3), random_image(20, 17, 4)]


@contextlib.contextmanager
def settings(*models, **attrs):
    """Set attributes (test_cfg, test_pipeline) on every model for the block, then restore them."""
    saved = [{k: getattr(m, k) for k in attrs} for m in models]
    try:
        for m in models:
            for k, v in attrs.items():
                setattr(m, k, v)
        yield
    finally:
        for m, old in zip(models, saved):
            for k, v in old.items():
                setattr(m, k, v)


def assert_same_results(pytorch_model, exported, images, batch_size=8):
    expected = inference_model(pytorch_model, images, batch_size=batch_size)
    got = inference_model(exported, images, batch_size=batch_size)
    for i, (e, g) in enumerate(zip(expected, got)):
        assert g.pred_sem_seg.shape == e.pred_sem_seg.shape == images[i].shape[:2]
        assert (g.seg_logits.data - e.seg_logits.data).abs().max().item() <= 1e-4, i
        assert torch.equal(g.pred_sem_seg.data, e.pred_sem_seg.data), i
    assert any(len(torch.unique(e.pred_sem_seg.data)) > 1 for e in expected)


@pytest.mark.parametrize("test_cfg", [{"mode": "whole"}, SLIDE], ids=["whole", "slide"])
def test_exported_fcn_segments_like_pytorch(fcn_model, fcn_onnx, test_cfg):
    exported = ExportedSegmentor(fcn_onnx)
    with settings(fcn_model, exported, test_cfg=test_cfg):
        assert_same_results(fcn_model, exported, IMAGES)  # incl. a 20x17 image: padded as PyTorch pads


@pytest.mark.parametrize("test_cfg", [{"mode": "whole"}, SLIDE], ids=["whole", "slide"])
def test_exported_segformer_with_size_divisor_padding(segformer_model, segformer_onnx, test_cfg):
    exported = ExportedSegmentor(segformer_onnx)
    assert exported.data_preprocessor.test_size_divisor == 32
    with settings(segformer_model, exported, test_cfg=test_cfg):
        assert_same_results(segformer_model, exported, IMAGES[:3])


def test_test_time_resize_and_back(fcn_model, fcn_onnx):
    exported = ExportedSegmentor(fcn_onnx)
    resize = [{"type": "Resize", "scale": [96, 64], "keep_ratio": True}]
    with settings(fcn_model, exported, test_pipeline=resize):
        assert_same_results(fcn_model, exported, IMAGES[:3])


def test_exported_program_folder_segments_like_pytorch(segformer_model, segformer_pt2):
    exported = ExportedSegmentor(segformer_pt2)
    assert exported.backend.name == "torch.export"
    with settings(segformer_model, exported, test_cfg=SLIDE):
        assert_same_results(segformer_model, exported, IMAGES[:3])


def test_a_mixed_size_batch_is_padded_as_pytorch_pads_it(fcn_model, fcn_onnx):
    """The test loop's path: collate → data_preprocessor → predict, two sizes in one batch."""
    exported = ExportedSegmentor(fcn_onnx)
    packed = [PackSegInputs()(init_results(im, img_id=str(i))) for i, im in enumerate(IMAGES[1:3])]
    outputs = []
    for model in (fcn_model, exported):
        data = model.data_preprocessor(seg_collate(packed), training=False)
        with torch.no_grad():
            outputs.append(model.predict(data["inputs"], data["data_samples"]))
    exported_batch = exported.data_preprocessor(seg_collate(packed))["inputs"]
    assert exported_batch.dtype == torch.uint8 and exported_batch.shape == (2, 3, 70, 130)
    for e, g in zip(*outputs):
        assert torch.equal(g.pred_sem_seg.data, e.pred_sem_seg.data)
        assert (g.seg_logits.data - e.seg_logits.data).abs().max().item() <= 1e-4


def test_slide_memory_is_bounded_by_the_crops(fcn_onnx):
    exported = ExportedSegmentor(fcn_onnx, crops_per_batch=3)
    calls = []
    real = exported.backend

    def spy(pixels, mask):
        calls.append(tuple(pixels.shape))
        return real(pixels, mask)

    exported.backend = spy
    exported.test_cfg = {"mode": "slide", "crop_size": [32, 32], "stride": [24, 24]}
    image = random_image(200, 260, 9)
    inference_model(exported, image)
    windows = slide_windows((200, 260), (32, 32), (24, 24))
    assert sum(shape[0] for shape in calls) == len(windows) == 8 * 11
    assert all(shape[0] <= 3 and shape[2:] == (32, 32) for shape in calls)


@pytest.mark.parametrize("img_hw", [(1, 1), (20, 17), (48, 64), (100, 63), (513, 1025)])
@pytest.mark.parametrize("crop_stride", [((48, 64), (32, 40)), ((512, 512), (341, 341)), ((7, 5), (7, 5))])
def test_slide_windows_are_the_models_windows(img_hw, crop_stride):
    crop, stride = crop_stride
    assert deploy_inference.slide_windows(img_hw, crop, stride) == slide_windows(img_hw, crop, stride)


def test_the_runtime_never_imports_the_model_code(fcn_onnx):
    code = (
        "import sys, numpy as np\n"
        "from segaccel.deploy import ExportedSegmentor\n"
        "from segaccel.inference import inference_model\n"
        f"m = ExportedSegmentor({str(fcn_onnx)!r})\n"
        "s = inference_model(m, np.zeros((40, 50, 3), np.uint8))\n"
        "print(s.pred_sem_seg.shape, sorted(k for k in sys.modules if k.startswith('segaccel.models')))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "(40, 50) []"


def test_folders_and_config_errors(fcn_onnx, tmp_path):
    assert is_exported_folder(fcn_onnx) and not is_exported_folder(tmp_path)
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "model.onnx").write_bytes((fcn_onnx / "model.onnx").read_bytes())
    with pytest.raises(ConfigError, match="no config.json"):
        ExportedSegmentor(bad)
    (bad / "config.json").write_text("{not json")
    with pytest.raises(ConfigError, match=r"bad/config.json: not valid JSON"):
        ExportedSegmentor(bad)
    config = json.loads((fcn_onnx / "config.json").read_text())
    for change, message in [
        ({"export": None}, "no `export` object"),
        ({"export": {**config["export"], "format": "tflite"}}, "export.format must be one of onnx"),
        ({"num_classes": "five"}, "num_classes must be a positive int"),
        ({"test_cfg": {"mode": "slide", "crop_size": [48, 64]}}, "test_cfg: mode 'slide' needs stride"),
        ({"format_version": 99}, "format_version 99 is newer"),
    ]:
        (bad / "config.json").write_text(json.dumps({**config, **change}))
        with pytest.raises(ConfigError, match=message):
            ExportedSegmentor(bad)
    exported = ExportedSegmentor(fcn_onnx)
    with pytest.raises(ConfigError, match="mode must be 'whole' or 'slide'"):
        exported.test_cfg = {"mode": "tiles"}
    with pytest.raises(ValueError, match="uint8"):
        exported.predict(torch.zeros((1, 3, 32, 32)))
    with pytest.raises(FileNotFoundError, match="no exported model folder"):
        ExportedSegmentor.from_pretrained("./not-there")
