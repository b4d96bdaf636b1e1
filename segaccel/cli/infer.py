"""Segment images with a saved or Hub model: PNG masks (label ids) and coloured overlays with a legend.

    python scripts/infer.py photo.jpg more_photos/ --model work_dirs/quickstart/model --out-dir out/
    python scripts/infer.py street/ --model nvidia/segformer-b0-finetuned-ade-512-512 --out-dir out/

Writes `OUT_DIR/masks/<name>.png` (class index per pixel: 8-bit, or 16-bit for more than 256
classes) and `OUT_DIR/overlays/<name>.png` (the image with the prediction blended in, over a legend
of the classes present). Folders are searched for images (not recursively); a progress bar counts
the images.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from PIL import Image

from segaccel import visualization
from segaccel.deploy import ExportedSegmentor, is_exported_folder
from segaccel.engine.logging import progress_bar
from segaccel.inference import inference_model
from segaccel.models import Segmentor
from segaccel.visualization import get_palette

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Segment images with a segaccel model.")
    parser.add_argument("images", nargs="+", help="image files and/or folders of images")
    parser.add_argument(
        "--model", required=True, help="a model folder, an exported folder (scripts/export.py) or a Hub id"
    )
    parser.add_argument("--out-dir", "--out_dir", dest="out_dir", required=True, help="output folder")
    parser.add_argument("--revision", help="Hub revision (branch, tag or commit) of --model")
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:1, ... (default: cuda if available)")
    parser.add_argument("--dtype", default=None, help="float32 (default), float16, bfloat16")
    parser.add_argument("--batch-size", "--batch_size", dest="batch_size", type=int, default=4)
    parser.add_argument("--mode", choices=["whole", "slide"], help="override the model's test_cfg mode")
    parser.add_argument("--crop-size", dest="crop_size", type=int, nargs=2, metavar=("H", "W"))
    parser.add_argument("--stride", type=int, nargs=2, metavar=("H", "W"))
    parser.add_argument("--alpha", type=float, default=0.5, help="overlay opacity of the mask colours")
    parser.add_argument("--no-overlay", dest="overlay", action="store_false", help="write masks only")
    return parser.parse_intermixed_args(argv)


def find_images(inputs: list[str]) -> list[Path]:
    """The given files, and the image files of the given folders (sorted), in order."""
    found: list[Path] = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            found.extend(sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES))
        elif path.is_file():
            found.append(path)
        else:
            raise SystemExit(f"infer.py: {item} is neither an image file nor a folder")
    if not found:
        raise SystemExit(f"infer.py: no images in {', '.join(inputs)}")
    return found


def output_names(paths: list[Path]) -> list[str]:
    """A unique output name per image: its stem, with `_<n>` added when stems repeat."""
    names, seen = [], {}
    for path in paths:
        n = seen.get(path.stem, 0)
        seen[path.stem] = n + 1
        names.append(path.stem if n == 0 else f"{path.stem}_{n}")
    return names


def chunks(items: list, size: int) -> Iterator[list]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def save_mask(mask: np.ndarray, path: Path) -> None:
    """Class indices as a grayscale PNG: 8-bit when they fit, else 16-bit."""
    if mask.max(initial=0) < 256:
        Image.fromarray(mask.astype(np.uint8)).save(path)
    else:
        Image.fromarray(mask.astype(np.uint16)).save(path)


def overlay_with_legend(
    image: np.ndarray, mask: np.ndarray, palette: list, names: list[str], alpha: float
) -> Image.Image:
    """The mask over the desaturated image, class boundaries outlined, above a legend of the classes
    present with their pixel shares (`segaccel.visualization.overlay_with_legend`)."""
    return visualization.overlay_with_legend(image, mask, palette, names, alpha)


def main(argv: list[str] | None = None) -> list[Path]:
    args = parse_args(argv)
    import torch

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    kwargs = {"revision": args.revision} if args.revision else {}
    if is_exported_folder(args.model):  # scripts/export.py's ONNX / ExportedProgram: no model code
        model = ExportedSegmentor(args.model)
    else:
        model = Segmentor.from_pretrained(args.model, device=device, dtype=args.dtype, **kwargs)
    if args.mode:
        test_cfg = {"mode": args.mode}
        if args.mode == "slide":
            saved = model.test_cfg
            test_cfg["crop_size"] = args.crop_size or saved.get("crop_size")
            test_cfg["stride"] = args.stride or saved.get("stride")
            if test_cfg["crop_size"] is None or test_cfg["stride"] is None:
                raise SystemExit("infer.py: --mode slide needs --crop-size H W and --stride H W")
        model.test_cfg = test_cfg
    palette = model.palette or get_palette(model.num_classes)
    names = [model.id2label[i] for i in range(model.num_classes)] if model.id2label else None
    names = names or [str(i) for i in range(model.num_classes)]

    paths = find_images(args.images)
    out_dir = Path(args.out_dir)
    (out_dir / "masks").mkdir(parents=True, exist_ok=True)
    if args.overlay:
        (out_dir / "overlays").mkdir(parents=True, exist_ok=True)
    written = []
    with progress_bar(total=len(paths), desc="segmenting", unit="img") as progress:  # on a terminal only
        for batch in chunks(list(zip(paths, output_names(paths))), args.batch_size):
            samples = inference_model(model, [str(p) for p, _ in batch], batch_size=args.batch_size)
            for (path, name), sample in zip(batch, samples):
                mask = sample.pred_sem_seg.data[0].numpy()
                save_mask(mask, out_dir / "masks" / f"{name}.png")
                written.append(out_dir / "masks" / f"{name}.png")
                if args.overlay:
                    with Image.open(path) as pil:
                        image = np.asarray(pil.convert("RGB"))
                    overlay = overlay_with_legend(image, mask, palette, names, args.alpha)
                    overlay.save(out_dir / "overlays" / f"{name}.png")
                progress.update(1)
    noun = "mask" if len(written) == 1 else "masks"
    print(f"wrote {len(written)} {noun} to {out_dir / 'masks'}" + (" and overlays" if args.overlay else ""))
    return written


def run() -> int:
    """The installed command's entry point."""
    main()
    return 0


if __name__ == "__main__":
    sys.exit(run())
