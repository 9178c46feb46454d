"""Child-process entry point of DCTNetReconstruction's long work, run with Slicer's own Python::

    PythonSlicer -m DCTNetSlicerLib.worker reconstruct --pa PA.npy --lat LAT.npy --output RESULT.npz \\
        [--geometry GEOMETRY.json] [--weights W] [--device auto|cpu|cuda] [--steps N] [--seed S]
    PythonSlicer -m DCTNetSlicerLib.worker bone-preview --pa PA.npy --lat LAT.npy --output PREVIEW.npz ...

Both call the same :class:`DCTNetLib.inference.Reconstructor` as ``dctnet reconstruct`` and the console logic,
so the three paths cannot drift apart. ``reconstruct`` writes :func:`DCTNetSlicerLib.results.save_result`
output; ``bone-preview`` writes only ``pa_bs`` and ``lat_bs``. Inputs are ``.npy`` arrays (exact values, written
by the module from its nodes) or any radiograph file ``read_radiograph`` accepts. Progress goes to stdout as
``{"event": "progress", "fraction": f, "message": m}`` lines (read by ``DCTNetLib.process.BackgroundProcess``);
errors print one ``error:`` line and exit with status 2, like the CLI. Imports no ``slicer``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np

__all__ = ["build_parser", "worker_args", "main", "read_input", "load_preview"]

PROG = "dctnet-slicer-worker"


def _progress(fraction: float, message: str) -> None:
    print(json.dumps({"event": "progress", "fraction": round(float(fraction), 4), "message": message}), flush=True)


def read_input(path: Path) -> np.ndarray:
    """A radiograph from ``.npy`` (``(H, W)``, clipped to [0, 1]) or an image / DICOM file.

    Raises:
        DCTNetLib.errors.InputError: unreadable file or not a 2-D image.
    """
    from DCTNetLib.errors import InputError

    if path.suffix.lower() == ".npy":
        try:
            image = np.load(path, allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise InputError(f"cannot read radiograph array {path}: {exc}") from exc
        if image.ndim != 2:
            raise InputError(f"radiograph array must be (H, W), got shape {image.shape}: {path}")
        return np.clip(image.astype(np.float32), 0.0, 1.0)
    from DCTNetLib.io.radiograph import read_radiograph

    return read_radiograph(path)


def _read_geometry(path: Path | None):
    from DCTNetLib.errors import InputError

    from .radiographs import geometry_from_json

    if path is None:
        return None
    try:
        return geometry_from_json(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise InputError(f"cannot read the reference geometry {path}: {exc}") from exc


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=f"python -m DCTNetSlicerLib.worker ({PROG})",
                                     description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="task", required=True)
    for task, help_text in (("reconstruct", "bone suppression + both generators → RESULT.npz"),
                            ("bone-preview", "bone suppression only → PREVIEW.npz (pa_bs, lat_bs)")):
        command = sub.add_parser(task, help=help_text)
        command.add_argument("--pa", type=Path, required=True, help="PA radiograph (.npy (H, W) in [0, 1], or image)")
        command.add_argument("--lat", type=Path, required=True, help="lateral radiograph")
        command.add_argument("--output", type=Path, required=True, help="result file (.npz)")
        command.add_argument("--weights", type=Path, default=None, help="model file (default: the shipped weights)")
        command.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"), help="default: auto")
        command.add_argument("--steps", type=int, default=None, help="DDIM sampling steps (default: the model's)")
        command.add_argument("--seed", type=int, default=0, help="sampling seed (default: 0)")
        if task == "reconstruct":
            command.add_argument("--geometry", type=Path, default=None,
                                 help="JSON grid of the source CT (default: a 320 mm cube centred on the origin)")
    return parser


def worker_args(task: str, pa: str | Path, lat: str | Path, output: str | Path, weights: str | Path | None = None,
                device: str = "auto", steps: int | None = None, seed: int = 0,
                geometry: str | Path | None = None) -> list[str]:
    """Arguments (after ``-m DCTNetSlicerLib.worker``) for one run; ``None`` / empty options are left out.

    Args:
        task: ``"reconstruct"`` or ``"bone-preview"``.
        pa, lat: input radiograph files.
        output: result ``.npz``.
        weights: model file. Defaults to the shipped weights.
        device: ``"auto"``, ``"cpu"`` or ``"cuda"``.
        steps: DDIM steps; ``None`` or 0 = the model's default.
        seed: sampling seed.
        geometry: JSON grid of the source CT (``reconstruct`` only).
    """
    if task not in ("reconstruct", "bone-preview"):
        raise ValueError(f"task must be 'reconstruct' or 'bone-preview', got {task!r}")
    args = [task, "--pa", str(pa), "--lat", str(lat), "--output", str(output), "--device", device, "--seed", str(int(seed))]
    if weights:
        args += ["--weights", str(weights)]
    if steps:
        args += ["--steps", str(int(steps))]
    if geometry and task == "reconstruct":
        args += ["--geometry", str(geometry)]
    return args


def run(args: argparse.Namespace) -> int:
    from DCTNetLib.inference import Reconstructor

    from .results import save_result

    _progress(0.0, "loading the model")
    model = Reconstructor.load(args.weights, device=args.device)
    pa, lat = read_input(args.pa), read_input(args.lat)
    if args.task == "bone-preview":
        _progress(0.1, "bone suppression (diffusion sampling)")
        pa_bs, lat_bs = model.suppress_bones(pa, lat, steps=args.steps, seed=args.seed)
        from DCTNetLib.io.atomic import atomic_path

        with atomic_path(args.output) as tmp:
            with open(tmp, "wb") as handle:
                np.savez(handle, pa_bs=np.asarray(pa_bs, np.float32), lat_bs=np.asarray(lat_bs, np.float32))
    else:
        result = model.reconstruct(pa, lat, steps=args.steps, seed=args.seed, geometry=_read_geometry(args.geometry),
                                   progress=lambda fraction, message: _progress(0.05 + 0.9 * fraction, message))
        save_result(result, args.output)
    _progress(1.0, "done")
    return 0


def load_preview(path: str | Path) -> SimpleNamespace:
    """``pa_bs`` and ``lat_bs`` written by ``bone-preview``."""
    with np.load(Path(path), allow_pickle=False) as data:
        return SimpleNamespace(pa_bs=data["pa_bs"], lat_bs=data["lat_bs"])


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from DCTNetLib.errors import DCTNetError

    try:
        return run(args)
    except DCTNetError as exc:
        print(f"{PROG} {args.task}: error: {exc}", file=sys.stderr, flush=True)
        return 2
    except KeyboardInterrupt:
        print(f"{PROG} {args.task}: interrupted", file=sys.stderr, flush=True)
        return 130


if __name__ == "__main__":
    sys.exit(main())
