"""MMSegmentation's zoo without mmcv: for each of the seven families, real MMSegmentation 1.2.2
checkpoints (a 1.x Runner file and a 0.x file) convert into a segaccel model folder, load strictly, and
predict what MMSegmentation predicted (tests/fixtures/mmseg/README.md says how the references were made).

- tensor mode: logits within 1e-4 of their largest magnitude;
- predict path (`Segmentor.from_pretrained` of the folder, `inference_model` on the fixture's PNG, so
  the test pipeline's resize, the preprocessor and the post-processing are all in): `seg_logits` on the
  stored row/column subgrid within 1e-3 of their largest magnitude, and >= 99.9 % of `pred` equal.
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from segaccel.convert import load_mmseg_checkpoint
from segaccel.convert.mmseg_zoo import zoo_config
from segaccel.inference import inference_model
from segaccel.models import Segmentor
from segaccel.models.weights import load_pretrained_weights
from segaccel.registry import MODELS

REPO_ROOT = Path(__file__).resolve().parents[2]
FIXTURES = REPO_ROOT / "tests" / "fixtures" / "mmseg"
FAMILIES = [
    "segformer_mit-b0",
    "pspnet_r50-d8",
    "fcn_r50-d8",
    "deeplabv3_r50-d8",
    "deeplabv3plus_r50-d8",
    "upernet_swin-t",
    "upernet_convnext-t",
]


def _convert(args: list[str]) -> None:
    path = REPO_ROOT / "scripts" / "convert_checkpoint.py"
    spec = importlib.util.spec_from_file_location("convert_checkpoint", path)
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    with contextlib.redirect_stdout(io.StringIO()):
        script.main(args)


def _tensor_logits(model: Segmentor, reference: np.lib.npyio.NpzFile) -> tuple[np.ndarray, np.ndarray]:
    """Our tensor-mode logits on the fixture's image, and MMSegmentation's, on the same positions."""
    image = np.asarray(Image.open(FIXTURES / "image_tensor.png").convert("RGB"))
    batch = model.data_preprocessor({"inputs": [torch.from_numpy(image.copy()).permute(2, 0, 1)]})
    with torch.no_grad():
        ours = model(batch["inputs"], mode="tensor").numpy()
    if "logits_tensor" in reference:
        return ours, reference["logits_tensor"]
    assert ours.shape == tuple(reference["logits_tensor_shape"])
    rows, cols = reference["logits_tensor_rows"], reference["logits_tensor_cols"]
    return ours[:, :, rows][:, :, :, cols], reference["logits_tensor_sub"]


@pytest.mark.parametrize("family", FAMILIES)
def test_mmseg_checkpoints_convert_load_strictly_and_predict_as_mmsegmentation(family, tmp_path):
    folder = FIXTURES / family
    reference = np.load(folder / "reference.npz")
    meta = json.loads((folder / "meta.json").read_text())

    # the 1.x Runner file (message hub, numpy scalars) carries its config: one command, no --config
    _convert([str(folder / "checkpoint_1x.pth"), str(tmp_path / "from_1x")])
    # the 0.x file with MMSegmentation's config file, read without running it
    config = str(folder / "config.py")
    _convert([str(folder / "checkpoint_0x.pth"), str(tmp_path / "from_0x"), "--config", config])
    model = Segmentor.from_pretrained(tmp_path / "from_1x")  # strict by default
    from_0x = Segmentor.from_pretrained(tmp_path / "from_0x")
    assert model.state_dict().keys() == from_0x.state_dict().keys()
    assert all(torch.equal(v, from_0x.state_dict()[k]) for k, v in model.state_dict().items())
    assert model.config == from_0x.config  # class names and palette from meta.dataset_meta and meta.CLASSES
    assert len(model.id2label) == meta["num_classes"] and len(model.palette) == meta["num_classes"]

    ours, theirs = _tensor_logits(model, reference)
    assert ours.shape == theirs.shape
    assert np.abs(ours - theirs).max() <= 1e-4 * np.abs(theirs).max()

    sample = inference_model(model, FIXTURES / "image_predict.png")
    assert list(sample.metainfo["img_shape"]) == meta["predict"]["metainfo"]["img_shape"]  # MMSeg's resize
    assert list(sample.metainfo["ori_shape"]) == meta["predict"]["metainfo"]["ori_shape"]
    rows, cols = reference["seg_logits_rows"], reference["seg_logits_cols"]
    seg_logits = sample.seg_logits.data.numpy()[:, rows][:, :, cols]
    expected = reference["seg_logits_sub"]
    assert np.abs(seg_logits - expected).max() <= 1e-3 * np.abs(expected).max()
    pred = sample.pred_sem_seg.data[0].numpy()
    assert pred.shape == reference["pred"].shape
    assert (pred == reference["pred"]).mean() >= 0.999


def test_load_from_reads_a_1x_training_checkpoint():
    """`load_from:` and `--checkpoint` (the weights door) read a real 1.x Runner file with the same reader."""
    path = FIXTURES / "upernet_swin-t" / "checkpoint_1x.pth"
    checkpoint = load_mmseg_checkpoint(path)
    cfg, notes = zoo_config(checkpoint)  # the config the file carries (meta.cfg)
    assert notes[0] == "config: the one saved in the checkpoint (meta.cfg)"
    torch.manual_seed(0)
    model = MODELS.build(cfg["model"], key="model")
    assert load_pretrained_weights(model, path, strict=True) == str(path)
    state = model.state_dict()
    assert all(torch.equal(state[k], v) for k, v in checkpoint["state_dict"].items())
