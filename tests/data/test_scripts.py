"""scripts/check_dataset.py, scripts/browse_dataset.py and `scripts/benchmark.py data` on tiny data."""

import importlib.util
import io
from pathlib import Path

import datasets
import numpy as np
from PIL import Image

from segaccel.data import dataset_from_config
from segaccel.data.check import format_report, scan_dataset

ROOT = Path(__file__).resolve().parents[2]
FEATURES = datasets.Features({"image": datasets.Image(), "label": datasets.Image()})


def script(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def png(array: np.ndarray) -> dict:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG")
    return {"bytes": buf.getvalue(), "path": None}


def mask(values: dict[int, int], h: int = 4, w: int = 5) -> np.ndarray:
    """A mask with `count` pixels of each `label` (filled in order), the rest label 0."""
    flat = np.zeros(h * w, np.uint8)
    at = 0
    for label, count in values.items():
        flat[at : at + count] = label
        at += count
    return flat.reshape(h, w)


def write_config(tmp_path: Path, images: list, labels: list, extra: str = "") -> Path:
    datasets.Dataset.from_dict({"image": images, "label": labels}, features=FEATURES).save_to_disk(
        str(tmp_path / "data")
    )
    config = tmp_path / "check.yaml"
    config.write_text(
        f"""
train_dataloader:
  batch_size: 2
  dataset:
    path: {tmp_path / "data"}
    validation_split: 0
    id2label: [sky, road, car]
    pipeline:
      - {{type: RandomResize, scale: [40, 32], ratio_range: [1.0, 2.0]}}
      - {{type: RandomCrop, crop_size: [16, 20]}}
      - {{type: RandomFlip, prob: 0.5}}
      - {{type: PackSegInputs}}
{extra}"""
    )
    return config


def rgb(seed: int, h: int = 4, w: int = 5) -> dict:
    return png(np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8))


def test_check_dataset_lists_every_bad_sample_and_counts_classes(tmp_path, capsys):
    images = [rgb(0), rgb(1), rgb(2, h=5), {"bytes": b"broken", "path": None}, rgb(4)]
    labels = [
        png(mask({1: 3, 2: 5, 255: 2})),  # 10 of class 0, 3 of 1, 5 of 2, 2 ignored
        png(mask({2: 20})),
        png(mask({1: 1})),  # the image is 5 x 5: size mismatch
        png(mask({})),  # the image cannot be decoded
        png(mask({7: 2})),  # label 7: outside [0, 3)
    ]
    config = write_config(tmp_path, images, labels)
    status = script("check_dataset").main([str(config), "--num-workers", "2"])
    out = capsys.readouterr().out
    assert status == 1
    assert "5 samples read, 3 bad" in out
    assert "[2] dataset" in out and "image size (h, w) = (5, 5) but mask size = (4, 5)" in out
    assert "[3] dataset" in out and "column 'image' cannot be decoded" in out
    assert "[4] dataset" in out and "mask labels [7] are outside [0, 3)" in out
    rows = {line.split()[1]: line.split() for line in out.splitlines() if line[:4].strip() in {"0", "1", "2"}}
    assert rows["sky"][2:6] == ["10", "26.316", "1", "50.00"]  # 10 of 38 pixels; 1 of 2 good images
    assert rows["road"][2:6] == ["3", "7.895", "1", "50.00"]
    assert rows["car"][2:6] == ["25", "65.789", "2", "100.00"]
    ignored = next(line for line in out.splitlines() if "(ignored)" in line).split()
    assert ignored[1:3] == ["2", "5.000"]  # 2 of all 40 pixels of the good images


def test_check_dataset_passes_a_clean_split_and_reads_streams(tmp_path, capsys):
    config = write_config(tmp_path, [rgb(0), rgb(1)], [png(mask({1: 4})), png(mask({2: 4}))])
    assert script("check_dataset").main([str(config)]) == 0
    assert "2 samples read, 0 bad" in capsys.readouterr().out

    datasets.load_from_disk(str(tmp_path / "data")).to_parquet(str(tmp_path / "train.parquet"))
    cfg = {
        "train_dataloader": {
            "dataset": {
                "path": "parquet",
                "data_files": {"train": str(tmp_path / "train.parquet")},
                "streaming": True,
                "validation_split": 0,
                "id2label": ["sky", "road", "car"],
            }
        }
    }
    stream = dataset_from_config(cfg, "train", training=False)
    report = scan_dataset(stream, progress=False)
    assert report.num_samples == 2 and not report.bad
    assert report.pixels.tolist() == [32, 4, 4] and report.images.tolist() == [2, 1, 1]
    assert "0 bad" in format_report(report, stream.id2label)


def test_browse_dataset_writes_a_grid(tmp_path):
    config = write_config(tmp_path, [rgb(i) for i in range(3)], [png(mask({1: 6, 2: 6}))] * 3)
    out = script("browse_dataset").main([str(config), "--num", "3", "--out", str(tmp_path / "grid.png")])
    grid = Image.open(out)
    assert grid.width == 2 * (2 * 256 + 6)  # two samples per row: image | overlay each
    assert grid.height > 2 * (256 + 20)  # two rows and a legend
    pixels = np.asarray(grid.convert("RGB"))
    assert (pixels != 255).any(axis=-1).mean() > 0.3  # drawn, not blank


def test_benchmark_data_reports_samples_per_second(tmp_path, capsys):
    config = write_config(tmp_path, [rgb(0)], [png(mask({1: 4}))])
    benchmark = script("benchmark")
    rows = benchmark.main(
        [
            "data",
            str(config),
            "--fake",
            "4",
            "--fake-size",
            "24",
            "32",
            "--samples",
            "4",
            "--num-workers",
            "0",
            "1",
        ]
    )
    assert [r["num_workers"] for r in rows] == [0, 1]
    assert all(r["samples_per_s"] > 0 and r["per_worker"] > 0 for r in rows)
    out = capsys.readouterr().out
    assert "4 generated 24x32 JPEG images, 3 classes" in out and "samples_per_s" in out
