"""SegDataPreProcessor: device, float, normalisation and padding, with hand-computed values."""

from __future__ import annotations

import pytest
import torch

from segaccel.models.data_preprocessor import SegDataPreProcessor
from segaccel.registry import ConfigError
from segaccel.structures import PixelData, SegDataSample


def _sample(h: int, w: int, label: int | None = None, **meta) -> SegDataSample:
    sample = SegDataSample(metainfo={"img_id": f"{h}x{w}", "ori_shape": (h, w), "img_shape": (h, w), **meta})
    if label is not None:
        sample.gt_sem_seg = PixelData(torch.full((1, h, w), label, dtype=torch.int64))
    return sample


def _image(h: int, w: int, values=(12, 0, 255)) -> torch.Tensor:
    return torch.stack([torch.full((h, w), v, dtype=torch.uint8) for v in values])


def test_normalises_per_channel_on_the_0_255_scale():
    pre = SegDataPreProcessor(mean=(10, 20, 30), std=(2, 4, 5))
    img = _image(2, 3)
    out = pre({"inputs": [img], "data_samples": [_sample(2, 3)]})
    x = out["inputs"]
    assert x.shape == (1, 3, 2, 3) and x.dtype == torch.float32 and x.device.type == "cpu"
    # (12 - 10) / 2 = 1, (0 - 20) / 4 = -5, (255 - 30) / 5 = 45
    assert torch.equal(x[0, 0], torch.full((2, 3), 1.0))
    assert torch.equal(x[0, 1], torch.full((2, 3), -5.0))
    assert torch.equal(x[0, 2], torch.full((2, 3), 45.0))
    assert img.dtype == torch.uint8 and int(img[2, 0, 0]) == 255  # the input is left alone


def test_default_mean_std_are_imagenet_rgb():
    pre = SegDataPreProcessor()
    x = pre({"inputs": [_image(1, 1, values=(124, 116, 0))], "data_samples": None})["inputs"]
    expected = torch.tensor([(124 - 123.675) / 58.395, (116 - 116.28) / 57.12, (0 - 103.53) / 57.375])
    assert torch.allclose(x[0, :, 0, 0], expected, atol=1e-6)


def test_mean_and_std_are_buffers_outside_the_state_dict():
    pre = SegDataPreProcessor(mean=(1, 2, 3), std=(4, 5, 6))
    assert dict(pre.named_buffers()).keys() == {"mean", "std"}
    assert pre.state_dict() == {}
    assert pre.to(torch.float64).mean.dtype == torch.float64  # they follow the module


def test_no_normalisation_without_mean_and_std():
    pre = SegDataPreProcessor(mean=None, std=None)
    x = pre({"inputs": [_image(2, 2)]})["inputs"]
    assert torch.equal(x[0, :, 0, 0], torch.tensor([12.0, 0.0, 255.0]))


def test_mixed_size_batch_pads_to_a_multiple_of_size_divisor_in_training():
    pre = SegDataPreProcessor(mean=(0, 0, 0), std=(1, 1, 1), size_divisor=4, pad_val=-1)
    inputs = [_image(5, 7), _image(6, 3)]
    samples = [_sample(5, 7, label=1), _sample(6, 3, label=2)]
    out = pre({"inputs": inputs, "data_samples": samples}, training=True)
    x, (a, b) = out["inputs"], out["data_samples"]
    assert x.shape == (2, 3, 8, 8)  # largest (6, 7) rounded up to multiples of 4
    assert torch.equal(x[0, :, :5, :7], inputs[0].float())
    assert (x[0, :, 5:, :] == -1).all() and (x[0, :, :, 7:] == -1).all()
    assert torch.equal(x[1, :, :6, :3], inputs[1].float())
    assert (x[1, :, 6:, :] == -1).all() and (x[1, :, :, 3:] == -1).all()
    assert a.padding_size == (0, 1, 0, 3) and b.padding_size == (0, 5, 0, 2)  # (left, right, top, bottom)
    assert a.pad_shape == b.pad_shape == (8, 8)
    assert a.img_shape == (5, 7) and b.img_shape == (6, 3)
    gt_a, gt_b = a.gt_sem_seg.data, b.gt_sem_seg.data
    assert gt_a.shape == gt_b.shape == (1, 8, 8) and gt_a.dtype == torch.int64
    assert (gt_a[:, :5, :7] == 1).all() and (gt_a == 255).sum() == 64 - 35
    assert (gt_b[:, :6, :3] == 2).all() and (gt_b == 255).sum() == 64 - 18
    # the caller's samples are untouched
    assert "pad_shape" not in samples[0] and samples[0].gt_sem_seg.shape == (5, 7)


def test_eval_pads_images_only_as_test_cfg_asks_and_leaves_labels_at_their_size():
    # MMSegmentation: `size`/`size_divisor` pad training batches only; at test time, `test_cfg` decides
    pre = SegDataPreProcessor(size_divisor=4)
    out = pre({"inputs": [_image(5, 7)], "data_samples": [_sample(5, 7, 1)]})
    assert out["inputs"].shape == (1, 3, 5, 7) and out["data_samples"][0].padding_size == (0, 0, 0, 0)
    # a mixed-size test batch (MMSegmentation refuses it) is padded to its largest image only
    out = pre({"inputs": [_image(5, 7), _image(6, 3)], "data_samples": [_sample(5, 7, 1), _sample(6, 3, 2)]})
    assert out["inputs"].shape == (2, 3, 6, 7)

    pre = SegDataPreProcessor(size=(16, 16), test_cfg={"size_divisor": 4})
    out = pre({"inputs": [_image(5, 7), _image(6, 3)], "data_samples": [_sample(5, 7, 1), _sample(6, 3, 2)]})
    a, b = out["data_samples"]
    assert out["inputs"].shape == (2, 3, 8, 8)
    assert a.gt_sem_seg.shape == (5, 7) and b.gt_sem_seg.shape == (6, 3)
    assert a.padding_size == (0, 1, 0, 3) and a.pad_shape == (8, 8) and a.img_shape == (5, 7)
    fixed = SegDataPreProcessor(test_cfg={"size": [6, 9]})
    assert fixed({"inputs": [_image(5, 7)]})["inputs"].shape == (1, 3, 6, 9)
    assert fixed.padded_size([(5, 7)], training=True) == (5, 7)  # no training padding configured
    with pytest.raises(ConfigError, match="test_cfg: expected"):
        SegDataPreProcessor(test_cfg={"size_divisor": 4, "pad_val": 1})


def test_channel_order_bgr_reverses_channels_before_normalising():
    # an MMSegmentation model trained without bgr_to_rgb sees BGR images; mean/std are in that order
    pre = SegDataPreProcessor(mean=(1, 2, 3), std=(1, 1, 1), channel_order="bgr")
    x = pre({"inputs": [_image(1, 1, values=(12, 0, 255))]})["inputs"]
    assert x[0, :, 0, 0].tolist() == [255 - 1, 0 - 2, 12 - 3]
    with pytest.raises(ConfigError, match="channel_order"):
        SegDataPreProcessor(channel_order="gbr")


def test_pads_to_fixed_size_or_to_the_largest_image():
    fixed = SegDataPreProcessor(size=(6, 9))
    out = fixed({"inputs": [_image(5, 7)], "data_samples": [_sample(5, 7, 0)]}, training=True)
    assert out["inputs"].shape == (1, 3, 6, 9)
    assert out["data_samples"][0].padding_size == (0, 2, 0, 1)
    assert out["data_samples"][0].gt_sem_seg.shape == (6, 9)

    largest = SegDataPreProcessor()
    out = largest({"inputs": [_image(5, 7), _image(6, 3)], "data_samples": [_sample(5, 7), _sample(6, 3)]})
    assert out["inputs"].shape == (2, 3, 6, 7)
    assert [s.padding_size for s in out["data_samples"]] == [(0, 0, 0, 1), (0, 4, 0, 0)]

    # an already stacked (N, C, H, W) batch is accepted too
    assert largest({"inputs": torch.zeros(2, 3, 4, 5, dtype=torch.uint8)})["inputs"].shape == (2, 3, 4, 5)


def test_bad_input_is_reported_clearly():
    with pytest.raises(ConfigError, match="not both"):
        SegDataPreProcessor(size=(8, 8), size_divisor=4)
    with pytest.raises(ConfigError, match="both `mean` and `std`"):
        SegDataPreProcessor(mean=(1, 2, 3), std=None)
    pre = SegDataPreProcessor(size=(4, 4))
    with pytest.raises(ValueError, match=r"inputs\[0\].*larger than size"):
        pre({"inputs": [_image(5, 4)], "data_samples": [_sample(5, 4, 0)]}, training=True)
    with pytest.raises(ValueError, match=r"inputs\[0\]: 1 channels but mean/std have 3"):
        pre({"inputs": [torch.zeros(1, 2, 2, dtype=torch.uint8)]})
    with pytest.raises(ValueError, match=r"data_samples\[0\].*needs gt_sem_seg"):
        pre({"inputs": [_image(2, 2)], "data_samples": [_sample(2, 2)]}, training=True)
    with pytest.raises(ValueError, match=r"gt_sem_seg is \(3, 2\) but the image is \(2, 2\)"):
        bad = _sample(2, 2)
        bad.gt_sem_seg = PixelData(torch.zeros(1, 3, 2, dtype=torch.int64))
        pre({"inputs": [_image(2, 2)], "data_samples": [bad]}, training=True)


def test_everything_ends_on_the_modules_device():
    """The "meta" device stands in for a GPU: images, labels and buffers all follow the module."""
    pre = SegDataPreProcessor(size_divisor=4).to("meta")
    out = pre({"inputs": [_image(5, 7), _image(6, 3)], "data_samples": [_sample(5, 7, 1), _sample(6, 3, 2)]},
              training=True)
    assert out["inputs"].device.type == "meta" and out["inputs"].dtype == torch.float32
    assert out["inputs"].shape == (2, 3, 8, 8)
    assert all(s.gt_sem_seg.data.device.type == "meta" for s in out["data_samples"])
    assert out["data_samples"][1].gt_sem_seg.data.shape == (1, 8, 8)
