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
    type="MixVisionTransformer", embed_dims=8, num_layers=(1, 1, 1, 1), num_heads=(1, 1, 1, 1),
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
