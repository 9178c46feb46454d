"""Interactive end-to-end path of ``dctnet reconstruct`` / the Slicer logic: radiograph files in → CT file out.

Steps timed (the same calls the command makes): read the PA and lateral PNGs (``read_radiograph``),
``Reconstructor.reconstruct`` (bone suppression of both views through the CDM as one batch of two, DDIM at the
bundle's default step count, then G(Y) and G(X)), and writing the CT as NIfTI (``write_ct``). ``warm`` is a
loaded model (Slicer keeps it in memory); ``cold`` adds loading the bundle once, as a CLI call does.

The shipped small bundle is used when present; otherwise randomly initialised models of the same small
architectures (timing does not depend on weight values), and the report says so.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from _common import time_repeats

__all__ = ["end_to_end", "random_bundle"]


def random_bundle(size: str = "small"):
    """A :class:`ModelBundle` of randomly initialised models with the ``size`` preset architectures."""
    from DCTNetLib.checkpoints.bundle import ModelBundle
    from DCTNetLib.models.diffusion import CDMConfig, ConditionalDiffusion
    from DCTNetLib.models.presets import build_generator, gan_preset

    torch.manual_seed(0)
    cdm_config = getattr(CDMConfig, size)()
    preset = gan_preset(size)
    return ModelBundle(cdm=ConditionalDiffusion(cdm_config).eval(), g_raw=build_generator(preset.generator).eval(),
                       g_bs=build_generator(preset.generator).eval(), image_size=preset.image_size,
                       sampling_steps=cdm_config.sampling_steps, cdm_config=cdm_config.to_dict(),
                       gan_preset=preset.to_dict())


def _load(size: str) -> tuple[Any, str, float]:
    """(bundle, source description, load seconds): the shipped weights for "small" when present."""
    from DCTNetLib.checkpoints.bundle import default_weights_path, load_model_bundle

    start = time.perf_counter()
    if size == "small" and default_weights_path().is_file():
        return load_model_bundle(default_weights_path()), f"shipped weights {default_weights_path().name}", \
            time.perf_counter() - start
    why = "tiny preset (--quick)" if size != "small" else f"no shipped weights at {default_weights_path()}"
    return random_bundle(size), f"randomly initialised {size}-preset models ({why})", time.perf_counter() - start


def _write_radiographs(folder: Path, image_size: int) -> tuple[Path, Path]:
    """PA and lateral PNGs: DRRs of the chest phantom, 16-bit like a saved radiograph."""
    from PIL import Image

    from DCTNetLib.conventions import hu_to_unit
    from DCTNetLib.data.drr import make_drrs
    from DCTNetLib.data.phantom import chest_phantom

    unit = torch.from_numpy(np.asarray(hu_to_unit(chest_phantom(image_size)), dtype=np.float32))[None, None]
    drr = make_drrs(unit, spacing_mm=320.0 / image_size)[0].numpy()
    paths = []
    for name, image in zip(("pa.png", "lat.png"), drr):
        path = folder / name
        Image.fromarray(np.round(image * 65535).astype(np.uint16)).save(path)
        paths.append(path)
    return paths[0], paths[1]


def end_to_end(size: str = "small", repeats: int = 3, steps: int | None = None) -> dict[str, Any]:
    """Median wall time of the interactive path on the CPU.

    Args:
        size: model preset size ("small" = the shipped model; "tiny" for smoke runs).
        repeats: timed warm runs (median).
        steps: DDIM steps; ``None`` = the bundle's default.
    """
    from DCTNetLib.inference import Reconstructor
    from DCTNetLib.io.ct import write_ct
    from DCTNetLib.io.radiograph import read_radiograph

    bundle, source, load_s = _load(size)
    start = time.perf_counter()
    model = Reconstructor(bundle, device="cpu")
    load_s += time.perf_counter() - start
    steps_used = int(steps) if steps is not None else model.default_steps
    stages: dict[str, list[float]] = {}

    with tempfile.TemporaryDirectory(prefix="dctnet-bench-") as tmp:
        folder = Path(tmp)
        pa_path, lat_path = _write_radiographs(folder, model.image_size)

        def once() -> None:
            t0 = time.perf_counter()
            pa, lat = read_radiograph(pa_path), read_radiograph(lat_path)
            t1 = time.perf_counter()
            result = model.reconstruct(pa, lat, steps=steps_used, seed=0)
            t2 = time.perf_counter()
            write_ct(result.ct_hu, folder / "ct.nii.gz")
            t3 = time.perf_counter()
            for name, value in (("read_radiographs_s", t1 - t0), ("reconstruct_s", t2 - t1), ("write_ct_s", t3 - t2),
                                *result.timings.items()):
                stages.setdefault(name, []).append(value)

        timing = time_repeats(once, repeats, warmup=1)
    warm_stages = {k: round(statistics.median(v[1:] or v), 4) for k, v in stages.items()}  # drop the warm-up
    return {
        "models": source, "random_weights": source.startswith("randomly"), "preset": size,
        "ddim_steps": steps_used, "cdm_batch": 2, "image_size": model.image_size,
        "parameters": bundle.parameter_counts(),
        "warm": timing, "stages_median_s": warm_stages,
        "load_s": round(load_s, 3), "cold_s": round(load_s + timing["median_s"], 3),
        "target_s": 10.0, "meets_target": timing["median_s"] <= 10.0,
    }
