"""One entry point: DCTNet Reconstruction runs the public ``dctnet reconstruct`` command, with machine-readable
progress (``--progress json``), and reads back the files it lists.

The node side of the same run is tested on real MRML in ``Testing/SlicerCore/test_reconstruction_mrml.py``; here
the command itself, as a child process, exactly as the module starts it.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[2]


def parameter_node_fields() -> set[str]:
    """The fields of DCTNetReconstruction.py's parameter node (``DCTNetReconstructionParameterNode``), read
    without Slicer."""
    tree = ast.parse((REPO / "DCTNetReconstruction" / "DCTNetReconstruction.py").read_text(encoding="utf-8"))
    cls = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "DCTNetReconstructionParameterNode")
    return {s.target.id for s in cls.body if isinstance(s, ast.AnnAssign)}


def _radiographs(folder: Path) -> tuple[Path, Path]:
    """PA and lateral DRRs of a coarse chest phantom as TIFF files (the input checks refuse blobs and noise)."""
    import SimpleITK as sitk

    from DCTNetLib.data.phantom import phantom_ct
    from DCTNetLib.inference import radiographs_from_ct

    _, pa, lat = radiographs_from_ct(phantom_ct(size=32))
    paths = []
    for name, image in (("pa", pa), ("lat", lat)):
        image = np.asarray(image, dtype=np.float32)
        path = folder / f"{name}.tif"
        sitk.WriteImage(sitk.GetImageFromArray(image), str(path))
        paths.append(path)
    return paths[0], paths[1]


def _run(args: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "DCTNetLib", *args], capture_output=True, text=True, timeout=600,
                          cwd=REPO)


def _events(stdout: str) -> list[dict]:
    from DCTNetSlicerLib.process import parse_event

    return [e for e in (parse_event(line) for line in stdout.splitlines()) if e is not None]


def test_the_module_command_line_is_accepted_by_dctnet(tmp_path):
    from DCTNetLib.cli import build_parser
    from DCTNetSlicerLib.reconstruction import Options, command_args

    args = command_args(tmp_path / "pa.png", tmp_path / "lat.tif", tmp_path / "ct.nrrd",
                        Options(weights=str(tmp_path / "w.pt"), device="cpu", steps=7, seed=3))
    parsed = build_parser().parse_args(args)
    assert parsed.command == "reconstruct" and parsed.progress == "json" and parsed.extras
    assert (parsed.steps, parsed.seed, parsed.device, parsed.weights) == (7, 3, "cpu", tmp_path / "w.pt")
    default = build_parser().parse_args(command_args("a.png", "b.png", "c.nrrd"))
    assert default.steps is None and default.weights is None and default.device == "auto"
    assert not default.refine  # the command's default: no refinement
    assert build_parser().parse_args(command_args("a.png", "b.png", "c.nrrd", Options(refine=True))).refine
    assert not build_parser().parse_args(command_args("a.png", "b.png", "c.nrrd", Options())).no_registration
    assert build_parser().parse_args(command_args("a.png", "b.png", "c.nrrd", Options(register=False))).no_registration
    refined = build_parser().parse_args(command_args("a.png", "b.png", "c.nrrd", Options(refine=True, register=False)))
    assert refined.refine and not refined.no_registration  # --refine brings its own registration
    assert not default.no_atlas  # the default atlas prior is on
    registered = build_parser().parse_args(command_args("a.png", "b.png", "c.nrrd", Options(mix_atlases=False)))
    assert registered.no_atlas and not registered.no_registration
    neither = build_parser().parse_args(command_args("a.png", "b.png", "c.nrrd",
                                                     Options(register=False, mix_atlases=False)))
    assert neither.no_registration and not neither.no_atlas  # --no-registration already leaves the prior out
    assert default.fusion == "mean"  # the command's default output: the mean of G(Y) and G(X)
    assert build_parser().parse_args(command_args("a.png", "b.png", "c.nrrd", Options(fusion="raw"))).fusion == "raw"
    assert build_parser().parse_args(["reconstruct", "--pa", "a", "--lat", "b", "--output", "c.nrrd"]).progress == "log"


def test_progress_json_reports_every_stage_and_the_files_written(tmp_path, tiny_bundle_path):
    from DCTNetSlicerLib import results
    from DCTNetSlicerLib.reconstruction import Options, command_args

    pa, lat = _radiographs(tmp_path)
    (tmp_path / "out").mkdir()
    out = _run(command_args(pa, lat, tmp_path / "out" / "ct.nrrd",
                            Options(weights=str(tiny_bundle_path), device="cpu", steps=2)))
    assert out.returncode == 0, out.stderr[-2000:]
    events = _events(out.stdout)
    assert events and all(e["event"] == "progress" and isinstance(e["message"], str) for e in events)
    fractions = [e["fraction"] for e in events]
    assert fractions[0] == 0.0 and fractions[-1] == 1.0 and fractions == sorted(fractions)
    messages = [e["message"] for e in events]
    assert len(set(messages)) >= 5 and "loading the model" in messages  # one line per stage, not one at the end
    outputs = events[-1]["outputs"]
    assert all(Path(path).is_file() and Path(path).parent == tmp_path / "out" for path in outputs.values())
    # the roles the command writes are the ones the module knows how to show and where to keep them
    volumes, images = results.read_outputs(outputs)
    assert set(volumes) == set(results.VOLUME_ROLES) and set(images) == set(results.IMAGE_ROLES)
    assert set(results.OUTPUT_PARAMETERS) == set(results.VOLUME_ROLES) | set(results.IMAGE_ROLES)
    assert set(results.OUTPUT_PARAMETERS.values()) <= parameter_node_fields()  # fields of the parameter node
    assert volumes["ct"].hu.shape == (32, 32, 32) and volumes["branch_difference"].hu.min() >= 0.0
    np.testing.assert_allclose(volumes["ct"].spacing, (10.0,) * 3)  # the tiny model's 32³ over 320 mm
    assert images["pa_bs"].shape == (32, 32)
    # stdout also carries the command's summary line, which is not an event
    assert json.loads(out.stdout.strip().splitlines()[-1])["output"] == str(tmp_path / "out" / "ct.nrrd")


def test_progress_log_prints_no_events_and_errors_stay_one_line(tmp_path, tiny_bundle_path):
    pa, lat = _radiographs(tmp_path)
    out = _run(["reconstruct", "--pa", str(pa), "--lat", str(lat), "--output", str(tmp_path / "ct.nrrd"),
                "--weights", str(tiny_bundle_path), "--device", "cpu", "--steps", "2"])
    assert out.returncode == 0, out.stderr[-2000:]
    assert _events(out.stdout) == []
    failed = _run(["reconstruct", "--pa", str(pa), "--lat", str(lat), "--output", str(tmp_path / "x.nrrd"),
                   "--weights", str(tmp_path / "missing.pt"), "--progress", "json"])
    assert failed.returncode == 2 and "error:" in failed.stderr and "missing.pt" in failed.stderr
    assert all(e["fraction"] < 1.0 for e in _events(failed.stdout))  # never reports "done" for a failed run


def test_no_private_worker_only_the_public_command_through_dctnet_worker():
    """The old private worker of the Slicer glue stays gone: the glue's worker process is ``dctnet worker``, which
    runs the public ``dctnet reconstruct`` and nothing else."""
    assert not (REPO / "DCTNetReconstruction" / "DCTNetSlicerLib" / "worker.py").exists()
    for path in [*(REPO / "DCTNetReconstruction" / "DCTNetSlicerLib").glob("*.py"),
                 REPO / "DCTNetReconstruction" / "DCTNetReconstruction.py", REPO / "DCTNetReconstruction" / "CMakeLists.txt"]:
        assert "DCTNetSlicerLib.worker" not in path.read_text(encoding="utf-8"), path
        assert "DCTNetSlicerLib/worker.py" not in path.read_text(encoding="utf-8"), path


def test_a_worker_request_is_the_public_command_and_the_model_stays_loaded(tmp_path, tiny_bundle_path):
    """Requests to ``dctnet worker`` write what ``dctnet reconstruct`` writes, byte for byte, print the same events,
    load the model once for several requests, and refuse anything but reconstruct in one line."""
    pa, lat = _radiographs(tmp_path)
    common = ["--pa", str(pa), "--lat", str(lat), "--weights", str(tiny_bundle_path), "--device", "cpu",
              "--steps", "2", "--extras", "--no-figure", "--progress", "json"]
    direct = _run(["reconstruct", *common, "--output", str(tmp_path / "direct.nrrd")])
    assert direct.returncode == 0, direct.stderr
    requests = [{"args": ["reconstruct", *common, "--output", str(tmp_path / f"w{i}.nrrd")]} for i in range(2)]
    preview = [arg for arg in common if arg not in ("--extras", "--no-figure")] + ["--images-only"]
    requests += [{"args": ["reconstruct", *preview, "--output", str(tmp_path / "preview.nrrd")]},
                 {"args": ["train", "--help"]}]
    code = ("import sys, DCTNetLib.inference as inf; real = inf.Reconstructor.load.__func__\n"
            "def counted(cls, *a, **k):\n    print('MODEL LOADED', flush=True)\n    return real(cls, *a, **k)\n"
            "inf.Reconstructor.load = classmethod(counted)\nfrom DCTNetLib.cli import main\nsys.exit(main(['worker']))")
    served = subprocess.run([sys.executable, "-c", code], input="".join(json.dumps(r) + "\n" for r in requests),
                            capture_output=True, text=True, timeout=600, cwd=REPO)
    assert served.returncode == 0, served.stderr
    exits = [e["returncode"] for e in _events(served.stdout) if e["event"] == "exit"]
    assert exits == [0, 0, 0, 2] and served.stdout.count("MODEL LOADED") == 1
    assert "a worker runs only reconstruct and drr, not 'train'" in served.stderr
    for role in ("", "_uncertainty", "_from_bone_suppressed", "_branch_difference"):
        assert (tmp_path / f"w0{role}.nrrd").read_bytes() == (tmp_path / f"direct{role}.nrrd").read_bytes()
    assert not (tmp_path / "w0_figure.png").exists() and not (tmp_path / "preview.nrrd").exists()
    assert {Path(p).name for p in [e for e in _events(served.stdout) if e.get("outputs")][-1]["outputs"].values()} \
        == {"preview_pa_bone_suppressed.png", "preview_lat_bone_suppressed.png"}
    first = [e["message"] for e in _events(served.stdout)[: len(_events(direct.stdout)) + 1] if e["event"] == "progress"]
    assert first == [e["message"] for e in _events(direct.stdout) if e["event"] == "progress"]


@pytest.mark.parametrize("mode", ["log", "json"])
def test_progress_reporter_modes(mode, capsys, caplog):
    import logging

    from DCTNetLib.commands.reconstruct import progress_reporter

    with caplog.at_level(logging.DEBUG, logger="dctnet.reconstruct"):
        progress_reporter(mode)(0.25, "half of a half", outputs={"ct": Path("x.nrrd")})
    printed = capsys.readouterr().out.strip()
    if mode == "json":
        assert json.loads(printed) == {"event": "progress", "fraction": 0.25, "message": "half of a half",
                                       "outputs": {"ct": "x.nrrd"}}
    else:
        assert printed == "" and "25% half of a half" in caplog.text
