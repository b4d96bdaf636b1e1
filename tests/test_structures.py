"""PixelData and SegDataSample: shapes, metainfo access, devices, pickling."""

import copy
import pickle

import pytest
import torch

from segaccel.structures import PixelData, SegDataSample


def make_sample() -> SegDataSample:
    label = torch.arange(12, dtype=torch.int64).reshape(3, 4)
    return SegDataSample(
        {"img_id": "a_001", "ori_shape": (3, 4), "img_shape": (6, 8), "flip": False},
        gt_sem_seg=PixelData(label),
    )


def test_pixel_data_adds_a_channel_to_2d():
    pixels = PixelData(torch.zeros(3, 5, dtype=torch.int64))
    assert pixels.data.shape == (1, 3, 5)
    assert pixels.shape == (3, 5)


def test_pixel_data_keeps_3d():
    logits = PixelData(torch.randn(19, 3, 5), source="decode_head")
    assert logits.data.shape == (19, 3, 5)
    assert logits.shape == (3, 5)
    assert logits.metainfo == {"source": "decode_head"}


@pytest.mark.parametrize("shape", [(5,), (2, 1, 3, 5)])
def test_pixel_data_rejects_1d_and_4d(shape):
    with pytest.raises(ValueError, match=rf"2-D \(H, W\) or 3-D \(C, H, W\), got a {len(shape)}-D tensor"):
        PixelData(torch.zeros(shape))


def test_pixel_data_rejects_arrays():
    with pytest.raises(TypeError, match="torch.Tensor, got ndarray"):
        PixelData(torch.zeros(2, 2).numpy())


def test_metainfo_reads_as_attributes():
    sample = make_sample()
    assert sample.ori_shape == (3, 4)
    assert sample.img_id == "a_001"
    assert sample.gt_sem_seg.shape == (3, 4)
    assert "flip" in sample and "gt_sem_seg" in sample and "pred_sem_seg" not in sample
    assert sample.get("pad_shape", (0, 0)) == (0, 0)
    assert not hasattr(sample, "pad_shape")
    assert list(sample.keys()) == ["gt_sem_seg"]

    sample.set_metainfo({"pad_shape": (8, 8)})
    sample.img_shape = (7, 9)  # an existing metainfo key may be assigned as an attribute
    assert sample.metainfo["pad_shape"] == (8, 8) and sample.metainfo["img_shape"] == (7, 9)


def test_data_fields_are_pixel_data_and_deletable():
    sample = make_sample()
    sample.pred_sem_seg = PixelData(torch.ones(3, 4, dtype=torch.int64))
    assert list(sample.keys()) == ["gt_sem_seg", "pred_sem_seg"]
    with pytest.raises(TypeError, match=r"pred_sem_seg must be a PixelData, got Tensor"):
        sample.pred_sem_seg = torch.ones(3, 4)
    del sample.pred_sem_seg
    assert "pred_sem_seg" not in sample


def test_unknown_field_fails_clearly():
    sample = make_sample()
    with pytest.raises(AttributeError, match="no field 'gt_seg'.*set_metainfo"):
        sample.gt_seg = PixelData(torch.zeros(3, 4))
    with pytest.raises(AttributeError, match="no field or metainfo 'scale_factor'"):
        _ = sample.scale_factor


def test_to_and_cpu_return_moved_copies():
    sample = make_sample()
    on_meta = sample.to("meta")
    assert on_meta.gt_sem_seg.data.device.type == "meta"
    assert sample.gt_sem_seg.data.device.type == "cpu"  # the original stays where it was
    assert on_meta.metainfo == sample.metainfo and on_meta.metainfo is not sample.metainfo

    on_cpu = sample.cpu()
    assert on_cpu is not sample
    assert torch.equal(on_cpu.gt_sem_seg.data, sample.gt_sem_seg.data)
    assert on_cpu.gt_sem_seg.data.dtype == torch.int64


def test_pickle_and_deepcopy_round_trip():
    sample = make_sample()
    sample.seg_logits = PixelData(torch.randn(2, 3, 4))
    for copied in (pickle.loads(pickle.dumps(sample)), copy.deepcopy(sample)):
        assert copied.metainfo == sample.metainfo
        assert list(copied.keys()) == ["gt_sem_seg", "seg_logits"]
        assert torch.equal(copied.gt_sem_seg.data, sample.gt_sem_seg.data)
        assert torch.equal(copied.seg_logits.data, sample.seg_logits.data)
        copied.set_metainfo({"img_id": "other"})
        assert sample.img_id == "a_001"
