"""CUDA variants of the generator forward pass and of a GAN training step (run only when a GPU is present).

Forward variants of DCT-Net G(Y) (full preset, 128³, batch 1, inference mode), each against the fp32 baseline
output: ``fp32``; ``cudnn_benchmark`` (``torch.backends.cudnn.benchmark = True``: cuDNN times its algorithms
for each shape once); ``channels_last_3d`` (NDHWC memory format for model and input); ``amp_fp16`` /
``amp_bf16`` (``torch.autocast``); ``compile`` (``torch.compile``, compile time reported apart).
Training: one small-preset GAN step in fp32 and under autocast fp16 with a ``GradScaler``.
GPU time is measured around ``torch.cuda.synchronize()``; peak memory by ``torch.cuda.max_memory_allocated``.
"""

from __future__ import annotations

import contextlib
import time
from typing import Any, Callable

import torch

from _common import skipped, time_repeats

__all__ = ["cuda_variants"]


def _synced(fn: Callable[[], Any]) -> Callable[[], Any]:
    def run() -> Any:
        out = fn()
        torch.cuda.synchronize()
        return out
    return run


def _forward_variants(size: str, repeats: int) -> dict[str, Any]:
    from bench_generator import build

    net, n = build("dctnet", size)
    net = net.cuda()
    y = torch.rand(1, 2, n, n, device="cuda")
    results: dict[str, Any] = {}
    with torch.inference_mode():
        reference = net(y).float()

    def measure(name: str, model: torch.nn.Module, inputs: torch.Tensor, autocast: torch.dtype | None = None) -> None:
        ctx = (lambda: torch.autocast("cuda", dtype=autocast)) if autocast else contextlib.nullcontext
        torch.cuda.reset_peak_memory_stats()

        def call() -> torch.Tensor:
            with torch.inference_mode(), ctx():
                return model(inputs)
        try:
            timing = time_repeats(_synced(call), repeats, warmup=2)
            diff = float((call().float() - reference).abs().max())
            results[name] = {**timing, "max_abs_diff_vs_fp32": diff,
                             "peak_gpu_mb": round(torch.cuda.max_memory_allocated() / 2**20, 1)}
        except Exception as exc:  # a variant unsupported by this GPU/driver must not hide the others
            results[name] = {"error": f"{type(exc).__name__}: {exc}"[:300]}

    torch.backends.cudnn.benchmark = False
    measure("fp32", net, y)
    torch.backends.cudnn.benchmark = True
    measure("cudnn_benchmark", net, y)
    net_cl = net.to(memory_format=torch.channels_last_3d)
    measure("channels_last_3d", net_cl, y)  # radiographs are 2D; the 3D activations follow the weights' format
    net = net.to(memory_format=torch.contiguous_format)
    measure("amp_fp16", net, y, torch.float16)
    if torch.cuda.is_bf16_supported():
        measure("amp_bf16", net, y, torch.bfloat16)
    try:
        start = time.perf_counter()
        compiled = torch.compile(net)
        with torch.inference_mode():
            _synced(lambda: compiled(y))()
        compile_s = time.perf_counter() - start
        measure("compile", compiled, y)
        results["compile"]["compile_s"] = round(compile_s, 2)
    except Exception as exc:  # inductor needs a working C++/Triton toolchain
        results["compile"] = {"error": f"{type(exc).__name__}: {exc}"[:300]}
    fp32 = results["fp32"].get("median_s")
    for value in results.values():
        if fp32 and "median_s" in value:
            value["speedup_vs_fp32"] = round(fp32 / value["median_s"], 2)
    return results


def _train_amp(size: str, repeats: int) -> dict[str, Any]:
    """One GAN step in fp32 and under autocast fp16 + GradScaler (the generator/discriminator part)."""
    from DCTNetLib.models.presets import build_discriminator, build_generator, gan_preset

    preset = gan_preset(size)
    g = build_generator(preset.generator).cuda()
    d = build_discriminator(preset.discriminator).cuda()
    opt = torch.optim.Adam(list(g.parameters()) + list(d.parameters()), lr=2e-4, betas=(0.5, 0.999))
    n = preset.image_size
    y, real = torch.rand(1, 2, n, n, device="cuda"), torch.rand(1, 1, n, n, n, device="cuda")
    scaler = torch.amp.GradScaler("cuda")
    out = {}
    for name, amp in (("fp32", False), ("amp_fp16", True)):
        def step() -> None:
            with torch.autocast("cuda", dtype=torch.float16, enabled=amp):
                fake = g(y)
                scores = d(fake, y)
                loss = 10 * torch.nn.functional.mse_loss(fake.float(), real) + sum(
                    ((s.float() - 1) ** 2).mean() for s in scores.values())
            opt.zero_grad(set_to_none=True)
            scaler.scale(loss).backward() if amp else loss.backward()
            scaler.step(opt) if amp else opt.step()
            if amp:
                scaler.update()
        torch.cuda.reset_peak_memory_stats()
        out[name] = {**time_repeats(_synced(step), repeats, warmup=1),
                     "peak_gpu_mb": round(torch.cuda.max_memory_allocated() / 2**20, 1)}
    return out


def cuda_variants(size: str = "full", train_size: str = "small", repeats: int = 5) -> dict[str, Any]:
    """All CUDA variants, or a ``skipped`` entry without a GPU."""
    if not torch.cuda.is_available():
        return skipped("torch.cuda.is_available() is False on this machine")
    from bench_drr import compare

    return {"device": torch.cuda.get_device_name(0), "generator_forward": _forward_variants(size, repeats),
            "gan_train_step": _train_amp(train_size, repeats), "drr": compare(device="cuda", repeats=repeats)}
