"""inference_model: PIL images, arrays, paths and lists, segmented at their original size."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from segaccel.inference import inference_model
from segaccel.models import Segmentor
from segaccel.structures import SegDataSample

# the smallest real MiT; spatial reduction 2 in the first two stages, so tiny images work
TINY_MIT = dict(
    type="MixVisionTransformer",
    embed_dims=8,
    num_layers=(1, 1, 1, 1),
    num_heads=(1, 1, 1, 1),
    sr_ratios=(2, 2, 1, 1),
)


@pytest.fixture(scope="module")
def model() -> Segmentor:
    torch.manual_seed(0)
    return Segmentor(
        backbone=TINY_MIT,
        decode_head=dict(type="SegformerHead", in_channels=[8, 8, 8, 8], channels=8, num_classes=3),
        test_pipeline=[dict(type="Resize", scale=(32, 24), keep_ratio=True)],
    )


def _rgb(h: int, w: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def _check(sample: SegDataSample, hw: tuple[int, int]) -> None:
    assert isinstance(sample, SegDataSample)
    assert sample.pred_sem_seg.data.shape == (1, *hw) and sample.pred_sem_seg.data.dtype == torch.int64
    assert sample.seg_logits.data.shape == (3, *hw) and sample.pred_sem_seg.data.device.type == "cpu"
    assert sample.ori_shape == hw
    assert torch.equal(sample.pred_sem_seg.data, sample.seg_logits.data.argmax(0, keepdim=True))


def test_pil_image_gives_one_sample_at_its_original_size(model):
    model.train()
    sample = inference_model(model, Image.fromarray(_rgb(30, 50)))
    _check(sample, (30, 50))
    # the test pipeline ran: Resize(scale=(w=32, h=24), keep_ratio) → factor min(32/50, 24/30) = 0.64
    assert sample.img_shape == (19, 32) and sample.scale_factor == (32 / 50, 19 / 30)
    assert model.training  # the caller's mode is restored


def test_rgb_and_grayscale_arrays(model):
    rgb = _rgb(21, 17)
    sample = inference_model(model, rgb)
    _check(sample, (21, 17))
    gray = rgb[..., 0]
    from_gray = inference_model(model, gray)
    from_rgb_copy = inference_model(model, np.repeat(gray[..., None], 3, axis=2))
    _check(from_gray, (21, 17))
    assert torch.equal(from_gray.seg_logits.data, from_rgb_copy.seg_logits.data)
    # the same as a PIL image of the same pixels
    assert torch.equal(sample.seg_logits.data, inference_model(model, Image.fromarray(rgb)).seg_logits.data)


def test_paths(model, tmp_path):
    path = tmp_path / "photo.png"
    Image.fromarray(_rgb(26, 40)).save(path)
    by_str = inference_model(model, str(path))
    by_path = inference_model(model, path)
    _check(by_str, (26, 40))
    assert by_str.img_path == str(path) and by_str.img_id == "photo"
    assert torch.equal(by_str.seg_logits.data, by_path.seg_logits.data)


def test_a_list_gives_a_list_in_order_independent_of_batching(model, tmp_path):
    path = tmp_path / "a.png"
    Image.fromarray(_rgb(26, 40, seed=1)).save(path)
    images = [_rgb(30, 50, seed=2), Image.fromarray(_rgb(30, 50, seed=3)), path, _rgb(9, 33, seed=4)[..., 0]]
    out = inference_model(model, images, batch_size=3)
    assert isinstance(out, list) and len(out) == 4
    for sample, hw in zip(out, [(30, 50), (30, 50), (26, 40), (9, 33)]):
        _check(sample, hw)
    # same-size images were batched together; each result matches segmenting the image alone
    for image, sample in zip(images, out):
        alone = inference_model(model, image)
        assert torch.allclose(alone.seg_logits.data, sample.seg_logits.data, atol=1e-5)
    assert inference_model(model, [_rgb(8, 8)], batch_size=1)[0].pred_sem_seg.shape == (8, 8)


def test_without_a_test_pipeline_images_go_in_at_their_own_size():
    torch.manual_seed(0)
    plain = Segmentor(
        backbone=TINY_MIT,
        decode_head=dict(type="SegformerHead", in_channels=[8, 8, 8, 8], channels=8, num_classes=3),
    )
    sample = inference_model(plain, _rgb(24, 40))
    _check(sample, (24, 40))
    assert sample.img_shape == (24, 40)
    plain.test_pipeline = [dict(type="Resize", scale=(20, 12), keep_ratio=False), dict(type="PackSegInputs")]
    sample = inference_model(plain, _rgb(24, 40))  # an explicit PackSegInputs is not doubled
    _check(sample, (24, 40))
    assert sample.img_shape == (12, 20)


def test_bad_inputs_are_reported(model, tmp_path):
    with pytest.raises(TypeError, match=r"images\[0\]: a numpy image must be uint8"):
        inference_model(model, np.zeros((4, 4, 3), dtype=np.float32))
    with pytest.raises(ValueError, match=r"images\[1\]: expected an \(H, W, 3\) RGB"):
        inference_model(model, [_rgb(4, 4), np.zeros((4, 4, 4), dtype=np.uint8)])
    with pytest.raises(FileNotFoundError, match="no image file"):
        inference_model(model, tmp_path / "missing.png")
    with pytest.raises(TypeError, match=r"images\[0\]: expected a PIL image, a numpy array or a file path"):
        inference_model(model, 42)
    model.test_pipeline = [dict(type="RandomFlip", prob=0.5)]
    try:
        with pytest.raises(ValueError, match="random transform"):
            inference_model(model, _rgb(8, 8))
    finally:
        model.test_pipeline = [dict(type="Resize", scale=(32, 24), keep_ratio=True)]


def _count_backbone_inputs(model: Segmentor) -> tuple[list, object]:
    shapes: list[tuple[int, ...]] = []
    handle = model.backbone.register_forward_hook(
        lambda module, args, out: shapes.append(tuple(args[0].shape))
    )
    return shapes, handle


def test_same_size_images_are_batched_up_to_batch_size(model):
    shapes, handle = _count_backbone_inputs(model)
    try:
        inference_model(model, [_rgb(30, 50, seed=i) for i in range(5)], batch_size=2)
        assert [s[0] for s in shapes] == [2, 2, 1]
        shapes.clear()
        inference_model(model, [_rgb(30, 50), _rgb(30, 50, seed=1), _rgb(40, 40), _rgb(30, 50)], batch_size=8)
        assert [s[0] for s in shapes] == [2, 1, 1]  # a size change closes the batch
    finally:
        handle.remove()


def test_slide_inference_follows_the_models_test_cfg(model):
    whole = inference_model(model, _rgb(30, 50))
    model.test_cfg = {"mode": "slide", "crop_size": (16, 16), "stride": (8, 8)}
    shapes, handle = _count_backbone_inputs(model)
    try:
        slide = inference_model(model, _rgb(30, 50))
    finally:
        handle.remove()
        model.test_cfg = {"mode": "whole"}
    # the test pipeline gives (19, 32): 2 x 3 windows of 16 x 16, every one through the backbone
    assert {s[-2:] for s in shapes} == {(16, 16)} and sum(s[0] for s in shapes) == 6
    _check(slide, (30, 50))
    assert not torch.equal(slide.seg_logits.data, whole.seg_logits.data)


def _load_script(name: str):
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "scripts" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_infer_script_on_a_folder_writes_masks_and_overlays(model, tmp_path, capsys, monkeypatch):
    import segaccel.engine.logging as logs

    model.save_pretrained(tmp_path / "model")
    monkeypatch.setattr(logs, "on_terminal", lambda stream=None: True)  # the bar is drawn on a terminal
    images = tmp_path / "images"
    images.mkdir()
    sizes = {"a": (30, 50), "b": (30, 50), "c": (41, 23)}
    for i, (name, (h, w)) in enumerate(sizes.items()):
        Image.fromarray(_rgb(h, w, seed=i)).save(images / f"{name}.png")
    (images / "notes.txt").write_text("not an image")
    extra = tmp_path / "extra.jpg"
    Image.fromarray(_rgb(20, 28, seed=9)).save(extra, quality=95)

    infer = _load_script("infer")
    written = infer.main(
        [
            str(images),
            str(extra),
            "--model",
            str(tmp_path / "model"),
            "--out-dir",
            str(tmp_path / "out"),
            "--batch-size",
            "2",
            "--device",
            "cpu",
        ]
    )
    err = capsys.readouterr().err
    assert "segmenting" in err and "4/4" in err  # the progress bar
    monkeypatch.setattr(logs, "on_terminal", lambda stream=None: False)  # redirected: no bar, no redraws
    infer.main([str(extra), "--model", str(tmp_path / "model"), "--out-dir", str(tmp_path / "quiet")])
    quiet = capsys.readouterr()
    assert "\r" not in quiet.err and "segmenting" not in quiet.err and "wrote 1 mask to" in quiet.out
    assert sorted(p.name for p in written) == ["a.png", "b.png", "c.png", "extra.png"]
    loaded = Segmentor.from_pretrained(tmp_path / "model")
    for name, (h, w) in {**sizes, "extra": (20, 28)}.items():
        source = images / f"{name}.png" if name != "extra" else extra
        mask = np.asarray(Image.open(tmp_path / "out" / "masks" / f"{name}.png"))
        expected = inference_model(loaded, source).pred_sem_seg.data[0].numpy()
        assert mask.shape == (h, w) and mask.dtype == np.uint8 and np.array_equal(mask, expected)
        overlay = Image.open(tmp_path / "out" / "overlays" / f"{name}.png")
        assert overlay.width >= w and overlay.height > h  # the image, then the legend under it
        top = np.asarray(overlay.convert("RGB"))[:h, :w]
        assert not np.array_equal(top, np.asarray(Image.open(source).convert("RGB")))  # colours blended in
    with pytest.raises(SystemExit, match="neither an image file nor a folder"):
        infer.main(
            [str(tmp_path / "nope.png"), "--model", str(tmp_path / "model"), "--out-dir", str(tmp_path)]
        )
