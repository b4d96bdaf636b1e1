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
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import time
from typing import Any

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


def _status_kib(field: str) -> int:
    with open("/proc/self/status", encoding="ascii") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"/proc/self/status has no {field}")


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
    baseline = _status_kib("VmRSS")
    try:
        with open("/proc/self/clear_refs", "w", encoding="ascii") as f:
            f.write("5")  # reset VmHWM to the current RSS
        reset = True
    except OSError:
        reset = False
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
    peak = _status_kib("VmHWM")
    queue.put(
        {
            "mode": mode,
            "input": f"{h}x{w}",
            "crop / stride": f"{crop[0]}x{crop[1]} / {stride[0]}x{stride[1]}",
            "crops/forward": args["crops_per_batch"],
            "output MiB": round(out.numel() * out.element_size() / 2**20, 1),
            "peak growth MiB": round((peak - baseline) / 1024, 1) if reset else None,
            "peak RSS MiB": round(peak / 1024, 1),
            "seconds": round(seconds, 2),
        }
    )


def run(args: argparse.Namespace) -> list[dict]:
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
    keys = list(rows[0])
    widths = {k: max(len(k), *(len(str(r[k])) for r in rows)) for k in keys}
    print("  ".join(k.ljust(widths[k]) for k in keys))
    for r in rows:
        print("  ".join(str(r[k]).ljust(widths[k]) for k in keys))
    return rows
