"""What the commands write and say: reconstruct's report and --ct outputs, one-line warnings, figure colour bars,
the model card shown by ``dctnet info``."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys

import numpy as np
import pytest

from DCTNetLib import __version__, cli
from DCTNetLib.checkpoints.bundle import load_model_bundle
from DCTNetLib.io.ct import read_ct, write_ct


def test_reconstruct_from_a_ct_writes_reference_and_drrs_and_a_complete_report(tmp_path, tiny_bundle_path,
                                                                                tiny_phantom_ct, capsys):
    from PIL import Image

    from DCTNetLib.evaluation.metrics import psnr
    from DCTNetLib.inference import on_model_grid

    ct_path = write_ct(tiny_phantom_ct, tmp_path / "phantom.nii.gz")
    out = tmp_path / "recon.nii.gz"
    assert cli.main(["reconstruct", "--ct", str(ct_path), "--output", str(out), "--weights", str(tiny_bundle_path),
                     "--device", "cpu", "--seed", "3", "--progress", "json"]) == 0
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert report["inputs"] == {"ct": str(ct_path)} and report["seed"] == 3
    assert report["model"]["sha256"] == hashlib.sha256(tiny_bundle_path.read_bytes()).hexdigest()
    assert report["model"]["dctnet_version"] == __version__ and not report["model"]["shipped"]
    assert report["steps"] == report["model"]["default_steps"] >= 1
    config = load_model_bundle(tiny_bundle_path).cdm.config  # the report says which sampler made the preview
    assert report["model"]["cdm_sampler"] == {"strength": config.sampling_strength, "samples": config.sampling_samples}
    assert isinstance(report["warnings"], list)
    # the reference CT is the input on the model's grid: the report's PSNR is the one between the two files
    recon, reference = read_ct(out), read_ct(tmp_path / "recon_reference.nii.gz")
    unit = lambda hu: np.clip((hu + 1024.0) / 2500.0, 0, 1)  # noqa: E731 — the HU window of conventions.py
    expected = psnr(unit(recon.hu), on_model_grid(unit(reference.hu).astype(np.float32), recon.hu.shape))
    assert report["metrics"]["psnr"] == pytest.approx(expected, abs=0.05)
    assert set(report["metrics"]["reprojection"]) == {"pa_psnr", "pa_ncc", "pa_rank", "lat_psnr", "lat_ncc",
                                                       "lat_rank"}
    for view in ("pa", "lat"):
        image = np.asarray(Image.open(tmp_path / f"recon_{view}.png"))
        assert image.ndim == 2 and image.std() > 5  # a DRR of the phantom, not a blank image


def test_drr_then_reconstruct_with_reference_is_reconstruct_from_the_ct(tmp_path, tiny_bundle_path, tiny_phantom_ct,
                                                                      capsys):
    """``dctnet drr`` (what Slicer's "Make radiographs from CT" runs in its worker) writes the DRRs and the reference
    that ``dctnet reconstruct --ct`` makes itself; reconstructing them with ``--reference`` reports that CT's
    metrics, in the report and in the last progress event (what the Slicer module shows)."""
    from DCTNetLib.io.radiograph import read_radiograph

    ct_path = write_ct(tiny_phantom_ct, tmp_path / "phantom.nii.gz")
    assert cli.main(["drr", "--ct", str(ct_path), "--output", str(tmp_path / "drr"), "--progress", "json"]) == 0
    last = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert last["event"] == "progress" and last["fraction"] == 1.0
    files = {role: tmp_path / "drr" / name for role, name in (("pa", "pa.png"), ("lat", "lat.png"),
                                                               ("reference", "reference.nrrd"))}
    assert last["outputs"] == {role: str(path) for role, path in files.items()}
    assert set(last["geometry"]) >= {"size", "spacing_mm", "origin_lps", "direction"}
    np.testing.assert_allclose(last["centre_lps"], tiny_phantom_ct.centre_lps(), atol=1e-6)
    common = ["--weights", str(tiny_bundle_path), "--device", "cpu", "--seed", "3", "--progress", "json"]
    assert cli.main(["reconstruct", "--ct", str(ct_path), "--output", str(tmp_path / "from_ct.nii.gz"), *common]) == 0
    from_ct = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    for view in ("pa", "lat"):  # the same radiographs as --ct makes
        np.testing.assert_array_equal(read_radiograph(files[view]), read_radiograph(tmp_path / f"from_ct_{view}.png"))
    np.testing.assert_allclose(read_ct(files["reference"]).hu, read_ct(tmp_path / "from_ct_reference.nii.gz").hu,
                               atol=1e-3)
    assert cli.main(["reconstruct", "--pa", str(files["pa"]), "--lat", str(files["lat"]), "--reference",
                     str(files["reference"]), "--output", str(tmp_path / "films.nii.gz"), "--no-input-checks",
                     *common]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    report, event = json.loads(lines[-1]), json.loads(lines[-2])
    for key in ("psnr", "ssim", "mae_hu"):  # the model read 8-bit PNGs instead of the float DRRs: nearly equal
        assert report["metrics"][key] == pytest.approx(from_ct["metrics"][key], rel=1e-2)
        assert event["metrics"][key] == pytest.approx(report["metrics"][key])
    assert cli.main(["reconstruct", "--ct", str(ct_path), "--reference", str(files["reference"]),  # refused, not
                     "--output", str(tmp_path / "x.nii.gz"), *common]) == 2                    # ignored
    assert "--reference" in capsys.readouterr().err


def test_reconstruct_says_in_one_human_line_what_it_wrote_and_keeps_json_for_programs(tmp_path, tiny_bundle_path,
                                                                                      tiny_phantom_ct, capsys):
    ct_path = write_ct(tiny_phantom_ct, tmp_path / "phantom.nii.gz")
    args = ["reconstruct", "--ct", str(ct_path), "--weights", str(tiny_bundle_path), "--device", "cpu",
            "--dicom", str(tmp_path / "series")]
    assert cli.main([*args, "--output", str(tmp_path / "a.nii.gz"), "--extras"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 1 and not lines[0].startswith("{"), lines
    report = json.loads((tmp_path / "a_report.json").read_text(encoding="utf-8"))  # the JSON is in the file
    line = lines[0]
    assert line.startswith("dctnet reconstruct: ") and "a.nii.gz written in" in line and "series" in line
    assert f"PSNR {report['metrics']['psnr']:.2f} dB" in line and "a_report.json" in line
    # --progress json: events, then the report as the last line
    assert cli.main([*args[:-2], "--output", str(tmp_path / "b.nii.gz"), "--progress", "json"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert all(json.loads(line)["event"] == "progress" for line in lines[:-1])
    assert json.loads(lines[-1])["output"] == str(tmp_path / "b.nii.gz")


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="needs a machine without CUDA")
def test_device_cuda_without_a_gpu_is_one_clean_line(tmp_path, tiny_bundle_path, tiny_phantom_ct):
    ct_path = write_ct(tiny_phantom_ct, tmp_path / "phantom.nii.gz")
    result = subprocess.run([sys.executable, "-m", "DCTNetLib", "reconstruct", "--ct", str(ct_path), "--output",
                             str(tmp_path / "r.nii.gz"), "--weights", str(tiny_bundle_path), "--device", "cuda",
                             "--progress", "json"],
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    lines = [line for line in result.stderr.splitlines() if "CUDA" in line]
    assert len(lines) == 1 and "using the CPU" in lines[0], result.stderr
    assert ".py:" not in result.stderr and "RuntimeWarning" not in result.stderr
    assert "CUDA was requested" in json.loads(result.stdout.strip().splitlines()[-1])["warnings"][0]


def test_error_panels_have_a_colour_bar_in_hu(tmp_path, monkeypatch):
    from DCTNetLib.evaluation import figures

    figs = []
    monkeypatch.setattr(figures, "_save", lambda fig, path, title: figs.append(fig) or path)
    rng = np.random.default_rng(0)
    volume = rng.random((16, 16, 16), dtype=np.float32)
    image = rng.random((16, 16), dtype=np.float32)
    figures.reconstruction_figure(tmp_path / "f.png", image, image, volume, ground_truth_unit=volume * 0.9)
    every = lambda fig: [a for ax in fig.axes for a in (ax, *ax.child_axes)]  # noqa: E731 — the bar is an inset
    bars = [ax for ax in every(figs[0]) if ax.get_ylabel() == figures.ERROR_LABEL]
    assert len(bars) == 1 and bars[0].get_ylim()[1] == pytest.approx(500.0)  # 0.2 of the 2500 HU window
    figures.reconstruction_figure(tmp_path / "g.png", image, image, volume)  # no ground truth: no error bar
    assert not [ax for ax in every(figs[1]) if ax.get_ylabel() == figures.ERROR_LABEL]


def test_info_shows_the_model_card_recorded_beside_the_weights(tmp_path, tiny_bundle_path, capsys):
    bundle = shutil.copy(tiny_bundle_path, tmp_path / "model.pt")
    card = {"intended_use": "trying the pipeline", "training_data": "12 phantoms",
            "performance": {"psnr_db": 17.9, "cases": "LIDC-IDRI-0001"}, "licence": "Apache-2.0", "version": "9.9"}
    from DCTNetLib.io.safe_load import sha256_file

    manifest = {"file": "model.pt", "sha256": sha256_file(bundle), "model_card": card}  # held to it since issue 21
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    assert cli.main(["info", "--weights", str(bundle)]) == 0
    out = capsys.readouterr().out
    assert "Intended use:         trying the pipeline" in out and "psnr_db: 17.9; cases: LIDC-IDRI-0001" in out
    assert "Licence:              Apache-2.0" in out and "Version:              9.9" in out
    assert "Citation:             not recorded in the manifest" in out
    assert out.strip().splitlines()[-1].lstrip().startswith("total")  # the parameter table still follows
    # the shipped manifest: fields it lacks in model_card come from its recipe fields
    assert cli.main(["info", "--json"]) == 0
    shipped = json.loads(capsys.readouterr().out)["model_card"]
    from DCTNetLib.checkpoints.bundle import default_manifest_path

    manifest = json.loads(default_manifest_path().read_text())
    assert shipped["sha256"] == manifest["sha256"]
    for name in manifest.get("training_cts", {}):
        assert name in json.dumps(shipped["training_data"])
    (tmp_path / "manifest.json").write_text("[1, 2]")
    assert cli.main(["info", "--weights", str(bundle)]) == 2
    assert "not a JSON object" in capsys.readouterr().err


def test_batch_mode_reconstructs_every_case_of_a_csv_and_reports_failures(tmp_path, tiny_bundle_path, capsys):
    from PIL import Image

    from DCTNetLib.inference import Reconstructor
    from DCTNetLib.io.radiograph import read_radiograph

    from DCTNetLib.data.phantom import phantom_ct
    from DCTNetLib.inference import radiographs_from_ct

    for seed, case in enumerate(("a", "b")):  # chest DRRs: the input checks refuse noise
        _, pa, lat = radiographs_from_ct(phantom_ct(size=32, seed=seed))
        (tmp_path / "cases" / case).mkdir(parents=True)
        for view, image in (("pa", pa), ("lat", lat)):
            Image.fromarray((image * 255).round().astype(np.uint8)).save(tmp_path / "cases" / case / f"{view}.png")
    (tmp_path / "list.csv").write_text("id,pa,lat\nfirst,cases/a/pa.png,cases/a/lat.png\n"
                                       "broken,cases/a/pa.png,cases/missing.png\n")
    out = tmp_path / "volumes"
    args = ["reconstruct", "--weights", str(tiny_bundle_path), "--device", "cpu", "--output", str(out)]
    assert cli.main([*args, "--batch", str(tmp_path / "list.csv")]) == 1  # one case failed
    report = json.loads((out / "batch_report.json").read_text())
    assert [(c["id"], c["status"]) for c in report["cases"]] == [("first", "done"), ("broken", "failed")]
    assert "missing.png" in report["cases"][1]["error"] and not (out / "broken.nii.gz").exists()
    # the batch result is the single-case result of the same inputs, seed and steps
    model = Reconstructor.load(tiny_bundle_path, "cpu")
    single = model.reconstruct(read_radiograph(tmp_path / "cases/a/pa.png"), read_radiograph(tmp_path / "cases/a/lat.png"),
                               seed=0)
    np.testing.assert_allclose(read_ct(out / "first.nii.gz").hu, single.ct_hu.hu, atol=1e-3)
    # a folder of case folders; existing outputs are not overwritten
    assert cli.main([*args, "--batch", str(tmp_path / "cases")]) == 2 and "exists" in capsys.readouterr().err
    assert cli.main([*args, "--batch", str(tmp_path / "cases"), "--overwrite"]) == 0
    assert sorted(p.name for p in out.glob("*.nii.gz")) == ["a.nii.gz", "b.nii.gz", "first.nii.gz"]
    # --reference is one CT for one case: refused with --batch before anything is written (it was ignored)
    capsys.readouterr()
    refused = cli.main([*args, "--batch", str(tmp_path / "cases"), "--overwrite", "--reference",
                        str(out / "a.nii.gz"), "--output", str(tmp_path / "other")])
    assert refused == 2 and "--reference" in capsys.readouterr().err and not (tmp_path / "other").exists()


def test_the_manifest_script_writes_a_model_card_that_info_shows(repo_root, tmp_path, tiny_bundle_path, capsys):
    import importlib.util

    spec = importlib.util.spec_from_file_location("write_weights_manifest",
                                                  repo_root / "scripts" / "write_weights_manifest.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    demo = {"case": "LIDC-IDRI-0001", "metrics": {"psnr": 17.912, "ssim": 0.3671, "lpips": 0.4789, "mae_hu": 219.4,
                                                  "reprojection": {"pa_ncc": 0.901, "lat_ncc": 0.934}}}
    card = script.model_card({"chest_phantom": "train"}, {"train": 39, "val": 4, "test": 5}, "abc1234", demo,
                             {"licence": "CC0"}, distinct={"all": 14, "real": 10})
    validation = card["performance"]["validation"]
    assert validation["psnr_db"] == 17.912 and validation["reprojection_ncc"] == {"pa": 0.901, "lat": 0.934}
    assert "not measured" in card["performance"]["test"]  # no --test-eval given
    assert "not measured" in card["performance"]["bone_suppression_test"]  # no --cdm-test-report given
    report = {"steps": 4, "strength": 1.0, "samples": 4, "drr": {"cases": {"a": {}, "b": {}}, "mean": {
        "ssim_preview": 0.98274, "ssim_input": 0.97468, "psnr_preview": 39.981, "psnr_input": 34.612}}}
    cdm = script.performance_of_cdm(report)
    assert cdm["cases"] == ["a", "b"] and cdm["sampler"] == {"steps": 4, "strength": 1.0, "samples": 4}
    assert (cdm["ssim"], cdm["ssim_unchanged_input"], cdm["psnr_db"]) == (0.9827, 0.9747, 39.98)
    assert card["licence"] == "CC0" and "abc1234" in card["version"] and __version__ in card["version"]
    assert "14 distinct CTs (10 real), 39 train / 4 val / 5 test" in card["training_data"]
    bundle = shutil.copy(tiny_bundle_path, tmp_path / "model.pt")
    (tmp_path / "manifest.json").write_text(json.dumps({"file": "model.pt", "model_card": card}))
    assert cli.main(["info", "--weights", str(bundle), "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)["model_card"]
    assert shown["performance"] == card["performance"] and shown["intended_use"] == script.INTENDED_USE


def test_the_last_progress_event_carries_the_demonstration_note_for_programs(tmp_path, tiny_bundle_path,
                                                                              tiny_phantom_ct, capsys):
    """The Slicer module shows what the final JSON event says the user must know: with the shipped model the
    demonstration-model note, with one's own weights nothing."""
    from DCTNetLib.io.radiograph import write_png
    from DCTNetLib.inference import radiographs_from_ct

    _, pa, lat = radiographs_from_ct(tiny_phantom_ct)
    write_png(tmp_path / "pa.png", pa)
    write_png(tmp_path / "lat.png", lat)
    base = ["reconstruct", "--pa", str(tmp_path / "pa.png"), "--lat", str(tmp_path / "lat.png"), "--device", "cpu",
            "--progress", "json"]
    finals = {}
    for name, extra in (("shipped", []), ("own", ["--weights", str(tiny_bundle_path)])):
        assert cli.main([*base, "--output", str(tmp_path / f"{name}.nii.gz"), *extra]) == 0
        events = [json.loads(line) for line in capsys.readouterr().out.splitlines() if '"event"' in line]
        finals[name] = events[-1]
        assert finals[name]["fraction"] == 1.0 and str(tmp_path / f"{name}.nii.gz") in finals[name]["outputs"].values()
    assert len(finals["shipped"]["notes"]) == 1 and "trained on DRRs" in finals["shipped"]["notes"][0]
    assert finals["own"]["notes"] == []
    assert any("cannot" in w or "unknown" in w for w in finals["own"]["warnings"])  # PNG films: nothing to check
