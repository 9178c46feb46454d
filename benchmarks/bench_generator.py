"""Generator forward pass: DCT-Net G(Y) vs the X2CT-GAN baseline generator, 128³, batch 1, inference mode.

Each measurement runs in a fresh process (``run_all.py`` uses :func:`_common.run_in_subprocess`), so the peak
RSS of one model never includes the other's. :func:`profile_forward` explains where the time goes: a per-layer
breakdown from forward hooks (wall seconds of each decoder level's up-sampling, skip, conv and attention
modules, the encoder levels and the head) and the top torch.profiler operators. :func:`instance_norm_what_if`
measures one numerically equivalent change (instance norm computed as a group norm with one channel per group).
"""

from __future__ import annotations

import collections
import time
from typing import Any

import torch
from torch import nn

from _common import time_repeats

__all__ = ["forward", "profile_forward", "instance_norm_what_if", "build"]

# Name of the preset per (model, size): the baseline's architecture is the "x2ct-baseline" variant.
_PRESET = {"dctnet": "{size}", "x2ct": "x2ct-baseline@{size}"}


def build(model: str, size: str) -> tuple[nn.Module, int]:
    """The generator ``model`` ("dctnet" or "x2ct") of preset size ``size`` in eval mode, and its image size."""
    from DCTNetLib.models.presets import build_generator, gan_preset

    if model not in _PRESET:
        raise ValueError(f"model must be one of {sorted(_PRESET)}, got {model!r}")
    cfg = gan_preset(_PRESET[model].format(size=size)).generator
    return build_generator(cfg).eval(), cfg.image_size


def _input(image_size: int) -> torch.Tensor:
    return torch.rand(1, 2, image_size, image_size, generator=torch.Generator().manual_seed(0))


def forward(model: str = "dctnet", size: str = "full", repeats: int = 3) -> dict[str, Any]:
    """Median forward time of one generator (run this in a fresh process for a clean peak RSS).

    Args:
        model: "dctnet" or "x2ct".
        size: preset size ("full", "small", "tiny").
        repeats: timed runs after one warm-up run.
    """
    from DCTNetLib.helpers import count_parameters

    torch.manual_seed(0)
    net, n = build(model, size)
    y = _input(n)
    with torch.inference_mode():
        timing = time_repeats(lambda: net(y), repeats, warmup=1)
    return {"model": model, "preset": _PRESET[model].format(size=size), "volume": [n] * 3,
            "parameters_m": round(count_parameters(net, trainable_only=False) / 1e6, 2), **timing}


def _groups(net: nn.Module, model: str) -> list[str]:
    """Module names whose times partition the forward pass (plus the glue between them)."""
    names = dict(net.named_modules())
    if model == "x2ct":
        return [n for n in ("pa.encoder", "lat.encoder") if n in names]
    groups = ["encoder.stem", "fusion", "head"]
    groups += [n for n in names if n.count(".") == 2 and n.startswith("encoder.levels.")]
    groups += [n for n in names if n.count(".") == 2 and n.startswith("levels.")]
    return groups


def layer_breakdown(net: nn.Module, model: str, y: torch.Tensor) -> dict[str, Any]:
    """Wall seconds per module group (forward hooks) for one forward pass after a warm-up."""
    times: dict[str, float] = collections.defaultdict(float)
    handles = []
    modules = dict(net.named_modules())
    for name in _groups(net, model):
        module = modules[name]
        handles.append(module.register_forward_pre_hook(lambda m, i, name=name: times.__setitem__(
            "_start_" + name, time.perf_counter())))
        handles.append(module.register_forward_hook(lambda m, i, o, name=name: times.__setitem__(
            name, times[name] + time.perf_counter() - times["_start_" + name])))
    with torch.inference_mode():
        net(y)
        times.clear()
        start = time.perf_counter()
        net(y)
        total = time.perf_counter() - start
    for handle in handles:
        handle.remove()
    layers = {k: round(v, 4) for k, v in sorted(times.items(), key=lambda kv: -kv[1]) if not k.startswith("_")}
    encoder = sum(v for k, v in layers.items() if k.startswith(("encoder.", "pa.encoder", "lat.encoder")))
    return {"total_s": round(total, 4), "encoder_s": round(encoder, 4), "encoder_share": round(encoder / total, 3),
            "layers_s": layers, "glue_s": round(total - sum(layers.values()), 4)}


def top_ops(net: nn.Module, y: torch.Tensor, rows: int = 15) -> list[dict[str, Any]]:
    """torch.profiler operators by self CPU time, grouped by input shape, for one forward pass."""
    from torch.profiler import ProfilerActivity, profile

    with torch.inference_mode():
        net(y)
        with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
            net(y)
    events = sorted(prof.key_averages(group_by_input_shape=True), key=lambda e: -e.self_cpu_time_total)
    total = sum(e.self_cpu_time_total for e in events) or 1.0
    return [{"op": e.key, "input_shapes": str(e.input_shapes)[:120], "calls": e.count,
             "self_cpu_s": round(e.self_cpu_time_total / 1e6, 4), "share": round(e.self_cpu_time_total / total, 3)}
            for e in events[:rows]]


def profile_forward(model: str = "dctnet", size: str = "full", rows: int = 15) -> dict[str, Any]:
    """Per-layer breakdown and top operators of one generator's forward pass."""
    torch.manual_seed(0)
    net, n = build(model, size)
    y = _input(n)
    out = {"model": model, "preset": _PRESET[model].format(size=size), "breakdown": layer_breakdown(net, model, y)}
    if model == "dctnet":
        out["top_ops"] = top_ops(net, y, rows)
    return out


class _GroupInstanceNorm(nn.Module):
    """Instance norm without running statistics computed by ``F.group_norm`` with one channel per group."""

    def __init__(self, norm: nn.modules.instancenorm._InstanceNorm) -> None:
        super().__init__()
        self.channels, self.eps = norm.num_features, norm.eps
        self.weight, self.bias = (norm.weight, norm.bias) if norm.affine else (None, None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Shapes: ``(B, C, *S)`` → ``(B, C, *S)``."""
        return torch.nn.functional.group_norm(x, self.channels, self.weight, self.bias, self.eps)


def _swap_instance_norms(net: nn.Module) -> int:
    count = 0
    for parent in list(net.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, nn.modules.instancenorm._InstanceNorm) and not child.track_running_stats:
                setattr(parent, name, _GroupInstanceNorm(child))
                count += 1
    return count


def instance_norm_what_if(size: str = "full", repeats: int = 3) -> dict[str, Any]:
    """DCT-Net G(Y) with every ``InstanceNorm`` evaluated as ``group_norm(x, groups=C)`` (the same formula):
    time before/after and the largest output difference."""
    torch.manual_seed(0)
    net, n = build("dctnet", size)
    y = _input(n)
    with torch.inference_mode():
        before = time_repeats(lambda: net(y), repeats)
        reference = net(y)
        swapped = _swap_instance_norms(net)
        after = time_repeats(lambda: net(y), repeats)
        diff = float((net(y) - reference).abs().max())
    return {"norms_swapped": swapped, "instance_norm": before, "group_norm_equivalent": after,
            "speedup": round(before["median_s"] / after["median_s"], 2), "max_abs_output_diff": diff}
