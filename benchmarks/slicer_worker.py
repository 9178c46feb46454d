"""How long a Reconstruct click takes in DCTNet Reconstruction, measured on the Slicer-side logic (MRML of the
``slicer-core`` wheel, no Qt): the first click starts the ``dctnet worker`` process (Python, torch, the model), the
next clicks reuse it. Prints one JSON report.

Run it in the slicer-core venv of ``Testing/SlicerCore/run.sh`` (the worker's interpreter needs torch)::

    DCTNET_PYTHON=.venv/bin/python .venv-slicer/bin/python benchmarks/slicer_worker.py --clicks 3

Per click: the wall time of ``DCTNetSlicerLib.reconstruction.reconstruct`` (radiograph nodes in, output nodes in the
scene) and the CPU time the worker used meanwhile (user + system, all its threads; less sensitive than the wall
time to other work on a shared machine). The target of issue 20: a second click ≤ 1.5 s on a 2-core CPU, set
before the default registration (session 15) and atlas prior (session 16) were added to every reconstruction;
``--steps-after no-registration`` times a click without them.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "DCTNetReconstruction"))


def _images(size: int = 256):
    import numpy as np

    rows, cols = np.mgrid[0:size, 0:size] / (size - 1)
    rng = np.random.default_rng(0)
    pair = []
    for shift in (0.0, 0.15):
        image = np.exp(-(((rows - 0.5) / 0.3) ** 2 + ((cols - 0.5 - shift) / 0.25) ** 2)) + 0.05 * rng.random(rows.shape)
        pair.append(((image - image.min()) / np.ptp(image)).astype(np.float32))
    return pair


def _cpu_s(pid: int | None) -> float | None:
    try:
        import psutil

        process = psutil.Process(pid)
        total = 0.0
        for each in [process, *process.children(recursive=True)]:
            times = each.cpu_times()
            total += times.user + times.system
        return total
    except Exception:  # no psutil, or the process is gone
        return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clicks", type=int, default=3, help="reconstructions in a row (default 3)")
    parser.add_argument("--weights", help="model file (default: the shipped model)")
    parser.add_argument("--steps", type=int, help="DDIM steps (default: the model's)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--steps-after", choices=("default", "no-atlas", "no-registration"), default="default",
                        help="what follows the generators: the default registration and atlas prior, the "
                             "registration alone (the box 'mix in real chest anatomy' off), or neither (the box "
                             "'register' off)")
    args = parser.parse_args(argv)

    import slicer

    from DCTNetSlicerLib import nodes, reconstruction

    scene = slicer.vtkMRMLScene()
    slicer.mrmlScene = scene
    pa_image, lat_image = _images()
    pa = nodes.radiograph_to_node(pa_image, "PA", "pa", scene)
    lat = nodes.radiograph_to_node(lat_image, "LAT", "lat", scene)
    options = reconstruction.Options(weights=args.weights, device=args.device, steps=args.steps,
                                     register=args.steps_after != "no-registration",
                                     mix_atlases=args.steps_after == "default")
    clicks, made = [], {}
    for number in range(args.clicks):
        worker = reconstruction.worker()
        pid = worker.process.session_pid or worker.process.pid if worker.alive else None
        cpu_before = _cpu_s(pid) if pid else 0.0
        start = time.perf_counter()
        made, _ = reconstruction.reconstruct(pa, lat, options, scene, existing=made, timeout_s=3600)
        wall = time.perf_counter() - start
        pid = worker.process.session_pid or worker.process.pid
        cpu_after = _cpu_s(pid)
        clicks.append({"click": number + 1, "wall_s": round(wall, 3), "worker_pid": pid,
                       "worker_cpu_s": None if cpu_after is None or cpu_before is None
                       else round(cpu_after - cpu_before, 3)})
    reconstruction.shutdown_workers()
    report = {"benchmark": "slicer_worker", "clicks": clicks,
              "second_click_s": clicks[1]["wall_s"] if len(clicks) > 1 else None, "target_s": 1.5,
              "same_worker": len({c["worker_pid"] for c in clicks}) == 1,
              "weights": args.weights or "shipped", "device": args.device, "steps_after": args.steps_after,
              "machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                          "load_average": os.getloadavg() if hasattr(os, "getloadavg") else None}}
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
