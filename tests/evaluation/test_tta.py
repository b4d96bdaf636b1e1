"""SegTTAModel: scales and flips, probabilities averaged at each image's original size."""

import pytest
import torch
import torch.nn.functional as F
from evaluation_helpers import pointwise_segmentor, tiny_segformer

from segaccel.models import SegTTAModel
from segaccel.registry import MODELS, ConfigError
from segaccel.structures import SegDataSample


def batch_of(model, images):
    """Preprocess uint8 (3, h, w) images as the loops do (padding to the batch's size)."""
    samples = [
        SegDataSample({"ori_shape": tuple(img.shape[-2:]), "img_id": str(i)}) for i, img in enumerate(images)
    ]
    return model.data_preprocessor({"inputs": images, "data_samples": samples})


def images_of(*sizes, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(0, 256, (3, h, w), generator=g, dtype=torch.uint8) for h, w in sizes]


def probs_of(model, inputs, **meta):
    hw = tuple(inputs.shape[-2:])
    meta = {"ori_shape": hw, "img_shape": hw, "padding_size": (0, 0, 0, 0), **meta}
    out = model.predict(inputs, [SegDataSample(dict(meta))])[0]
    return out.seg_logits.data.softmax(dim=0)


def test_one_scale_without_flip_is_the_model_itself():
    pointwise_model = pointwise_segmentor()
    data = batch_of(pointwise_model, images_of((24, 40), (16, 32)))
    tta = SegTTAModel(pointwise_model)
    expected = pointwise_model.predict(
        data["inputs"], [s.clone() if hasattr(s, "clone") else s for s in data["data_samples"]]
    )
    expected = [(s.seg_logits.data.softmax(0), s.pred_sem_seg.data) for s in expected]
    data = batch_of(pointwise_model, images_of((24, 40), (16, 32)))
    got = tta.predict(data["inputs"], data["data_samples"])
    for sample, (probs, pred) in zip(got, expected):
        torch.testing.assert_close(sample.seg_logits.data, probs)
        assert torch.equal(sample.pred_sem_seg.data, pred)


def test_flip_and_scales_average_probabilities_at_the_original_size():
    pointwise_model = pointwise_segmentor()
    (image,) = images_of((24, 40))
    data = batch_of(pointwise_model, [image])
    x = data["inputs"]  # (1, 3, 24, 40): 24 and 40 are multiples of 8, no padding
    assert x.shape == (1, 3, 24, 40)
    tta = SegTTAModel(pointwise_model, scales=(0.5, 1.5), flip=True)
    out = tta.predict(x, data["data_samples"])[0]

    expected = []
    for scale in (0.5, 1.5):
        size = (round(24 * scale), round(40 * scale))
        scaled = F.interpolate(x, size=size, mode="bilinear", align_corners=False)
        meta = {"ori_shape": (24, 40)}
        expected.append(probs_of(pointwise_model, scaled, **meta))
        flipped = probs_of(pointwise_model, scaled.flip(-1), **meta).flip(-1)  # flip, predict, flip back
        expected.append(flipped)
    expected = torch.stack(expected).mean(0)
    assert out.seg_logits.data.shape == (3, 24, 40)
    torch.testing.assert_close(out.seg_logits.data, expected, atol=1e-5, rtol=1e-5)
    assert torch.equal(out.pred_sem_seg.data, expected.argmax(0, keepdim=True))
    torch.testing.assert_close(out.seg_logits.data.sum(0), torch.ones(24, 40))  # still probabilities


def test_mixed_size_batch_gives_each_image_its_own_result():
    pointwise_model = pointwise_segmentor()
    """Scales apply to each image's unpadded part; with a pointwise model the batch changes nothing."""
    images = images_of((20, 28), (32, 17), (9, 30), seed=3)
    tta = SegTTAModel(pointwise_model, scales=(0.75, 1.25), flip=True)
    data = batch_of(pointwise_model, images)
    assert data["inputs"].shape == (3, 3, 32, 32)
    batched = tta.predict(data["inputs"], data["data_samples"])
    for image, sample in zip(images, batched):
        alone = batch_of(pointwise_model, [image])
        single = tta.predict(alone["inputs"], alone["data_samples"])[0]
        assert sample.pred_sem_seg.shape == tuple(image.shape[-2:])
        torch.testing.assert_close(sample.seg_logits.data, single.seg_logits.data, atol=2e-5, rtol=1e-5)
        agree = (sample.pred_sem_seg.data == single.pred_sem_seg.data).float().mean()
        assert agree == 1.0


def test_attention_model_and_vertical_flip_run_and_keep_shapes():
    model = tiny_segformer()
    tta = SegTTAModel(model, scales=(0.5, 1.0), flip=True, flip_direction="vertical")
    data = batch_of(model, images_of((40, 56), (64, 30)))
    out = tta(data["inputs"], data["data_samples"], mode="predict")
    assert [s.pred_sem_seg.shape for s in out] == [(40, 56), (64, 30)]
    assert tta.num_augmentations == 4
    assert tta.num_classes == 4 and tta.data_preprocessor is model.data_preprocessor


def test_built_from_config_and_bad_arguments():
    model_cfg = tiny_segformer().config
    tta = MODELS.build({"type": "SegTTAModel", "module": model_cfg, "scales": [1.0, 2.0], "flip": True})
    assert isinstance(tta, SegTTAModel) and tta.scales == [1.0, 2.0]
    with pytest.raises(ConfigError, match="scales"):
        SegTTAModel(tiny_segformer(), scales=(0.0,))
    with pytest.raises(ConfigError, match="flip_direction"):
        SegTTAModel(tiny_segformer(), flip_direction="sideways")
    with pytest.raises(ValueError, match="predict"):
        SegTTAModel(tiny_segformer())(torch.zeros(1, 3, 8, 8), mode="loss")
