"""GPU check for reproducing DCT-Net Table 1: what a maintainer with a CUDA machine runs once (< 10 min) and sends
back. Prints one JSON document (and writes it with ``--output``)::

    python benchmarks/gpu_check.py --output gpu_check.json

Sections:

- ``expected`` (any machine, no GPU needed, ~15 s): first-principles figures of one full-preset training step per
  Table 1 row, counted on PyTorch's ``meta`` device (shapes only, nothing computed): parameters, FLOPs of the
  whole step (:class:`torch.utils.flop_counter.FlopCounterMode`; a multiply-add = 2 FLOPs), the bytes of the
  activations autograd saves for the backward pass (``saved_tensors_hooks``), the memory that implies
  (weights + gradients + Adam's two moments = 16 bytes per trained fp32 parameter, the frozen VGG16, the saved
  activations), and the GPU hours of a 100-epoch run on LIDC-IDRI's 854 training scans at an assumed
  efficiency on the paper's RTX 3090 Ti. The CDM's step is counted the same way.
- ``cuda`` (only with a GPU; ``{"skipped": reason}`` otherwise, exit code 0):
  ``train_step``  one full-preset GAN step through the real trainer (:class:`GANTrainer.train_step`), DCT-Net in
  fp32 and with AMP (``amp=true``), the X2CT-GAN baseline at its recipe's batch 4 in fp32: median time, peak GPU
  memory, finite losses; measured GPU hours per row (the other rows scaled by their FLOPs);
  ``reconstruct``  both full-preset generators G(Y) + G(X) (inference, fp32 and AMP) and the shipped model's whole
  ``Reconstructor.reconstruct`` on CUDA; ``oom_fallback``  a real CUDA out-of-memory error (the allocator capped
  with ``torch.cuda.set_per_process_memory_fraction`` just above what the models hold) → the reconstruction
  falls back to the CPU, warns, and matches a CPU run; ``compile``  ``torch.compile`` of G(Y): compile time,
  speed-up, max abs difference, whether it helps; ``parity``  the same G(Y) weights and input on CPU and CUDA in
  fp32: max / mean abs difference with TF32 allowed (PyTorch's cuDNN default) and disabled.

``benchmarks/README.md`` explains the expected figures; ``docs/reproduction.md`` quotes the GPU hours.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any, Callable

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import machine_info, skipped  # noqa: E402

ROWS = ("x2ct-baseline", "ablation-no-dual-branch", "ablation-no-recon-gan", "ablation-no-perceptual", "dctnet")
TRAIN_CASES = 854  # LIDC-IDRI training split of DCT-Net §3.1
EPOCHS = 100       # DCT-Net §3.1 and X2CT-GAN's 50 + 50
# The paper's GPU (§3.1): NVIDIA GeForce RTX 3090 Ti, 40 TFLOPS fp32 peak (10,752 CUDA cores x 1.86 GHz x 2).
REFERENCE_GPU = {"name": "RTX 3090 Ti", "fp32_peak_tflops": 40.0}
# Assumed sustained fraction of that peak for these 3D conv nets (InstanceNorm, small channel counts at 128³ are
# memory-bound); the measured step time in the ``cuda`` section replaces this guess.
ASSUMED_EFFICIENCY = 0.25
GiB = 2 ** 30


# ---------------------------------------------------------------------------------------------- first principles
def _count(fn: Callable[[], Any]) -> tuple[float, int]:
    """FLOPs of ``fn`` and the bytes of the tensors autograd saved while it ran."""
    from torch.utils.flop_counter import FlopCounterMode

    saved = [0]

    def pack(t: torch.Tensor) -> torch.Tensor:
        saved[0] += t.numel() * t.element_size()
        return t

    with FlopCounterMode(display=False) as counter, torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn()
    return float(counter.get_total_flops()), saved[0]


def _gan_parts(variant: str, device: torch.device | str, batch: int) -> dict[str, Any]:
    """Networks, loss and inputs of one training step of ``variant@full`` (as ``GANTrainer`` builds them)."""
    from DCTNetLib.models.losses import MultiPathLoss
    from DCTNetLib.models.perceptual import VGG16Features
    from DCTNetLib.models.presets import build_discriminator, build_generator, gan_preset

    preset = gan_preset(f"{variant}@full")
    cfg = preset.loss
    with torch.device(device):
        nets = {"g_raw": build_generator(preset.generator)}
        if cfg.dual_branch:  # GANTrainer trains G(X) whenever the branch exists (gx_supervised by default)
            nets["g_bs"] = build_generator(preset.generator)
        if cfg.adversarial:
            nets["d"] = build_discriminator(preset.discriminator)
        phi = VGG16Features(random_init=True, blocks=cfg.perceptual_blocks).eval() if cfg.uses_perceptual else None
        n = preset.image_size
        inputs = {"y": torch.rand(batch, 2, n, n), "x": torch.rand(batch, 2, n, n),
                  "ct": torch.rand(batch, 1, n, n, n)}
    if phi is not None:
        for p in phi.parameters():
            p.requires_grad_(False)
    return {"preset": preset, "nets": nets, "phi": phi, "criterion": MultiPathLoss(cfg, phi), "inputs": inputs}


def _gan_step(parts: dict[str, Any]) -> tuple[Callable[[], None], Callable[[], None]]:
    """The generator phase and the discriminator phase of ``GANTrainer.train_step`` (forward + backward)."""
    import torch.nn.functional as F

    from DCTNetLib.models.losses import lsgan_loss

    nets, criterion, inputs = parts["nets"], parts["criterion"], parts["inputs"]
    cfg = parts["preset"].loss
    state: dict[str, torch.Tensor] = {}

    def generator_phase() -> None:
        y, real = inputs["y"], inputs["ct"]
        fake_y = nets["g_raw"](y)
        fake_x = nets["g_bs"](inputs["x"]) if "g_bs" in nets else None
        d_fake = None
        if "d" in nets:
            weights = {k: v.detach() for k, v in nets["d"].named_parameters()}
            d_fake = torch.func.functional_call(nets["d"], weights, (fake_y, y))
        # eq. 10b term by term (MultiPathLoss.generator_loss also logs floats, which meta tensors cannot give)
        loss = cfg.lambda_recon * F.mse_loss(fake_y, real) + cfg.lambda_proj * criterion.projection(fake_y, real)
        if d_fake is not None:
            loss = loss + cfg.lambda_adv * 0.5 * lsgan_loss(d_fake, 1.0)
        if cfg.contrastive:
            loss = loss + cfg.lambda_contrastive * criterion.contrastive(fake_y, fake_x)
        if fake_x is not None:
            loss = loss + cfg.lambda_recon * F.mse_loss(fake_x, real) + cfg.lambda_proj * criterion.projection(
                fake_x, real)
        loss.backward()
        state["fake_y"] = fake_y.detach()

    def discriminator_phase() -> None:
        if "d" not in nets:
            return
        d_real, d_fake = nets["d"](inputs["ct"], inputs["y"]), nets["d"](state["fake_y"], inputs["y"])
        (cfg.lambda_adv * 0.5 * (lsgan_loss(d_real, 1.0) + lsgan_loss(d_fake, 0.0))).backward()  # eq. 10a

    return generator_phase, discriminator_phase


def expected_gan_step(variant: str) -> dict[str, Any]:
    """First-principles figures of one full-preset training step of ``variant`` at its recipe's batch."""
    from DCTNetLib.helpers import count_parameters
    from DCTNetLib.training.recipes import recipe_for

    recipe = recipe_for(variant)
    batch = recipe.batch_size
    parts = _gan_parts(variant, "meta", batch)
    g_phase, d_phase = _gan_step(parts)
    forward_flops, _ = _count(lambda: parts["nets"]["g_raw"](parts["inputs"]["y"]))
    g_flops, g_saved = _count(g_phase)
    d_flops, d_saved = _count(d_phase)
    trained = count_parameters(*parts["nets"].values())
    frozen = count_parameters(parts["phi"], trainable_only=False) if parts["phi"] is not None else 0
    state_bytes = 16 * trained + 4 * frozen  # fp32 weights, grads, Adam m and v; frozen VGG16 weights only
    step_flops = g_flops + d_flops
    steps = math.ceil(TRAIN_CASES / batch) * EPOCHS
    seconds = step_flops / (REFERENCE_GPU["fp32_peak_tflops"] * 1e12 * ASSUMED_EFFICIENCY)
    return {
        "batch": batch, "recipe": recipe.name, "trained_params_m": round(trained / 1e6, 2),
        "g_raw_forward_gflops": round(forward_flops / 1e9, 1),
        "step_gflops": round(step_flops / 1e9, 1),
        "generator_phase_gflops": round(g_flops / 1e9, 1), "discriminator_phase_gflops": round(d_flops / 1e9, 1),
        "saved_activations_gb": round(max(g_saved, d_saved) / GiB, 2),
        "weights_grads_adam_gb": round(state_bytes / GiB, 2),
        "expected_peak_gb": round((state_bytes + max(g_saved, d_saved)) / GiB, 2),
        "steps_100_epochs": steps,
        "expected_step_s_reference_gpu": round(seconds, 3),
        "expected_gpu_hours_reference_gpu": round(steps * seconds / 3600, 1),
    }


def expected_cdm_step() -> dict[str, Any]:
    """The CDM's full-preset training step (batch 8 radiographs) and its 100-epoch cost (2 views per scan)."""
    from DCTNetLib.helpers import count_parameters
    from DCTNetLib.training.cdm_trainer import build_cdm_model
    from DCTNetLib.training.config import CDMTrainConfig

    batch = CDMTrainConfig().batch_size
    with torch.device("meta"):
        cdm = build_cdm_model("full", {})
        n = cdm.config.image_size
        x0, y = torch.rand(batch, 1, n, n), torch.rand(batch, 1, n, n)
        t = torch.zeros(batch, dtype=torch.long)
        noise = torch.rand(batch, 1, n, n)
    view = torch.zeros(batch, dtype=torch.long, device="meta")
    # the U-Net's ε/v prediction and its MSE, as ConditionalDiffusion.forward (whose input checks need values)
    flops, saved = _count(lambda: torch.nn.functional.mse_loss(cdm.model(x0, y, t, view), noise).backward())
    trained = count_parameters(cdm)
    steps = math.ceil(2 * TRAIN_CASES / batch) * EPOCHS
    seconds = flops / (REFERENCE_GPU["fp32_peak_tflops"] * 1e12 * ASSUMED_EFFICIENCY)
    return {"batch": batch, "trained_params_m": round(trained / 1e6, 2), "step_gflops": round(flops / 1e9, 1),
            "saved_activations_gb": round(saved / GiB, 2), "expected_peak_gb": round((16 * trained + saved) / GiB, 2),
            "steps_100_epochs": steps, "expected_step_s_reference_gpu": round(seconds, 3),
            "expected_gpu_hours_reference_gpu": round(steps * seconds / 3600, 1)}


def expected() -> dict[str, Any]:
    out: dict[str, Any] = {"reference_gpu": REFERENCE_GPU, "assumed_efficiency": ASSUMED_EFFICIENCY,
                           "train_cases": TRAIN_CASES, "epochs": EPOCHS, "rows": {}}
    for row in ROWS:
        try:
            out["rows"][row] = expected_gan_step(row)
        except Exception as exc:  # one row must not hide the others
            out["rows"][row] = {"error": f"{type(exc).__name__}: {exc}"[:300]}
    try:
        out["cdm"] = expected_cdm_step()
    except Exception as exc:
        out["cdm"] = {"error": f"{type(exc).__name__}: {exc}"[:300]}
    return out


# ---------------------------------------------------------------------------------------------- CUDA
def _timed(fn: Callable[[], Any], repeats: int, warmup: int = 1) -> dict[str, float]:
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return {"median_s": round(statistics.median(times), 4), "min_s": round(min(times), 4)}


def _guard(fn: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    try:
        return fn()
    except Exception as exc:  # report and continue: one failing check must not hide the others
        return {"error": f"{type(exc).__name__}: {exc}"[:500]}
    finally:
        torch.cuda.empty_cache()


def _perceptual(blocks: int) -> tuple[Any, str]:
    """φ as ``dctnet train`` builds it (``commands.train.build_perceptual``)."""
    from DCTNetLib.models.perceptual import VGG16Features

    try:
        return VGG16Features(blocks=blocks), "ImageNet VGG16"
    except Exception:  # weights not fetched: same cost with random weights
        return VGG16Features(random_init=True, blocks=blocks), "random VGG16 (ImageNet weights not fetched; same cost)"


def cuda_train_step(variant: str, amp: bool, repeats: int) -> dict[str, Any]:
    """One full-preset step of the real trainer on CUDA at the variant's recipe batch."""
    from DCTNetLib.models.presets import gan_preset
    from DCTNetLib.training.recipes import recipe_for
    from DCTNetLib.training.config import GANTrainConfig
    from DCTNetLib.training.gan_trainer import GANTrainer

    preset = gan_preset(f"{variant}@full")
    batch = recipe_for(variant).batch_size
    n = preset.image_size
    case = {"ct": torch.rand(1, n, n, n), "drr": torch.rand(2, n, n), "drr_bs": torch.rand(2, n, n), "case_id": "x"}
    perceptual, phi_note = _perceptual(preset.loss.perceptual_blocks) if preset.loss.uses_perceptual else (None, None)
    config = GANTrainConfig(size="full", amp=amp, num_workers=0, batch_size=batch, device="cuda", progress=False,
                            bs_source="target", variant=variant)
    torch.cuda.reset_peak_memory_stats()
    with tempfile.TemporaryDirectory() as run_dir:
        trainer = GANTrainer(config, run_dir, train_set=[case] * batch, val_set=None, preset=preset,
                             perceptual=perceptual, device=torch.device("cuda"))
        batch_tensors = {k: torch.stack([case[k]] * batch).cuda() for k in ("ct", "drr", "drr_bs")}
        losses: dict[str, float] = {}

        def step() -> None:
            losses.update(trainer.train_step(batch_tensors))

        timing = _timed(step, repeats)
    return {**timing, "batch": batch, "amp": amp, "peak_gpu_gb": round(torch.cuda.max_memory_allocated() / GiB, 2),
            "losses_finite": all(math.isfinite(v) for v in losses.values()), "perceptual": phi_note}


def cuda_reconstruct(repeats: int) -> dict[str, Any]:
    from DCTNetLib.inference import Reconstructor
    from DCTNetLib.models.presets import build_generator, gan_preset

    preset = gan_preset("full")
    g_raw, g_bs = build_generator(preset.generator).cuda().eval(), build_generator(preset.generator).cuda().eval()
    y = torch.rand(1, 2, 128, 128, device="cuda")
    out: dict[str, Any] = {}
    for name, amp in (("full_generators_fp32", False), ("full_generators_amp", True)):
        torch.cuda.reset_peak_memory_stats()

        def both() -> None:
            with torch.inference_mode(), torch.autocast("cuda", dtype=torch.float16, enabled=amp):
                g_raw(y)
                g_bs(y)
        out[name] = {**_timed(both, repeats), "peak_gpu_gb": round(torch.cuda.max_memory_allocated() / GiB, 2)}
    del g_raw, g_bs
    torch.cuda.empty_cache()
    model = Reconstructor.load(device="cuda")
    pa, lat = _radiographs()
    torch.cuda.reset_peak_memory_stats()
    out["shipped_model_reconstruct"] = {**_timed(lambda: model.reconstruct(pa, lat), repeats),
                                        "peak_gpu_gb": round(torch.cuda.max_memory_allocated() / GiB, 3),
                                        "generators": [k for k in ("g_raw", "g_bs") if getattr(model, k) is not None]}
    return out


def _radiographs() -> tuple[Any, Any]:
    """A PA and a lateral DRR of the built-in chest phantom (no data download needed)."""
    from DCTNetLib.data.phantom import phantom_ct
    from DCTNetLib.inference import radiographs_from_ct

    _, pa, lat = radiographs_from_ct(phantom_ct(size=64))
    return pa, lat


def cuda_oom_fallback() -> dict[str, Any]:
    """A real CUDA OOM during reconstruction → CPU fallback with a warning, same result as on the CPU."""
    import numpy as np

    from DCTNetLib.inference import Reconstructor

    pa, lat = _radiographs()
    reference = Reconstructor.load(device="cpu").reconstruct(pa, lat, seed=0).ct_unit
    model = Reconstructor.load(device="cuda")
    torch.cuda.synchronize()
    total = torch.cuda.get_device_properties(0).total_memory
    held = torch.cuda.memory_reserved()
    fraction = min(1.0, (held + 8 * 2 ** 20) / total)  # 8 MiB of head-room above the models: too little
    torch.cuda.set_per_process_memory_fraction(fraction)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            result = model.reconstruct(pa, lat, seed=0)
    finally:
        torch.cuda.set_per_process_memory_fraction(1.0)
    messages = [str(w.message) for w in caught]
    return {"memory_cap_mb": round(fraction * total / 2 ** 20, 1), "fell_back_to": str(model.device),
            "warned": any("out of memory" in m for m in messages),
            "max_abs_diff_vs_cpu_run": float(np.abs(result.ct_unit - reference).max()),
            "ok": model.device.type == "cpu" and any("out of memory" in m for m in messages)}


def cuda_compile(repeats: int) -> dict[str, Any]:
    from DCTNetLib.models.presets import build_generator, gan_preset

    net = build_generator(gan_preset("full").generator).cuda().eval()
    y = torch.rand(1, 2, 128, 128, device="cuda")
    with torch.inference_mode():
        reference = net(y)
        eager = _timed(lambda: net(y), repeats)
        start = time.perf_counter()
        compiled = torch.compile(net)
        compiled(y)
        torch.cuda.synchronize()
        compile_s = time.perf_counter() - start
        timing = _timed(lambda: compiled(y), repeats)
        diff = float((compiled(y) - reference).abs().max())
    speedup = eager["median_s"] / timing["median_s"]
    return {"eager": eager, "compiled": timing, "compile_s": round(compile_s, 1), "speedup": round(speedup, 2),
            "max_abs_diff_vs_eager": diff, "helps": speedup > 1.1}


def cuda_parity() -> dict[str, Any]:
    from DCTNetLib.models.presets import build_generator, gan_preset

    torch.manual_seed(0)
    net = build_generator(gan_preset("full").generator).eval()
    y = torch.rand(1, 2, 128, 128)
    with torch.inference_mode():
        cpu = net(y)
    net = net.cuda()
    out: dict[str, Any] = {}
    saved = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    try:
        for name, tf32 in (("tf32_allowed", True), ("tf32_disabled", False)):
            torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = tf32
            with torch.inference_mode():
                diff = (net(y.cuda()).cpu() - cpu).abs()
            out[name] = {"max_abs_diff": float(diff.max()), "mean_abs_diff": float(diff.mean())}
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved
    return out


def cuda_section(repeats: int, estimate: dict[str, Any]) -> dict[str, Any]:
    if not torch.cuda.is_available():
        return skipped("torch.cuda.is_available() is False: no CUDA GPU on this machine")
    out: dict[str, Any] = {"device": torch.cuda.get_device_name(0),
                           "memory_gb": round(torch.cuda.get_device_properties(0).total_memory / GiB, 1)}
    steps = {
        "dctnet_fp32": _guard(lambda: cuda_train_step("dctnet", False, repeats)),
        "dctnet_amp": _guard(lambda: cuda_train_step("dctnet", True, repeats)),
        "x2ct_baseline_fp32": _guard(lambda: cuda_train_step("x2ct-baseline", False, repeats)),
    }
    fp32, amp = steps["dctnet_fp32"].get("median_s"), steps["dctnet_amp"].get("median_s")
    if fp32 and amp:
        steps["amp_speedup"] = round(fp32 / amp, 2)
    out["train_step"] = steps
    out["gpu_hours_per_row_measured"] = measured_hours(steps, estimate)
    out["reconstruct"] = _guard(lambda: cuda_reconstruct(repeats))
    out["oom_fallback"] = _guard(cuda_oom_fallback)
    out["compile"] = _guard(lambda: cuda_compile(repeats))
    out["parity"] = _guard(cuda_parity)
    return out


def measured_hours(steps: dict[str, Any], estimate: dict[str, Any]) -> dict[str, Any]:
    """GPU hours of 100 epochs per row: the measured fp32 step times, other rows scaled by their FLOPs."""
    rows = estimate.get("rows", {})
    measured = {"dctnet": steps["dctnet_fp32"].get("median_s"),
                "x2ct-baseline": steps["x2ct_baseline_fp32"].get("median_s")}
    out = {}
    base = rows.get("dctnet", {}).get("step_gflops")
    for row, info in rows.items():
        if "steps_100_epochs" not in info:
            continue
        step_s = measured.get(row)
        source = "measured"
        if step_s is None and measured["dctnet"] and base:
            step_s, source = measured["dctnet"] * info["step_gflops"] / base, "scaled from dctnet by FLOPs"
        if step_s:
            out[row] = {"step_s": round(step_s, 3), "hours": round(step_s * info["steps_100_epochs"] / 3600, 1),
                        "source": source}
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output", type=Path, help="also write the JSON report here")
    parser.add_argument("--repeats", type=int, default=3, help="timed repeats per measurement (default 3)")
    parser.add_argument("--skip-expected", action="store_true", help="skip the first-principles section")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    report: dict[str, Any] = {"script": "benchmarks/gpu_check.py", "machine": machine_info()}
    report["expected"] = {} if args.skip_expected else expected()
    report["cuda"] = cuda_section(args.repeats, report["expected"])
    report["seconds"] = round(time.perf_counter() - start, 1)
    text = json.dumps(report, indent=2, default=str)
    print(text)
    if args.output:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(text + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    with contextlib.suppress(BrokenPipeError):
        sys.exit(main())
