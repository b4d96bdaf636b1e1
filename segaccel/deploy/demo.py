"""A Gradio demo page for a segmentation model (the `demo` extra): upload or pick an image, see it segmented.

    from segaccel.deploy import ExportedSegmentor
    from segaccel.deploy.demo import build_demo

    build_demo(ExportedSegmentor.from_pretrained("exported/quickstart"), examples=["cat.png"]).launch()

The page shows the image with the predicted classes blended in, a legend of the classes present with
their share of the pixels, the same as an interactive `AnnotatedImage` (hover a class to see it), and
the mask as a PNG of class ids to download. A whole/slide switch (with the slide window and stride)
covers images larger than the model was trained on. `model` is anything `inference_model` takes: an
`ExportedSegmentor` (onnxruntime, no model code) or a PyTorch `Segmentor` (`scripts/demo.py` loads
either). The segmenting function is the page's API (`/segment`), for `gradio_client` too.
"""

from __future__ import annotations

import html
import tempfile
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from segaccel.inference import inference_model
from segaccel.visualization import get_palette, readable_overlay

DEFAULT_SLIDE = {"crop_size": [512, 512], "stride": [341, 341]}  # MMSegmentation's 512x512 recipes
MODES = ("whole", "slide")


@dataclass
class Segmentation:
    """One image's result: the mask `(H, W)` int64, the overlay `(H, W, 3)` uint8, and per class present
    (largest share first) its index, name, colour and share of the pixels in percent."""

    mask: np.ndarray
    overlay: np.ndarray
    classes: list[tuple[int, str, list[int], float]]


class Segmenter:
    """Segments one image at a time with `model`, in whole or slide mode (thread-safe).

    Args:
        model: a `Segmentor` or an `ExportedSegmentor`.
        alpha: opacity of the class colours in the overlay.
    """

    def __init__(self, model: Any, alpha: float = 0.5) -> None:
        self.model = model
        self.alpha = alpha
        n = int(model.num_classes)
        self.palette = [list(c) for c in (model.palette or get_palette(n))]
        id2label = model.id2label or {}
        self.names = [str(id2label.get(i, i)) for i in range(n)]
        saved = dict(model.test_cfg)
        self.default_mode = saved["mode"]
        slide = saved["mode"] == "slide"
        self.slide_cfg = {k: list(saved[k]) for k in ("crop_size", "stride")} if slide else None
        self._lock = threading.Lock()

    def test_cfg(
        self, mode: str, crop_size: Sequence[int] | None = None, stride: Sequence[int] | None = None
    ) -> dict:
        """The `test_cfg` of `mode`; slide windows default to the model's, else 512x512 every 341."""
        if mode not in MODES:
            raise ValueError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
        if mode == "whole":
            return {"mode": "whole"}
        slide = self.slide_cfg or DEFAULT_SLIDE
        return {
            "mode": "slide",
            "crop_size": [int(v) for v in (crop_size or slide["crop_size"])],
            "stride": [int(v) for v in (stride or slide["stride"])],
        }

    def __call__(self, image: np.ndarray, test_cfg: dict | None = None) -> Segmentation:
        """Segment an RGB uint8 `(H, W, 3)` image (or `(H, W)` grayscale) with `test_cfg`."""
        if image is None:
            raise ValueError("no image: upload one or pick an example")
        image = np.asarray(image)
        if image.ndim == 2:
            image = np.repeat(image[..., None], 3, axis=2)
        if image.ndim == 3 and image.shape[2] == 4:
            image = image[..., :3]
        image = np.ascontiguousarray(image.astype(np.uint8, copy=False))
        with self._lock:  # test_cfg is the model's state: one request at a time sets and uses it
            saved = self.model.test_cfg
            self.model.test_cfg = test_cfg or saved
            try:
                sample = inference_model(self.model, image)
            finally:
                self.model.test_cfg = saved
        mask = sample.pred_sem_seg.data[0].numpy()
        ids, counts = np.unique(mask, return_counts=True)
        order = np.argsort(-counts, kind="stable")
        classes = [
            (int(ids[k]), self.names[int(ids[k])], self.palette[int(ids[k])], 100.0 * counts[k] / mask.size)
            for k in order
            if 0 <= ids[k] < len(self.names)
        ]
        return Segmentation(mask, readable_overlay(image, mask, self.palette, self.alpha), classes)


def legend_html(classes: Sequence[tuple[int, str, Sequence[int], float]]) -> str:
    """An HTML legend: a colour swatch, the class name and its pixel share, one row per class."""
    rows = "".join(
        f'<tr class="segaccel-class" data-class-id="{index}">'
        f'<td><span class="segaccel-swatch" style="display:inline-block;width:1em;height:1em;'
        f'background:rgb({r},{g},{b});border:1px solid #000"></span></td>'
        f'<td class="segaccel-name">{html.escape(name)}</td>'
        f'<td class="segaccel-share" style="text-align:right">{share:.1f} %</td></tr>'
        for index, name, (r, g, b), share in classes
    )
    return (
        '<table class="segaccel-legend"><thead><tr><th></th><th>class</th><th>pixels</th></tr></thead>'
        f"<tbody>{rows}</tbody></table>"
    )


def build_demo(
    model: Any,
    *,
    title: str = "segaccel semantic segmentation",
    description: str | None = None,
    examples: Sequence[str | Path] | None = None,
    alpha: float = 0.5,
) -> Any:
    """The Gradio `Blocks` page for `model` (call `.launch()` on it); see the module docstring."""
    try:
        import gradio as gr
    except ImportError as exc:
        raise ImportError("the demo needs gradio: pip install 'segaccel[demo]'") from exc

    segmenter = Segmenter(model, alpha=alpha)
    slide = segmenter.test_cfg("slide")
    colours = {name: "#{:02x}{:02x}{:02x}".format(*c) for name, c in zip(segmenter.names, segmenter.palette)}
    mask_dir = Path(tempfile.mkdtemp(prefix="segaccel-demo-"))

    def segment(
        image: np.ndarray, mode: str, crop_h: float, crop_w: float, stride_h: float, stride_w: float
    ) -> tuple[np.ndarray, str, tuple[np.ndarray, list], str]:
        if image is None:
            raise gr.Error("Upload an image or pick an example first.")
        cfg = segmenter.test_cfg(mode, (crop_h, crop_w), (stride_h, stride_w))
        result = segmenter(image, cfg)
        annotations = [((result.mask == i).astype(np.float32), name) for i, name, _, _ in result.classes]
        handle = tempfile.NamedTemporaryFile(suffix=".png", prefix="mask-", dir=mask_dir, delete=False)
        with handle:
            dtype = np.uint8 if int(result.mask.max(initial=0)) < 256 else np.uint16
            Image.fromarray(result.mask.astype(dtype)).save(handle, format="PNG")
        return result.overlay, legend_html(result.classes), (np.asarray(image), annotations), handle.name

    def number(value: int, label: str) -> Any:
        return gr.Number(value, label=label, precision=0, minimum=1)

    sides = ("height", "width")
    with gr.Blocks(title=title) as demo:
        gr.Markdown(f"# {title}\n\n{description or ''}")
        with gr.Row():
            with gr.Column():
                image = gr.Image(
                    label="Image", type="numpy", image_mode="RGB", sources=["upload", "clipboard"]
                )
                mode = gr.Radio(list(MODES), value=segmenter.default_mode, label="Inference mode")
                with gr.Accordion("Slide window (for images larger than the training crops)", open=False):
                    with gr.Row():
                        (crop_h, crop_w), (stride_h, stride_w) = (
                            [number(value, label=f"{name} {side}") for value, side in zip(slide[key], sides)]
                            for key, name in (("crop_size", "crop"), ("stride", "stride"))
                        )
                button = gr.Button("Segment", variant="primary", elem_id="segaccel-segment")
            with gr.Column():
                with gr.Tab("Overlay"):
                    overlay = gr.Image(
                        label="Segmentation", type="numpy", format="png", elem_id="segaccel-overlay"
                    )
                    legend = gr.HTML(label="Classes present", elem_id="segaccel-legend")
                with gr.Tab("Per class"):
                    annotated = gr.AnnotatedImage(label="Classes", color_map=colours)
                mask_file = gr.File(label="Mask (PNG of class ids)")
        if examples:
            gr.Examples([[str(e)] for e in examples], inputs=[image])
        inputs = [image, mode, crop_h, crop_w, stride_h, stride_w]
        outputs = [overlay, legend, annotated, mask_file]
        button.click(segment, inputs=inputs, outputs=outputs, api_name="segment")
    return demo


IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp")


def find_examples(paths: Sequence[str | Path]) -> list[Path]:
    """Image files given directly or found (sorted, not recursively) in the given folders."""
    found: list[Path] = []
    for item in paths:
        path = Path(item)
        if path.is_dir():
            found.extend(sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES))
        elif path.is_file():
            found.append(path)
        else:
            raise FileNotFoundError(f"--examples: {item} is neither an image file nor a folder")
    return found


def add_arguments(parser: Any) -> None:
    """The demo command's options (scripts/demo.py adds MODEL and loads it)."""
    parser.add_argument("--examples", nargs="*", default=None, help="example images (files or folders)")
    parser.add_argument("--title", default=None, help="page title (default: the model's name)")
    parser.add_argument("--alpha", type=float, default=0.5, help="opacity of the class colours")
    parser.add_argument("--host", default="127.0.0.1", help="address to serve on (0.0.0.0: all)")
    parser.add_argument("--port", type=int, default=7860)


def run(args: Any, model: Any, description: str) -> Any:
    """Build the page for `model` and serve it until interrupted; returns the Blocks."""
    examples = list(args.examples or [])
    folder = Path(str(args.model))
    if not examples and (folder / "examples").is_dir():
        examples = [folder / "examples"]
    demo = build_demo(
        model,
        title=args.title or f"{folder.name or args.model}: semantic segmentation",
        description=f"Model: `{description}`.",
        examples=find_examples(examples),
        alpha=args.alpha,
    )
    demo.launch(server_name=args.host, server_port=args.port)
    return demo
