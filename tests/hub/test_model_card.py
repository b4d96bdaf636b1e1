"""Model cards: metadata huggingface_hub parses back (model-index results), and the card's text."""

from __future__ import annotations

import json

import yaml
from hub_testing import tiny_segformer
from huggingface_hub import ModelCard

from segaccel.hub import build_model_card, write_model_card

METRICS = {
    "aAcc": 91.27,
    "mIoU": 64.5,
    "mAcc": 75.03,
    "per_class": {
        "IoU": {"sky": 90.1, "road": 70.4, "car": None},
        "Acc": {"sky": 95.0, "road": 80.0, "car": 50.1},
    },
}
TRAIN_CONFIG = {
    "model": {"decode_head": {"num_classes": 3}},
    "train_dataloader": {"dataset": {"path": "segments/sidewalk-semantic", "split": "train"}},
    "val_dataloader": {"dataset": {"path": "segments/sidewalk-semantic", "split": "validation"}},
    "train_cfg": {"max_iters": 160000},
}


def test_save_pretrained_writes_a_card_from_the_folders_metrics_and_config(tmp_path):
    (tmp_path / "metrics.json").write_text(json.dumps(METRICS))
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(TRAIN_CONFIG))
    tiny_segformer().save_pretrained(
        tmp_path, model_card_kwargs={"train_command": "python scripts/train.py x.yaml"}
    )

    card = ModelCard.load(tmp_path / "README.md")
    data = card.data
    assert data.library_name == "segaccel" and data.pipeline_tag == "image-segmentation"
    assert {"segaccel", "semantic-segmentation", "image-segmentation"} <= set(data.tags)
    assert data.datasets == ["segments/sidewalk-semantic"]
    results = {r.metric_name: r for r in data.eval_results}
    assert {name: r.metric_value for name, r in results.items()} == {
        "mIoU": 64.5,
        "mAcc": 75.03,
        "aAcc": 91.27,
    }
    assert {r.metric_type for r in results.values()} == {"mean_iou", "mean_accuracy", "overall_accuracy"}
    assert all(
        r.dataset_type == "segments/sidewalk-semantic" and r.dataset_split == "validation"
        for r in results.values()
    )
    assert all(r.task_type == "image-segmentation" for r in results.values())

    text = card.text
    assert 'Segmentor.from_pretrained("PATH_OR_REPO_ID")' in text and "inference_model(model" in text
    assert "| mIoU | mAcc | aAcc |" in text and "| 64.50 | 75.03 | 91.27 |" in text
    assert (
        "| Class | IoU | Acc |" in text
        and "| road | 70.40 | 80.00 |" in text
        and "| car |  | 50.10 |" in text
    )
    assert "python scripts/train.py x.yaml" in text
    assert "max_iters: 160000" in text  # the training config, in full
    assert "- classes: sky, road, car" in text


def test_a_repo_id_goes_into_the_usage_and_no_metrics_means_no_model_index(tmp_path):
    model = tiny_segformer()
    card = build_model_card(model.config_for_saving(), repo_id="my-org/tiny-segformer")
    assert 'Segmentor.from_pretrained("my-org/tiny-segformer")' in card.text
    assert "--model my-org/tiny-segformer" in card.text
    assert card.data.eval_results is None and "No evaluation results were recorded" in card.text
    card.save(tmp_path / "README.md")
    assert ModelCard.load(tmp_path / "README.md").data.to_dict()["library_name"] == "segaccel"


def test_a_generated_card_is_replaced_and_a_hand_written_one_kept(tmp_path):
    model = tiny_segformer()
    model.save_pretrained(tmp_path)
    assert "No evaluation results" in (tmp_path / "README.md").read_text()
    (tmp_path / "metrics.json").write_text(json.dumps(METRICS))
    model.save_pretrained(tmp_path)  # a re-export: the metrics are there now
    assert "| 64.50 | 75.03 | 91.27 |" in (tmp_path / "README.md").read_text()

    (tmp_path / "README.md").write_text("---\nlicense: mit\n---\n# My own words\n")
    model.save_pretrained(tmp_path)
    write_model_card(tmp_path)
    assert (tmp_path / "README.md").read_text() == "---\nlicense: mit\n---\n# My own words\n"


def test_write_model_card_from_a_folder_leaves_out_nan_and_needs_a_dataset(tmp_path):
    tiny_segformer().save_pretrained(tmp_path)
    (tmp_path / "metrics.json").write_text(json.dumps({"aAcc": 50.0, "mIoU": float("nan"), "mAcc": 40.0}))
    # without a training config the dataset is unknown: results in the text, no model-index
    assert ModelCard.load(write_model_card(tmp_path)).data.eval_results is None
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(TRAIN_CONFIG))
    results = ModelCard.load(write_model_card(tmp_path, repo_id="org/x")).data.eval_results
    assert [(r.metric_name, r.metric_value, r.dataset_split) for r in results] == [
        ("mAcc", 40.0, "validation"),
        ("aAcc", 50.0, "validation"),
    ]
