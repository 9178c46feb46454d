"""Issue 15, reproduction kit: ``scripts/reproduce_table1.sh DATA_ROOT OUT --dry-run`` runs the whole Table 1
chain (prepare → CDM → five rows → evaluation → table) on two real LIDC-IDRI scans, resumes after an interruption,
and runs its trainings under torchrun with ``--nproc``.

The two scans are the shared LIDC-IDRI-0002 and -0003 written as a TCIA-style DICOM download (every other voxel
in-plane kept at a quarter, to keep the test quick); the product never reads the shared folder itself.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import write_dicom_series
from DCTNetLib.commands import reproduce

REPO_ROOT = Path(__file__).resolve().parents[2]
SCRIPT = REPO_ROOT / "scripts" / "reproduce_table1.sh"
SCANS = ("LIDC-IDRI-0002", "LIDC-IDRI-0003")


@pytest.fixture(scope="module")
def data_root(shared_data, tmp_path_factory) -> Path:
    """The two shared LIDC-IDRI CTs as a TCIA download (DICOM series in patient/study/series folders)."""
    from DCTNetLib.io.ct import CTVolume, read_ct

    root = tmp_path_factory.mktemp("lidc_download")
    for name in SCANS:
        ct = read_ct(shared_data / "ct" / f"{name}.nii.gz")
        step = (2, 4, 4)  # 512² → 128² in-plane, every second slice: the DRRs are rendered at 128² anyway
        small = CTVolume(hu=ct.hu[::step[0], ::step[1], ::step[2]].copy(),
                         spacing=tuple(s * k for s, k in zip(ct.spacing, step)), origin_lps=ct.origin_lps,
                         direction=ct.direction, source=name)
        write_dicom_series(small, root / "manifest-1" / "LIDC-IDRI" / name / "01-01-2000-NA-NA-1" / "3000001.0-NA-1")
    return root


def _script(*argv: str, timeout: float = 1200) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHON": sys.executable, "OMP_NUM_THREADS": "1"}
    return subprocess.run(["bash", str(SCRIPT), *argv], capture_output=True, text=True, env=env, timeout=timeout,
                          check=False, encoding="utf-8")


@pytest.fixture(scope="module")
def dry_run(data_root, tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("table1") / "out"
    result = _script(str(data_root), str(out), "--dry-run", "--device", "cpu", "--workers", "1")
    return {"out": out, "result": result, "data_root": data_root}


def test_dry_run_fills_every_implemented_row_beside_the_papers_numbers(dry_run):
    result, out = dry_run["result"], dry_run["out"]
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    table = (out / "table1.md").read_text(encoding="utf-8")
    assert "DRY RUN" in table and "PSNR, X2CT-GAN variant" in table
    payload = json.loads((out / "table1.json").read_text(encoding="utf-8"))
    for method, variant, p_psnr, p_ssim, p_lpips in reproduce.PAPER_TABLE1:
        line = next(row for row in table.splitlines() if row.startswith(f"| {method} |"))
        assert f"{p_psnr[0]:.3f} ± {p_psnr[1]:.3f}" in line and f"{p_lpips[0]:.3f} ± {p_lpips[1]:.3f}" in line
        if variant is None:
            assert "not implemented" in line
            continue
        row = payload["rows"][variant]
        assert row["cases"] == 2 and row["preset"] == "tiny" and row["amp"] is False
        metrics = row["metrics"]
        assert all(metrics[k] is not None for k in ("psnr", "psnr_x2ct", "ssim", "lpips"))
        assert metrics["psnr_x2ct"]["mean"] != metrics["psnr"]["mean"]  # both PSNR variants, side by side
        assert f"{metrics['psnr']['mean']:.3f}" in line and f"{metrics['psnr_x2ct']['mean']:.3f}" in line
        assert row["params_m"] > 0
    rows = payload["rows"]
    assert rows["x2ct-baseline"]["recipe"] == "x2ct" and rows["x2ct-baseline"]["global_batch"] == 4
    assert rows["x2ct-baseline"]["betas"] == [0.5, 0.99]
    assert {rows[r]["recipe"] for r in reproduce.ROWS if r != "x2ct-baseline"} == {"dctnet"}
    # the split used ships with the results
    split = json.loads((out / "split" / "split.json").read_text(encoding="utf-8"))
    assert split["cases"] == 2 and split["dry_run"]
    assert sorted((out / "split" / "test.txt").read_text(encoding="utf-8").split()) == list(SCANS)
    stages = sorted(p.stem for p in (out / "stages").glob("*.json"))
    assert {"prepare", "train-cdm", *(f"train-{r}" for r in reproduce.ROWS),
            *(f"eval-{r}" for r in reproduce.ROWS)} <= set(stages)


def test_rerun_resumes_only_what_is_unfinished(dry_run):
    out = dry_run["out"]
    assert dry_run["result"].returncode == 0
    # an interrupted DCT-Net training (checkpoint kept, stage not marked) and a lost evaluation
    (out / "stages" / "train-dctnet.json").unlink()
    (out / "stages" / "eval-dctnet.json").unlink()
    shutil.rmtree(out / "eval" / "dctnet")
    before = (out / "commands.sh").read_text(encoding="utf-8")
    result = _script(str(dry_run["data_root"]), str(out), "--dry-run", "--device", "cpu")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    new = (out / "commands.sh").read_text(encoding="utf-8")[len(before):]
    ran = [line for line in new.splitlines() if not line.startswith("#")]
    assert len(ran) == 2, new
    assert " train " in ran[0] and "--variant dctnet" in ran[0] and "--resume" in ran[0]
    assert " evaluate " in ran[1] and "eval/dctnet" in ran[1]
    assert "train-cdm: done earlier, skipped" in result.stdout
    assert (out / "eval" / "dctnet" / "cases.csv").is_file()


def test_trainings_run_under_torchrun_with_nproc(data_root, tmp_path):
    """One row with --nproc 2 (two CPU processes, gloo): the training is a DDP run of world size 2."""
    out = tmp_path / "out"
    result = _script(str(data_root), str(out), "--dry-run", "--device", "cpu", "--workers", "1",
                     "--rows", "ablation-no-dual-branch", "--nproc", "2")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    commands = (out / "commands.sh").read_text(encoding="utf-8")
    assert "torch.distributed.run --standalone --nproc_per_node=2" in commands
    assert "train-cdm" not in commands  # this row has no G(X): no CDM needed
    run_info = json.loads((out / "runs" / "ablation-no-dual-branch" / "run.json").read_text(encoding="utf-8"))
    assert run_info["environment"]["world_size"] == 2
    payload = json.loads((out / "table1.json").read_text(encoding="utf-8"))
    assert payload["rows"]["ablation-no-dual-branch"]["global_batch"] == 2  # batch 1 cannot be split: stated
    assert payload["rows"]["dctnet"] is None and "not run" in (out / "table1.md").read_text(encoding="utf-8")


def test_per_process_batch_keeps_the_recipes_global_batch_when_it_divides():
    assert reproduce.per_process_batch(4, 1) == (4, 4)
    assert reproduce.per_process_batch(4, 2) == (2, 4)
    assert reproduce.per_process_batch(4, 4) == (1, 4)
    assert reproduce.per_process_batch(1, 4) == (1, 4)  # DCT-Net's batch 1 on 4 GPUs: global 4 (a deviation)
    assert reproduce.per_process_batch(8, 3) == (2, 6)


def test_script_without_arguments_prints_usage():
    result = subprocess.run(["bash", str(SCRIPT)], capture_output=True, text=True, check=False, encoding="utf-8")
    assert result.returncode == 2 and "DATA_ROOT" in result.stdout


def test_until_stops_after_the_asked_stage(data_root, tmp_path):
    out = tmp_path / "out"
    result = _script(str(data_root), str(out), "--dry-run", "--device", "cpu", "--workers", "1", "--until", "prepare")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "stopped after the prepare stage" in result.stdout
    assert sorted(p.stem for p in (out / "stages").glob("*.json")) == ["dry-run-data", "prepare"]
    assert (out / "split" / "split.json").is_file() and not (out / "runs").exists()
