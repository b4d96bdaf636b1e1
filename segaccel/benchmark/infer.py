"""Inference memory and time: slide inference on a large image against one crop plus the output.

Slide inference should need the memory of one batch of crops (the model's activations) plus the
output-sized logit sum, whatever the image size. Each measurement runs in a fresh process (spawned),
so peaks do not mix: the model is built and the input allocated, the peak resident set is reset
(`/proc/self/clear_refs`), then the mode runs under `torch.inference_mode` and the new peak
(`VmHWM`) is read. Modes:

- `slide`: `Segmentor.slide_inference` over the whole input (the config's `test_cfg` crop and
  stride, or `--crop`/`--stride`);
- `crop+output`: the floor: output-sized buffers allocated and one forward of one crop batch added
  into them;
- `whole` (only on request, it may need far more memory): `whole_inference` on the whole input.

Linux only (reads /proc).

`--runtime onnxruntime eager compile` compares runtimes of the exported graph instead
(`segaccel.benchmark.runtimes`): images/s and peak memory of each, side by side in one run.

`--speed` (implied by `--vs transformers`) measures throughput instead, in this process: images/s of
`whole` inference (`--batch` images of `--whole-size`, logits resized to the input as
`Segmentor.inference` does) and of `slide` inference (`--batch` images of `--slide-size`, windows of
`--slide-crop` every `--slide-stride`), median of `--steps` after `--warmup`, under
`torch.inference_mode`, with the peak memory of each (CUDA `max_memory_allocated`, or the growth of
the CPU's peak RSS). `--vs transformers` adds transformers' `SegformerForSemanticSegmentation` with the
same architecture (random init; our head built with `projection="linear"`), its logits resized the
same way and its slide windows run by the same loop; for a Mask2Former config on a ResNet-50,
`Mask2FormerForUniversalSegmentation` with the same weights (`mask2former_twin`), its semantic logits
computed as ours (masks resized to the input, then class x mask).
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import statistics
import time
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F

from segaccel.benchmark import mask2former_twin
from segaccel.benchmark.memory import peak_memory_mib, reset_cpu_peak, status_kib
from segaccel.benchmark.table import format_table

DEFAULT_CONFIG = "configs/segformer/segformer_mit-b0_8xb1-160k_cityscapes-1024x1024.yaml"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "config", nargs="?", default=DEFAULT_CONFIG, help=f"model config (default {DEFAULT_CONFIG})"
    )
    parser.add_argument("--size", type=int, nargs=2, default=(2048, 4096), metavar=("H", "W"))
    parser.add_argument(
        "--crop", type=int, nargs=2, metavar=("H", "W"), help="default: the config's test_cfg"
    )
    parser.add_argument(
        "--stride", type=int, nargs=2, metavar=("H", "W"), help="default: the config's test_cfg"
    )
    parser.add_argument("--crops-per-batch", type=int, default=1, help="crops per forward in slide mode")
    parser.add_argument(
        "--modes", nargs="+", default=["crop+output", "slide"], choices=["crop+output", "slide", "whole"]
    )
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    speed = parser.add_argument_group("throughput (--speed)")
    speed.add_argument("--speed", action="store_true", help="measure images/s of whole and slide inference")
    speed.add_argument("--vs", choices=["transformers"], default=None, help="also measure this twin")
    speed.add_argument("--batch", type=int, default=2)
    speed.add_argument("--whole-size", type=int, nargs=2, default=(512, 512), metavar=("H", "W"))
    speed.add_argument("--slide-size", type=int, nargs=2, default=(1024, 1024), metavar=("H", "W"))
    speed.add_argument("--slide-crop", type=int, nargs=2, default=(512, 512), metavar=("H", "W"))
    speed.add_argument("--slide-stride", type=int, nargs=2, default=(341, 341), metavar=("H", "W"))
    speed.add_argument("--steps", type=int, default=5)
    speed.add_argument("--warmup", type=int, default=2)
    speed.add_argument("--num-classes", type=int, default=None, help="default: the config's")
    speed.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    speed.add_argument("--channels-last", action="store_true")
    speed.add_argument(
        "--runtime",
        nargs="+",
        choices=["onnxruntime", "eager", "compile"],
        help="compare these runtimes on the exported graph (whole, --batch x --whole-size; CPU)",
    )


def _measure(args: dict[str, Any], queue: Any) -> None:
    import torch

    import segaccel.models  # noqa: F401
    from segaccel.config import load_config
    from segaccel.registry import MODELS

    if args["threads"]:
        torch.set_num_threads(args["threads"])
    cfg = load_config(args["config"])["model"]
    cfg["backbone"]["pretrained"] = None
    model = MODELS.build(cfg, key="model").eval()
    test_cfg = dict(model.test_cfg)
    crop = args["crop"] or test_cfg.get("crop_size")
    stride = args["stride"] or test_cfg.get("stride")
    if crop is None or stride is None:
        raise SystemExit("the config has no slide test_cfg: give --crop and --stride")
    model.test_cfg = {"mode": "slide", "crop_size": list(crop), "stride": list(stride)}
    h, w = args["size"]
    inputs = torch.randn(1, 3, h, w)
    metas = [{"img_shape": (h, w), "pad_shape": (h, w), "ori_shape": (h, w)}]
    mode = args["mode"]
    with torch.inference_mode():  # warm-up on one small crop: one-time allocations out of the peak
        model.encode_decode(inputs[:, :, :64, :64], [{"img_shape": (64, 64), "pad_shape": (64, 64)}])
    baseline = status_kib("VmRSS")
    reset = reset_cpu_peak() is not None  # VmHWM from here on
    start = time.perf_counter()
    with torch.inference_mode():
        if mode == "slide":
            out = model.slide_inference(inputs, metas, crops_per_batch=args["crops_per_batch"])
        elif mode == "whole":
            out = model.whole_inference(inputs, metas)
        else:  # the floor: output buffers plus one forward of one crop batch, added in place
            ch, cw = min(crop[0], h), min(crop[1], w)
            out = inputs.new_zeros((1, model.out_channels, h, w))
            count = inputs.new_zeros((1, 1, h, w))
            n = max(1, args["crops_per_batch"])
            crops = inputs[:, :, :ch, :cw].expand(n, -1, -1, -1).contiguous()
            logits = model.encode_decode(crops, [{"img_shape": (ch, cw), "pad_shape": (ch, cw)}] * n)
            out[:, :, :ch, :cw] += logits[:1]
            count[:, :, :ch, :cw] += 1
    seconds = time.perf_counter() - start
    peak = status_kib("VmHWM")
    queue.put(
        {
            "mode": mode,
            "input": f"{h}x{w}",
            "crop / stride": f"{crop[0]}x{crop[1]} / {stride[0]}x{stride[1]}",
            "crops/forward": args["crops_per_batch"],
            "output MiB": round(out.numel() * out.element_size() / 2**20, 1),
            "peak growth MiB": round((peak - baseline) / 1024, 1) if reset and peak and baseline else None,
            "peak RSS MiB": round(peak / 1024, 1) if peak else None,
            "seconds": round(seconds, 2),
        }
    )


def run(args: argparse.Namespace) -> list[dict]:
    if args.runtime:
        from segaccel.benchmark.runtimes import run_runtimes

        return run_runtimes(args)
    if args.speed or args.vs:
        return run_speed(args)
    ctx = mp.get_context("spawn")
    rows = []
    for mode in args.modes:
        queue = ctx.Queue()
        params = dict(
            config=args.config,
            size=tuple(args.size),
            crop=tuple(args.crop) if args.crop else None,
            stride=tuple(args.stride) if args.stride else None,
            crops_per_batch=args.crops_per_batch,
            threads=args.threads,
            mode=mode,
        )
        proc = ctx.Process(target=_measure, args=(params, queue))
        proc.start()
        proc.join()
        if proc.exitcode != 0:
            raise RuntimeError(f"the {mode} measurement failed (exit code {proc.exitcode})")
        rows.append(queue.get())
    print(format_table(rows))
    return rows


# --- throughput ------------------------------------------------------------------------------------
def slide_windows(
    encode: Callable[[torch.Tensor], torch.Tensor],
    inputs: torch.Tensor,
    crop: tuple[int, int],
    stride: tuple[int, int],
    out_channels: int,
    crops_per_batch: int = 4,
) -> torch.Tensor:
    """`Segmentor.slide_inference`'s loop around any `encode(crops) -> logits at crop size`."""
    from segaccel.models.inference_modes import slide_windows

    n, _, h_img, w_img = inputs.shape
    windows = slide_windows((h_img, w_img), crop, stride)
    preds = inputs.new_zeros((n, out_channels, h_img, w_img))
    count = inputs.new_zeros((1, 1, h_img, w_img))
    per_forward = max(1, crops_per_batch // n)
    for start in range(0, len(windows), per_forward):
        group = windows[start : start + per_forward]
        logits = encode(torch.cat([inputs[:, :, y1:y2, x1:x2] for y1, y2, x1, x2 in group]))
        for i, (y1, y2, x1, x2) in enumerate(group):
            preds[:, :, y1:y2, x1:x2] += logits[i * n : (i + 1) * n]
            count[:, :, y1:y2, x1:x2] += 1
    return preds.div_(count)


def _peak_of_one_call(fn: Callable[[], Any], device: torch.device) -> float | None:
    peak = peak_memory_mib(fn, device)
    return None if peak is None else round(peak, 1)


def _time_alternating(fns: list[Callable[[], Any]], steps: int, device: torch.device) -> list[list[float]]:
    """Seconds of `steps` calls of each function, taking turns (one call of each in turn)."""
    times: list[list[float]] = [[] for _ in fns]
    for _ in range(steps):
        for fn, out in zip(fns, times):
            start = time.perf_counter()
            fn()
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            out.append(time.perf_counter() - start)
    return times


def run_speed(args: argparse.Namespace) -> list[dict]:
    """Images/s and peak memory of whole and slide inference (and transformers' twin with --vs)."""
    from segaccel.benchmark.train import build_ours, build_transformers

    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    train_args = argparse.Namespace(
        config=args.config,
        cfg_options=getattr(args, "cfg_options", None) or [],
        num_classes=args.num_classes,
        vs=args.vs,
    )
    from segaccel.benchmark.train import model_config

    cfg = model_config(train_args)
    memory_format = torch.channels_last if args.channels_last else torch.contiguous_format
    twins = None  # Mask2Former: ours and transformers' built together, with the same weights
    if args.vs == "transformers" and mask2former_twin.is_mask2former(cfg):
        twins = mask2former_twin.build_twins(cfg)
    ours = (twins[0] if twins else build_ours(cfg)).eval().to(device, memory_format=memory_format)
    out_channels = ours.out_channels
    g = torch.Generator().manual_seed(0)
    whole = torch.randn(args.batch, 3, *args.whole_size, generator=g).to(device)
    slide = torch.randn(args.batch, 3, *args.slide_size, generator=g).to(device)
    if args.channels_last:
        whole = whole.contiguous(memory_format=torch.channels_last)
        slide = slide.contiguous(memory_format=torch.channels_last)
    crop, stride = tuple(args.slide_crop), tuple(args.slide_stride)

    def our_encode(x: torch.Tensor) -> torch.Tensor:
        hw = tuple(x.shape[-2:])
        return ours.encode_decode(x, [{"img_shape": hw, "pad_shape": hw}] * x.shape[0])

    def our_slide() -> torch.Tensor:
        ours.test_cfg = {"mode": "slide", "crop_size": list(crop), "stride": list(stride)}
        hw = tuple(slide.shape[-2:])
        return ours.inference(slide, [{"img_shape": hw, "ori_shape": hw}] * slide.shape[0])

    candidates = [("segaccel", our_encode, our_slide)]
    if args.vs == "transformers":
        if twins:
            theirs = twins[1].eval().to(device, memory_format=memory_format)
            their_encode = mask2former_twin.transformers_encode(theirs)
        else:
            theirs = build_transformers(ours.config).eval().to(device, memory_format=memory_format)

            def their_encode(x: torch.Tensor) -> torch.Tensor:
                logits = theirs(pixel_values=x).logits
                return F.interpolate(logits, size=x.shape[-2:], mode="bilinear", align_corners=False)

        def their_slide() -> torch.Tensor:
            return slide_windows(their_encode, slide, crop, stride, out_channels)

        candidates.append(("transformers", their_encode, their_slide))

    # Per mode: every model warmed up and its peak memory taken alone, then the timed calls take
    # turns between the models, so a change in the machine's load hits them alike.
    rows = []
    with torch.inference_mode():
        for mode in ("whole", "slide"):
            fns = [
                (lambda e=encode: e(whole)) if mode == "whole" else slide_fn
                for _, encode, slide_fn in candidates
            ]
            for fn in fns:
                for _ in range(args.warmup):
                    fn()
            peaks = [_peak_of_one_call(fn, device) for fn in fns]
            times = _time_alternating(fns, args.steps, device)
            size = args.whole_size if mode == "whole" else args.slide_size
            for (name, _, _), peak, ts in zip(candidates, peaks, times):
                seconds = statistics.median(ts)
                rows.append(
                    {
                        "model": name,
                        "mode": mode,
                        "input": f"{args.batch}x3x{size[0]}x{size[1]}",
                        "s/batch (median)": round(seconds, 3),
                        "images/s": round(args.batch / seconds, 2),
                        "peak MiB": peak,
                        "_seconds": seconds,
                    }
                )
    for row in rows:
        ref = next(r for r in rows if r["mode"] == row["mode"])
        row["time vs segaccel"] = f"{row['_seconds'] / ref['_seconds']:.2f}x"
    for row in rows:
        del row["_seconds"]
    print(
        f"{args.config}: inference, {out_channels} classes, {device}, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads; slide: {crop[0]}x{crop[1]} windows every "
        f"{stride[0]}x{stride[1]}; median of {args.steps} after {args.warmup} warm-up"
    )
    print(format_table(rows))
    return rows
