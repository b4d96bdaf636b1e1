"""Push → download → from_pretrained through the real huggingface_hub client and a local fake Hub.

The client reads HF_ENDPOINT when it is imported, so pushes and downloads run in subprocesses
started with the environment pointing at the fake Hub (HF_HUB_DISABLE_XET=1: hf_xet is installed).
"""

from __future__ import annotations

import json

import pytest
import torch
import yaml
from hub_testing import hub_env, run, tiny_segformer
from huggingface_hub import ModelCard, constants

from segaccel.models import Segmentor

DOWNLOAD = """
import sys, torch
from segaccel.models import Segmentor
model = Segmentor.from_pretrained(sys.argv[1], revision=sys.argv[2])
x = torch.load(sys.argv[3], weights_only=True)
with torch.no_grad():
    torch.save({"logits": model(x), "id2label": model.id2label, "state": model.state_dict()}, sys.argv[4])
"""


def _work_dir(tmp_path, model: Segmentor):
    """A training work dir as the runner leaves it: model/ with config.yaml and metrics.json."""
    model_dir = tmp_path / "work" / "model"
    model.save_pretrained(model_dir)
    train_config = {
        "train_dataloader": {"dataset": {"path": "segaccel/synthetic"}},
        "train_cfg": {"max_iters": 8},
    }
    (model_dir / "config.yaml").write_text(yaml.safe_dump(train_config))
    (model_dir / "metrics.json").write_text(json.dumps({"aAcc": 80.5, "mIoU": 55.25, "mAcc": 66.0}))
    return tmp_path / "work"


def test_push_then_download_then_offline_give_identical_logits(tmp_path, fake_hub):
    model = tiny_segformer()
    work_dir = _work_dir(tmp_path, model)
    x = torch.randn(2, 3, 36, 52, generator=torch.Generator().manual_seed(1))
    torch.save(x, tmp_path / "x.pt")
    with torch.no_grad():
        expected = model(x)
    env = hub_env(fake_hub.url, tmp_path)

    out = run(
        [
            "scripts/push_to_hub.py",
            str(work_dir),
            "org/tiny-segformer",
            "--private",
            "--revision",
            "v1",
            "--commit-message",
            "first upload",
        ],
        env,
    )
    assert "pushed" in out and fake_hub.unknown == []
    repo = fake_hub.repos["org/tiny-segformer"]
    assert repo["private"] and repo["branches"]["v1"][-1]["message"] == "first upload"
    assert fake_hub.files("org/tiny-segformer", "main") == {}  # pushed to the branch only
    files = fake_hub.files("org/tiny-segformer", "v1")
    assert sorted(files) == ["README.md", "config.json", "config.yaml", "metrics.json", "model.safetensors"]
    card = ModelCard(files["README.md"].decode())
    assert card.data.library_name == "segaccel" and card.data.datasets == ["segaccel/synthetic"]
    assert {r.metric_name: r.metric_value for r in card.data.eval_results} == {
        "mIoU": 55.25,
        "mAcc": 66.0,
        "aAcc": 80.5,
    }
    assert 'Segmentor.from_pretrained("org/tiny-segformer")' in card.text

    # download with the real client (HEAD + GET of config.json and model.safetensors at the branch)
    run(
        ["-c", DOWNLOAD, "org/tiny-segformer", "v1", str(tmp_path / "x.pt"), str(tmp_path / "online.pt")], env
    )
    assert "GET /org/tiny-segformer/resolve/v1/model.safetensors" in fake_hub.requests
    online = torch.load(tmp_path / "online.pt", weights_only=True)
    assert online["id2label"] == {0: "sky", 1: "road", 2: "car"}
    # the same weights, bit for bit; the logits of another process may differ in the last bit (its
    # thread count picks other CPU kernels), so they are compared at float32 rounding
    assert all(torch.equal(online["state"][k], v) for k, v in model.state_dict().items())
    assert online["state"].keys() == model.state_dict().keys()
    torch.testing.assert_close(online["logits"], expected, rtol=0, atol=1e-6)

    # offline, from the cache the client wrote: not one request reaches the Hub
    seen = len(fake_hub.requests)
    run(
        ["-c", DOWNLOAD, "org/tiny-segformer", "v1", str(tmp_path / "x.pt"), str(tmp_path / "offline.pt")],
        {**env, "HF_HUB_OFFLINE": "1"},
    )
    assert len(fake_hub.requests) == seen
    assert torch.equal(torch.load(tmp_path / "offline.pt", weights_only=True)["logits"], online["logits"])


def test_segmentor_push_to_hub_writes_the_card_with_the_repo_id(tmp_path, fake_hub, monkeypatch):
    monkeypatch.setattr(constants, "ENDPOINT", fake_hub.url)
    monkeypatch.setattr(constants, "HF_HUB_DISABLE_XET", True)
    monkeypatch.setenv("HF_TOKEN", "hf_fake_token_for_tests")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
    model = tiny_segformer()
    url = model.push_to_hub("org/direct", model_card_kwargs={"metrics": {"mIoU": 12.5}, "dataset": "x/y"})
    assert url.startswith(fake_hub.url + "/org/direct/commit/")
    files = fake_hub.files("org/direct")
    assert sorted(files) == ["README.md", "config.json", "model.safetensors"]
    card = ModelCard(files["README.md"].decode())
    assert [(r.metric_name, r.metric_value, r.dataset_type) for r in card.data.eval_results] == [
        ("mIoU", 12.5, "x/y")
    ]
    assert 'Segmentor.from_pretrained("org/direct")' in card.text
    assert json.loads(files["config.json"]) == model.config_for_saving()


@pytest.mark.e2e
def test_train_with_push_to_hub_pushes_the_final_model(tmp_path, fake_hub):
    env = hub_env(fake_hub.url, tmp_path)
    small = [
        f"{loader}.dataset.synthetic.{key}={n}"
        for loader in ("train_dataloader", "val_dataloader")
        for key, n in (("num_train", 16), ("num_val", 8))
    ]
    run(
        [
            "scripts/train.py",
            "configs/quickstart.yaml",
            "train_cfg.max_iters=2",
            "train_cfg.val_interval=2",
            "train_dataloader.batch_size=2",
            "model.decode_head.channels=16",
            *small,
            "push_to_hub=true",
            "hub_model_id=org/trained",
            "--work-dir",
            str(tmp_path / "work"),
        ],
        env,
    )
    files = fake_hub.files("org/trained")
    assert {"README.md", "config.json", "model.safetensors", "config.yaml", "metrics.json"} <= set(files)
    metrics = json.loads(files["metrics.json"])
    assert set(metrics["per_class"]) == {"IoU", "Acc"}
    assert set(metrics["per_class"]["IoU"]) == {"background", "circle", "square", "triangle"}
    card = ModelCard(files["README.md"].decode())
    assert {r.metric_name: r.metric_value for r in card.data.eval_results} == {
        k: metrics[k] for k in ("mIoU", "mAcc", "aAcc")
    }
    assert "| Class | IoU | Acc |" in card.text and "push_to_hub=true" in card.text
    assert files["model.safetensors"] == (tmp_path / "work" / "model" / "model.safetensors").read_bytes()
