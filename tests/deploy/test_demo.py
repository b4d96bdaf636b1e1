"""The demo page's segmenting function, its API through `gradio_client` (the mask equals
`inference_model`'s, whole and slide), the Space folder, and pushing it."""

import re
import subprocess
import sys

import numpy as np
import pytest
from demo_testing import serving
from export_testing import random_image
from PIL import Image

from segaccel.deploy import ExportedSegmentor
from segaccel.deploy.demo import Segmenter, build_demo, legend_html
from segaccel.inference import inference_model
from segaccel.visualization import readable_overlay

pytest.importorskip("gradio")


def expected_mask(model, image, test_cfg):
    saved = model.test_cfg
    model.test_cfg = test_cfg
    try:
        return inference_model(model, image).pred_sem_seg.data[0].numpy()
    finally:
        model.test_cfg = saved


def test_segmenter_mask_legend_and_shares(fcn_model):
    segmenter = Segmenter(fcn_model, alpha=0.5)
    image = random_image(61, 83, 5)
    result = segmenter(image, segmenter.test_cfg("whole"))
    mask = expected_mask(fcn_model, image, {"mode": "whole"})
    np.testing.assert_array_equal(result.mask, mask)
    ids, counts = np.unique(mask, return_counts=True)
    assert sorted(c[0] for c in result.classes) == ids.tolist()
    shares = {c[0]: c[3] for c in result.classes}
    assert [c[3] for c in result.classes] == sorted(shares.values(), reverse=True)
    for i, n in zip(ids, counts):
        assert shares[i] == pytest.approx(100 * n / mask.size)
    # the same picture as every other tool draws (tests/test_visualization.py checks it by hand)
    np.testing.assert_array_equal(result.overlay, readable_overlay(image, mask, fcn_model.palette, 0.5))
    html = legend_html(result.classes)
    assert re.findall(r'class="segaccel-name">([^<]+)<', html) == [c[1] for c in result.classes]
    assert segmenter.test_cfg("slide") == {"mode": "slide", "crop_size": [512, 512], "stride": [341, 341]}
    with pytest.raises(ValueError, match="mode must be one of"):
        segmenter.test_cfg("tiles")


@pytest.mark.parametrize("mode", ["whole", "slide"])
def test_gradio_client_mask_equals_inference_model(fcn_onnx, tmp_path, mode):
    from gradio_client import Client, handle_file

    model = ExportedSegmentor(fcn_onnx)
    image = random_image(70, 99, 6)
    Image.fromarray(image).save(tmp_path / "in.png")
    with serving(build_demo(model)) as url:
        client = Client(url, verbose=False)
        overlay, legend, annotated, mask_file = client.predict(
            handle_file(str(tmp_path / "in.png")), mode, 48, 64, 32, 40, api_name="/segment"
        )
    slide = {"mode": "slide", "crop_size": [48, 64], "stride": [32, 40]}
    test_cfg = {"mode": "whole"} if mode == "whole" else slide
    expected = expected_mask(model, image, test_cfg)
    np.testing.assert_array_equal(np.asarray(Image.open(mask_file)), expected)
    names = [model.id2label[int(i)] for i in np.unique(expected)]
    assert sorted(re.findall(r'class="segaccel-name">([^<]+)<', legend)) == sorted(names)
    assert np.asarray(Image.open(overlay).convert("RGB")).shape == image.shape
    assert sorted(a["label"] for a in annotated["annotations"]) == sorted(names)


def test_space_folder_serves_the_exported_model(fcn_onnx, tmp_path, script_module):
    example = tmp_path / "street.png"
    Image.fromarray(random_image(40, 56, 7)).save(example)
    push = script_module("push_to_hub")
    folder = push.main(
        [str(fcn_onnx), "me/demo", "--space", "--space-dir", str(tmp_path / "space"), "--no-push",
         "--examples", str(example), "--model-repo-id", "me/fcn-tiny"]
    )
    space = tmp_path / "space"
    assert folder == str(space)
    assert sorted(p.name for p in space.iterdir()) == [
        "README.md", "app.py", "examples", "model", "requirements.txt", "segaccel"
    ]
    readme = (space / "README.md").read_text()
    front = readme.split("---")[1]
    assert "\nsdk: gradio\n" in front and "\napp_file: app.py\n" in front and "  - me/fcn-tiny" in front
    requirements = (space / "requirements.txt").read_text().split()
    names = {re.match(r"[A-Za-z0-9_.-]+", spec).group(0).lower() for spec in requirements}
    assert {"onnxruntime", "gradio", "torch", "huggingface-hub"} <= names, requirements
    assert any(r.startswith("torch") for r in requirements) and not any("[" in r for r in requirements)
    assert sorted(p.name for p in (space / "model").iterdir()) == ["config.json", "model.onnx"]
    # app.py, run from the Space folder, uses the bundled segaccel and builds the page for the model
    code = (
        "import app, segaccel\n"
        "print(segaccel.__file__)\n"
        "print(type(app.model).__name__, app.model.num_classes, type(app.demo).__name__)\n"
        "print(app.examples)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=space, capture_output=True, text=True, check=True,
        env={"GRADIO_ANALYTICS_ENABLED": "False", "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)},
    ).stdout.splitlines()
    assert out[0].startswith(str(space / "segaccel"))
    assert out[1] == "ExportedSegmentor 5 Blocks"
    assert "00_street.png" in out[2]


class RecordingApi:
    """Stands in for `HfApi`: records the calls a push makes."""

    def __init__(self):
        self.calls = []

    def create_repo(self, **kwargs):
        self.calls.append(("create_repo", kwargs))
        return type("Url", (), {"repo_id": kwargs["repo_id"]})()

    def upload_folder(self, **kwargs):
        self.calls.append(("upload_folder", kwargs))
        return type("Info", (), {"commit_url": f"https://hub/spaces/{kwargs['repo_id']}/commit/1"})()


def test_push_space_creates_a_gradio_space_and_uploads_the_folder(tmp_path):
    from segaccel.hub.space import push_space

    api = RecordingApi()
    url = push_space(tmp_path, "me/demo", private=True, api=api)
    assert url == "https://hub/spaces/me/demo/commit/1"
    (_, create), (_, upload) = api.calls
    assert create == {"repo_id": "me/demo", "repo_type": "space", "space_sdk": "gradio", "private": True,
                      "exist_ok": True}
    assert upload["repo_type"] == "space" and upload["folder_path"] == str(tmp_path)
