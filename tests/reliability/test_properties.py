"""Property tests (hypothesis): random image sizes, aspect ratios, label values and transform settings.

Through the whole training pipeline (dataset → transforms → PackSegInputs → collate → preprocessor) the
image and label shapes agree and the labels stay in `[0, num_classes)` or 255; through `predict`
(whole and slide inference, a test-time Resize) the prediction has the image's original size.
Kept small (25 examples each, a tiny model) so the file runs in a few seconds.
"""

import functools
from pathlib import Path

import numpy as np
import torch
from engine_helpers import TINY_CONFIG
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import segaccel.models  # noqa: F401  (registers the model parts)
from segaccel.config import load_config
from segaccel.data import SegDataset, seg_collate
from segaccel.inference import inference_model
from segaccel.registry import MODELS

NUM_CLASSES = 4
PROPERTY = settings(
    max_examples=25,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)


@st.composite
def samples(draw):
    """A random image (h, w of any aspect ratio) and a label map of class ids, ignore ids and junk."""
    h = draw(st.integers(1, 48))
    w = draw(st.integers(1, 48))
    seed = draw(st.integers(0, 2**16))
    reduce_zero_label = draw(st.booleans())
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    top = NUM_CLASSES + 1 if reduce_zero_label else NUM_CLASSES  # 0 becomes 255, the others shift down
    values = np.array([*range(top), 255], np.uint8)
    label = values[rng.integers(0, len(values), (h, w))]
    return image, label, reduce_zero_label


@st.composite
def train_pipelines(draw):
    scale = (draw(st.integers(4, 64)), draw(st.integers(4, 64)))  # (w, h), as MMSegmentation
    low = draw(st.floats(0.25, 1.0))
    pipeline = [
        {
            "type": "RandomResize",
            "scale": scale,
            "ratio_range": (low, low * draw(st.floats(1.0, 3.0))),
            "keep_ratio": draw(st.booleans()),
        },
        {
            "type": "RandomCrop",
            "crop_size": (draw(st.integers(1, 40)), draw(st.integers(1, 40))),
            "cat_max_ratio": draw(st.sampled_from([0.75, 1.0])),
        },
        {
            "type": "RandomFlip",
            "prob": draw(st.floats(0.0, 1.0)),
            "direction": draw(st.sampled_from(["horizontal", "vertical"])),
        },
    ]
    if draw(st.booleans()):
        pipeline.append({"type": "PhotoMetricDistortion"})
    if draw(st.booleans()):
        pipeline.append({"type": "Pad", "size_divisor": draw(st.integers(1, 16))})
    return [*pipeline, {"type": "PackSegInputs"}]


@functools.cache
def tiny_model(mode: str, size_divisor: int | None = 32) -> torch.nn.Module:
    path = Path(__file__).with_name("_tiny.yaml")
    cfg = load_config(_write(path, TINY_CONFIG))
    model_cfg = dict(cfg["model"])
    # without size_divisor (as a converted transformers model), images smaller than MiT takes are padded
    model_cfg["data_preprocessor"] = {**model_cfg["data_preprocessor"], "size_divisor": size_divisor}
    if mode == "slide":
        model_cfg["test_cfg"] = {"mode": "slide", "crop_size": (32, 32), "stride": (24, 24)}
    torch.manual_seed(0)
    return MODELS.build(model_cfg, key="model").eval()


def _write(path: Path, text: str) -> str:
    import tempfile

    folder = Path(tempfile.mkdtemp())
    (folder / path.name).write_text(text)
    return str(folder / path.name)


@PROPERTY
@given(batch=st.lists(samples(), min_size=1, max_size=3), pipeline=train_pipelines(), epoch=st.integers(0, 3))
def test_training_pipeline_keeps_shapes_and_labels(batch, pipeline, epoch):
    rows = [{"image": image, "label": label} for image, label, _ in batch]
    outs = []
    for i, (image, _label, reduce_zero_label) in enumerate(batch):
        ds = SegDataset(
            rows,
            pipeline,
            num_classes=NUM_CLASSES,
            reduce_zero_label=reduce_zero_label,
            name="prop",
            split="train",
        )
        out = ds[(epoch, i)]
        x, sample = out["inputs"], out["data_samples"]
        gt = sample.gt_sem_seg.data
        assert x.dtype == torch.uint8 and x.shape[0] == 3
        assert tuple(x.shape[1:]) == tuple(gt.shape[1:]) == tuple(sample.img_shape)
        assert tuple(sample.ori_shape) == image.shape[:2]
        values = set(torch.unique(gt).tolist())
        assert values <= {*range(NUM_CLASSES), 255}
        outs.append(out)
    data = seg_collate(outs)
    model = tiny_model("whole")
    packed = model.data_preprocessor(data, training=True)
    n, c, ph, pw = packed["inputs"].shape
    assert (n, c) == (len(batch), 3)
    for sample in packed["data_samples"]:
        assert tuple(sample.gt_sem_seg.data.shape) == (1, ph, pw)
        assert tuple(sample.pad_shape) == (ph, pw)


@settings(
    max_examples=25,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(
    data=st.data(),
    mode=st.sampled_from(["whole", "slide"]),
    size_divisor=st.sampled_from([32, None]),
    resize=st.one_of(st.none(), st.tuples(st.integers(1, 64), st.integers(1, 64))),
)
def test_predict_returns_the_original_size(data, mode, size_divisor, resize):
    # Down to 1x1 in both modes: slide windows smaller than the crop are padded to it and cropped back.
    h, w = data.draw(st.integers(1, 48)), data.draw(st.integers(1, 48))
    image = np.random.default_rng(h * 100 + w).integers(0, 256, (h, w, 3), dtype=np.uint8)
    model = tiny_model(mode, size_divisor)
    pipeline = [{"type": "Resize", "scale": resize, "keep_ratio": True}] if resize else None
    model.test_pipeline = pipeline
    try:
        result = inference_model(model, image)
    finally:
        model.test_pipeline = None
    assert tuple(result.ori_shape) == (h, w)
    assert tuple(result.pred_sem_seg.data.shape) == (1, h, w)
    assert tuple(result.seg_logits.data.shape) == (NUM_CLASSES, h, w)
    assert set(torch.unique(result.pred_sem_seg.data).tolist()) <= set(range(NUM_CLASSES))
