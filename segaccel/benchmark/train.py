"""The full training step: iterations/s, images/s, peak memory and achieved FLOP/s.

One step is what the runner does for one batch: the data preprocessor (uint8 → device, normalise,
pad, stack), forward in `loss` mode, backward of the summed losses, and an AdamW step. The batch is
generated (random uint8 images of `--crop`, random labels) so no dataset is read. Each model is
warmed up (`--warmup` steps) and then timed step by step (`--steps`); the median step counts.

`--with-cp` and `--compile [MODE]` also measure our model with activation checkpointing (the
backbone's `with_cp: true`) and compiled (`torch.compile`, inductor), from the same initial weights
on the same batch: each row reports the largest difference of its per-step losses from ours and
the time of its first warm-up step (where compilation happens); a variant's FLOPs are ours (the
recomputation of checkpointed blocks is not counted as useful work).

`--vs transformers` also measures transformers' twin: for SegFormer configs
`SegformerForSemanticSegmentation` with the same architecture (random init, nothing downloaded), for
Mask2Former configs on a ResNet-50 `Mask2FormerForUniversalSegmentation` with the same architecture
and the same weights (`mask2former_twin`); the same batch, crop, precision and optimizer;
its preprocessing is the same uint8 → float normalisation done in torch. For an identical
architecture our head is built with `projection="linear"` (transformers' layout; the config's
projection is used otherwise).

FLOPs of one step are 3x those of its forward, counted by `segaccel.benchmark.flops.flop_counter`
(the count of `scripts/get_flops.py` and the docs' tables, attention included; the counter's own
count of the backward over-counts depthwise convolutions);
"% of peak" compares the achieved FLOP/s with the fp32 (or `--precision`) matmul peak measured in
the same run (square matmuls, best of several).

The models are warmed up one after the other; then the timed steps alternate between them (one
step of each in turn), so a change in the machine's load hits both alike. Peak memory, of one step
measured apart: CUDA's `max_memory_allocated`; on CPU the growth of the peak resident set (`VmHWM`,
reset through `/proc/self/clear_refs`).
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from typing import Any

import torch

from segaccel.benchmark import mask2former_twin
from segaccel.benchmark.flops import flop_counter, forward_flops
from segaccel.benchmark.memory import peak_memory_mib
from segaccel.benchmark.table import format_table
from segaccel.config import load_config
from segaccel.structures import PixelData, SegDataSample

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config", help="model config (its `model:` part is built, random init)")
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--crop", type=int, nargs=2, default=(512, 512), metavar=("H", "W"))
    parser.add_argument("--precision", choices=sorted(DTYPES), default="fp32")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--steps", type=int, default=5, help="timed steps per model (median counts)")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--num-classes", type=int, default=None, help="default: the config's")
    parser.add_argument(
        "--optimizer", choices=["for-loop", "foreach", "fused"], default="foreach", help="AdamW kernel"
    )
    parser.add_argument("--channels-last", action="store_true", help="model and inputs in channels_last")
    parser.add_argument("--vs", choices=["transformers"], default=None, help="also measure this twin")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--no-flops", action="store_true", help="skip FLOP counting and the matmul peak")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--cfg-options", nargs="*", default=[], metavar="key=value", help="dotted config overrides"
    )
    parser.add_argument(
        "--with-cp",
        action="store_true",
        help="also measure the model with activation checkpointing (backbone with_cp: true, same weights)",
    )
    parser.add_argument(
        "--compile",
        nargs="?",
        const="default",
        default=None,
        metavar="MODE",
        help="also measure torch.compile of the model (mode: default, reduce-overhead, max-autotune, ...; "
        "same weights); the first warm-up step, which compiles, is reported apart",
    )
    parser.add_argument("--compile-backend", default="inductor", help="torch.compile backend (--compile)")


# --- building the models --------------------------------------------------------------------------
def model_config(args: argparse.Namespace) -> dict[str, Any]:
    """The config's `model:` part without pretrained weights, with `--num-classes` applied."""
    cfg = dict(load_config(args.config, args.cfg_options)["model"])
    cfg["backbone"] = {**cfg["backbone"], "pretrained": None}
    if args.num_classes:
        cfg["decode_head"] = {**cfg["decode_head"], "num_classes": args.num_classes}
        for key in ("id2label", "label2id", "palette"):
            cfg.pop(key, None)
    if args.vs == "transformers":  # the same architecture as transformers' twin
        cfg.pop("auxiliary_head", None)
        if cfg["decode_head"].get("type") == "SegformerHead":
            cfg["decode_head"] = {**cfg["decode_head"], "projection": "linear"}
    cfg.setdefault("type", "Segmentor")
    return cfg


def build_ours(cfg: dict[str, Any]) -> torch.nn.Module:
    import segaccel.models  # noqa: F401  (registers the parts)
    from segaccel.registry import MODELS

    return MODELS.build(cfg, key="model")


def build_transformers(cfg: dict[str, Any]) -> torch.nn.Module:
    """transformers' SegformerForSemanticSegmentation with our config's architecture, random init."""
    try:
        from transformers import SegformerConfig, SegformerForSemanticSegmentation
    except ImportError as exc:  # pragma: no cover - optional benchmark dependency
        raise SystemExit("--vs transformers needs `pip install transformers`") from exc
    from segaccel.convert.segformer import segformer_config_to_transformers

    hf = segformer_config_to_transformers(cfg)
    hf.pop("model_type"), hf.pop("architectures")
    eps = cfg["backbone"].get("layer_norm_eps")
    if eps is not None:
        hf["layer_norm_eps"] = eps
    return SegformerForSemanticSegmentation(SegformerConfig(**hf))


def count_forward_flops(model: torch.nn.Module, shape: tuple[int, int]) -> int:
    """FLOPs of one `tensor`-mode forward of a (1, 3, H, W) input: `scripts/get_flops.py`'s count."""
    return forward_flops(model, shape)


# --- one step --------------------------------------------------------------------------------------
def make_batch(batch: int, crop: tuple[int, int], num_classes: int, seed: int) -> dict[str, Any]:
    """A collated batch as the DataLoader gives it: uint8 (3, H, W) images and labelled samples."""
    g = torch.Generator().manual_seed(seed)
    h, w = crop
    inputs, samples = [], []
    for i in range(batch):
        inputs.append(torch.randint(0, 256, (3, h, w), dtype=torch.uint8, generator=g))
        label = torch.randint(0, num_classes, (1, h, w), generator=g)
        meta = {"img_id": i, "ori_shape": (h, w), "img_shape": (h, w), "scale_factor": (1.0, 1.0)}
        meta.update(flip=False, flip_direction=None, reduce_zero_label=False)
        samples.append(SegDataSample(metainfo=meta, gt_sem_seg=PixelData(label)))
    return {"inputs": inputs, "data_samples": samples}


def our_step(model: torch.nn.Module, channels_last: bool) -> Callable[[dict[str, Any]], torch.Tensor]:
    def forward(batch: dict[str, Any]) -> torch.Tensor:
        data = model.data_preprocessor(batch, training=True)
        inputs = data["inputs"]
        if channels_last:
            inputs = inputs.contiguous(memory_format=torch.channels_last)
        losses = model(inputs, data["data_samples"], mode="loss")
        return sum(v for k, v in losses.items() if "loss" in k)

    return forward


def transformers_step(
    model: torch.nn.Module, mean: list[float], std: list[float], device: torch.device, channels_last: bool
) -> Callable[[dict[str, Any]], torch.Tensor]:
    """transformers' step with the same preprocessing: uint8 to the device, normalised there."""
    mean_t = torch.tensor(mean, device=device).view(1, 3, 1, 1)
    std_t = torch.tensor(std, device=device).view(1, 3, 1, 1)

    def forward(batch: dict[str, Any]) -> torch.Tensor:
        pixels = torch.stack(batch["inputs"]).to(device).float().sub_(mean_t).div_(std_t)
        if channels_last:
            pixels = pixels.contiguous(memory_format=torch.channels_last)
        labels = torch.stack([s.gt_sem_seg.data[0] for s in batch["data_samples"]]).to(device)
        return model(pixel_values=pixels, labels=labels).loss

    return forward


def make_optimizer(model: torch.nn.Module, impl: str) -> torch.optim.Optimizer:
    kwargs = {"foreach": impl == "foreach", "fused": True if impl == "fused" else None}
    return torch.optim.AdamW(model.parameters(), lr=6e-5, betas=(0.9, 0.999), weight_decay=0.01, **kwargs)


# --- measuring -------------------------------------------------------------------------------------
def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def matmul_peak(device: torch.device, dtype: torch.dtype, n: int = 2048, repeats: int = 10) -> float:
    """Best FLOP/s of an (n, n) @ (n, n) matmul in `dtype` on `device`."""
    if device.type == "cpu" and dtype != torch.float32:
        n = 512  # no native bf16/fp16 GEMM on most CPUs: a big one would take minutes
    a = torch.randn(n, n, device=device).to(dtype)
    b = torch.randn(n, n, device=device).to(dtype)
    inner = 10 if device.type == "cuda" else 1
    torch.mm(a, b)
    best = float("inf")
    for _ in range(repeats):
        _sync(device)
        start = time.perf_counter()
        for _ in range(inner):
            torch.mm(a, b)
        _sync(device)
        best = min(best, (time.perf_counter() - start) / inner)
    return 2 * n**3 / best


def make_step(
    model: torch.nn.Module,
    forward: Callable[[dict[str, Any]], torch.Tensor],
    batch: dict[str, Any],
    args: argparse.Namespace,
    device: torch.device,
    losses: list[float] | None = None,
) -> Callable[[], None]:
    """One full training step of `model` on `batch`: forward (autocast), backward, AdamW, zero_grad.

    Each step's loss is appended to `losses` when given (read after the step: no sync inside it)."""
    model.train()
    optimizer = make_optimizer(model, args.optimizer)
    dtype = DTYPES[args.precision]
    scaler = torch.amp.GradScaler(device.type, enabled=dtype == torch.float16)
    count = [0]

    def step() -> None:
        # Step k draws its dropout/drop-path masks from seed + k in every model, so the variants'
        # losses are comparable step by step.
        torch.manual_seed(args.seed + count[0])
        count[0] += 1
        with torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32):
            loss = forward(batch)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        optimizer.zero_grad(set_to_none=True)
        _sync(device)
        if losses is not None:
            losses.append(float(loss.detach()))

    return step


def variants(args: argparse.Namespace) -> list[tuple[str, dict[str, Any]]]:
    """`(row name, what changes)` for the variants of our model measured beside it, same weights."""
    out = []
    if args.with_cp:
        out.append(("segaccel with_cp", {"with_cp": True}))
    if args.compile:
        out.append((f"segaccel compile ({args.compile})", {"compile": args.compile}))
    return out


def step_flops(
    forward: Callable[[dict[str, Any]], torch.Tensor],
    batch: dict[str, Any],
    precision: str,
    device: torch.device,
) -> int:
    """FLOPs of one training step: 3 x the forward's (each matmul/conv has two backward ones).

    The forward is counted by `torch.utils.flop_counter` as in `scripts/get_flops.py`. Its count of
    the backward itself is not used: it over-counts grouped (depthwise) convolutions' backward ~5x
    (torch 2.14), which would inflate MiT's FLOPs.
    """
    dtype = DTYPES[precision]
    with torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32):
        with torch.no_grad(), flop_counter() as counter:  # attention included, as get_flops.py
            forward(batch)
    return 3 * counter.get_total_flops()


def run(args: argparse.Namespace) -> list[dict[str, Any]]:
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    device = torch.device(args.device)
    cfg = model_config(args)
    num_classes = int(cfg["decode_head"]["num_classes"])
    batch = make_batch(args.batch, tuple(args.crop), num_classes, args.seed)
    memory_format = torch.channels_last if args.channels_last else torch.contiguous_format

    candidates: list[tuple[str, Callable[[], tuple[torch.nn.Module, Callable]]]] = []

    twins = None  # Mask2Former: ours and transformers' built together, with the same weights
    if args.vs == "transformers" and mask2former_twin.is_mask2former(cfg):
        twins = mask2former_twin.build_twins(cfg)

    def ours() -> tuple[torch.nn.Module, Callable]:
        model = (twins[0] if twins else build_ours(cfg)).to(device, memory_format=memory_format)
        return model, our_step(model, args.channels_last)

    candidates.append(("segaccel", ours))
    reference: dict[str, torch.Tensor] = {}  # our model's initial weights, for the variants

    for label, change in variants(args):

        def variant(change: dict[str, Any] = change) -> tuple[torch.nn.Module, Callable]:
            vcfg = dict(cfg)
            if change.get("with_cp"):
                vcfg["backbone"] = {**cfg["backbone"], "with_cp": True}
            model = build_ours(vcfg)
            model.load_state_dict(reference)
            model = model.to(device, memory_format=memory_format)
            if change.get("compile"):
                # eager's random numbers in compiled code too (inductor has its own otherwise): the
                # same dropout masks, so the losses compare
                torch._inductor.config.fallback_random = True
                mode = change["compile"]
                mode = None if mode == "default" or args.compile_backend != "inductor" else mode
                model.compile(mode=mode, backend=args.compile_backend)
            return model, our_step(model, args.channels_last)

        candidates.append((label, variant))
    if args.vs == "transformers":
        pre = cfg.get("data_preprocessor") or {}
        mean, std = pre["mean"], pre["std"]

        if twins:

            def theirs() -> tuple[torch.nn.Module, Callable]:
                model = twins[1].to(device, memory_format=memory_format)
                return model, mask2former_twin.transformers_step(model, mean, std, device, args.channels_last)

        else:
            full_cfg = build_ours(cfg).config  # the architecture with every default written out

            def theirs() -> tuple[torch.nn.Module, Callable]:
                model = build_transformers(full_cfg).to(device, memory_format=memory_format)
                return model, transformers_step(model, mean, std, device, args.channels_last)

        candidates.append(("transformers", theirs))

    # Each model: warm-up, FLOPs and peak memory on its own; then the timed steps alternate between
    # the models (one step of each in turn), so a change in the machine's load hits both alike.
    # Each model's losses, step by step: the variants (same weights, same batch) must give ours.
    steps, rows = [], []
    for name, build in candidates:
        model, forward = build()
        if name == "segaccel" and not reference:
            reference.update({k: v.detach().cpu().clone() for k, v in model.state_dict().items()})
        losses: list[float] = []
        step = make_step(model, forward, batch, args, device, losses)
        first = 0.0
        for i in range(args.warmup):
            start = time.perf_counter()
            step()
            first = time.perf_counter() - start if i == 0 else first
        if name.startswith("segaccel ") and rows:  # a variant: the network's FLOPs are ours (a
            flops = rows[0]["_flops"]  # recomputation is not useful work; compile changes none)
        else:
            flops = None if args.no_flops else step_flops(forward, batch, args.precision, device)
        memory = peak_memory_mib(step, device)
        steps.append(step)
        first = first if args.warmup else None
        row = {"model": name, "_flops": flops, "_memory": memory, "_times": [], "_losses": losses}
        rows.append({**row, "_first": first})
    for _ in range(args.steps):
        for step, row in zip(steps, rows):
            start = time.perf_counter()
            step()
            row["_times"].append(time.perf_counter() - start)
    peak = None if args.no_flops else matmul_peak(device, DTYPES[args.precision])
    for row in rows:
        times, flops = row.pop("_times"), row.pop("_flops")
        median = statistics.median(times)
        row["step s (median)"] = round(median, 3)
        row["min..max s"] = f"{min(times):.3f}..{max(times):.3f}"
        row["it/s"] = round(1 / median, 3)
        row["images/s"] = round(args.batch / median, 2)
        memory = row.pop("_memory")
        row["peak MiB"] = None if memory is None else round(memory, 1)
        row["GFLOP/step"] = round(flops / 1e9, 1) if flops else None
        row["GFLOP/s"] = round(flops / median / 1e9, 1) if flops else None
        row["% matmul peak"] = round(100 * flops / median / peak, 1) if flops and peak else None
        row["_median"] = median
    if len(rows) > 1:
        for row in rows:
            row["step time vs segaccel"] = f"{row['_median'] / rows[0]['_median']:.2f}x"
    ours_losses = rows[0]["_losses"]
    for row in rows:
        del row["_median"]
        losses, first = row.pop("_losses"), row.pop("_first")
        if any(v for _, v in variants(args)):
            row["first step s"] = None if first is None else round(first, 2)
            if row["model"].startswith("segaccel"):
                diff = max((abs(a - b) for a, b in zip(losses, ours_losses)), default=None)
                row["max |loss - segaccel's|"] = None if diff is None else f"{diff:.1e}"

    h, w = args.crop
    print(
        f"{args.config}: training step, batch {args.batch} x 3 x {h} x {w}, {num_classes} classes, "
        f"{args.precision}, {device}, AdamW {args.optimizer}"
        + (", channels_last" if args.channels_last else "")
    )
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads; "
        f"median of {args.steps} steps after {args.warmup} warm-up"
    )
    if peak:
        print(f"measured {args.precision} matmul peak: {peak / 1e9:.1f} GFLOP/s")
    print(format_table(rows))
    if len(rows) > 1:
        print("step time vs segaccel > 1: that model's step is slower than ours by this factor")
    return rows
