"""Thread settings on a busy CPU: the small models under torch's default threads, one thread, and OpenMP's
passive wait policy.

torch's CPU kernels run in an OpenMP team of ``torch.get_num_threads()`` threads (default: one per core). GNU
OpenMP (libgomp, bundled with the torch wheels) spins at the end of every parallel region before sleeping
(``OMP_WAIT_POLICY`` unset = spin for a while; ``PASSIVE`` = sleep at once; OpenMP 4.5 spec §4.8). When other
processes occupy the cores (a shared workstation, or Slicer's own render and Qt threads on a laptop), a team
member that is descheduled makes the others spin until the scheduler runs it again, so every small kernel can
cost a scheduler time slice. Each configuration runs in its own process (the policy is read when torch loads).
"""

from __future__ import annotations

from typing import Any

import torch

from _common import time_repeats

__all__ = ["small_models", "CONFIGS"]

# name → (torch threads or None for the default, environment changes; None unsets a variable)
CONFIGS: dict[str, tuple[int | None, dict[str, str | None]]] = {
    "default_threads": (None, {"OMP_WAIT_POLICY": None}),
    "one_thread": (1, {"OMP_WAIT_POLICY": None}),
    "default_threads_passive_wait": (None, {"OMP_WAIT_POLICY": "PASSIVE"}),
}


def small_models(size: str = "small", repeats: int = 3, steps: int = 10) -> dict[str, Any]:
    """Median times of one G(Y) forward and one ``steps``-step DDIM bone suppression of a PA/lateral pair."""
    from DCTNetLib.models.diffusion import CDMConfig, ConditionalDiffusion
    from DCTNetLib.models.presets import build_generator, gan_preset

    torch.manual_seed(0)
    preset = gan_preset(size)
    g = build_generator(preset.generator).eval()
    cdm = ConditionalDiffusion(getattr(CDMConfig, size)()).eval()
    n = preset.image_size
    y = torch.rand(1, 2, n, n)
    with torch.inference_mode():
        forward = time_repeats(lambda: g(y), repeats)
        sampling = time_repeats(lambda: cdm.suppress_bones(y, steps=steps, seed=0), repeats)
    return {"preset": size, "generator_forward": forward, f"cdm_ddim_{steps}_steps": sampling}
