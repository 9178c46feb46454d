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


def _interval(out: Path, stage: str) -> tuple[float, float]:
    marker = json.loads((out / "stages" / f"{stage}.json").read_text(encoding="utf-8"))
    return marker["started"], marker["started"] + marker["seconds"]


def test_gpus_train_runs_side_by_side_at_their_batch_and_seeds_give_the_spread_over_runs(data_root, tmp_path):
    """--gpus 2 --seeds 1,2 on one row: two trainings at once, one per (CUDA_VISIBLE_DEVICES) slot, each at the
    recipe's batch 1, seeded 1 and 2; the table's ± is the spread of the two runs' means."""
    import statistics

    out = tmp_path / "out"
    result = _script(str(data_root), str(out), "--dry-run", "--device", "cpu", "--workers", "1",
                     "--rows", "ablation-no-dual-branch", "--gpus", "2", "--seeds", "1,2")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    commands = (out / "commands.sh").read_text(encoding="utf-8").splitlines()
    trains = [line for line in commands if " train " in line]
    assert len(trains) == 2 and "torch.distributed.run" not in "\n".join(trains)
    assert {line.split()[0] for line in trains} == {"CUDA_VISIBLE_DEVICES=0", "CUDA_VISIBLE_DEVICES=1"}
    assert any("seed=1" in line and "ablation-no-dual-branch-seed1" in line for line in trains)
    assert any("seed=2" in line and "ablation-no-dual-branch-seed2" in line for line in trains)
    first, second = (_interval(out, f"train-ablation-no-dual-branch-seed{k}") for k in (1, 2))
    assert first[0] < second[1] and second[0] < first[1]  # they ran at the same time
    payload = json.loads((out / "table1.json").read_text(encoding="utf-8"))
    row = payload["rows"]["ablation-no-dual-branch"]
    assert payload["seeds"] == [1, 2] and row["seeds"] == [1, 2] and row["global_batch"] == 1
    for seed in (1, 2):
        config = json.loads((out / "runs" / f"ablation-no-dual-branch-seed{seed}" / "config.json").read_text())
        assert config["seed"] == seed
    means = []
    for seed in (1, 2):
        cases = reproduce._read_cases(out / "eval" / f"ablation-no-dual-branch-seed{seed}" / "cases.csv")
        means.append(statistics.fmean(case["psnr"] for case in cases))
    assert row["metrics"]["psnr"]["mean"] == pytest.approx(statistics.fmean(means))
    assert row["metrics"]["psnr"]["std"] == pytest.approx(statistics.stdev(means))
    assert "standard deviation over the training seeds 1, 2" in (out / "table1.md").read_text(encoding="utf-8")


@pytest.fixture(scope="module")
def ctspine_root(shared_data, tmp_path_factory) -> Path:
    """Two shared CTs as CTSpine1K-style NIfTI files, with a label map beside one (which must be skipped)."""
    from DCTNetLib.io.ct import CTVolume, read_ct, write_ct

    root = tmp_path_factory.mktemp("ctspine1k")
    (root / "COLONOG").mkdir()
    for index, name in enumerate(SCANS):
        ct = read_ct(shared_data / "ct" / f"{name}.nii.gz")
        step = (2, 4, 4)
        small = CTVolume(hu=ct.hu[::step[0], ::step[1], ::step[2]].copy(),
                         spacing=tuple(s * k for s, k in zip(ct.spacing, step)), origin_lps=ct.origin_lps,
                         direction=ct.direction, source=name)
        write_ct(small, root / "COLONOG" / f"case{index:03d}.nii.gz")
    write_ct(small, root / "COLONOG" / "case001_seg.nii.gz")
    return root


def test_table2_is_reproduced_from_ctspine1k_files(ctspine_root, tmp_path):
    out = tmp_path / "out"
    result = _script(str(ctspine_root), str(out), "--dry-run", "--device", "cpu", "--workers", "1",
                     "--dataset", "ctspine1k", "--rows", "x2ct-baseline")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert not (out / "table1.md").exists()
    table = (out / "table2.md").read_text(encoding="utf-8")
    assert table.startswith("# DCT-Net Table 2 (CTSpine1K)")
    for method, variant, p_psnr, _, _ in reproduce.PAPER_TABLE2:
        line = next(row for row in table.splitlines() if row.startswith(f"| {method} |"))
        assert f"{p_psnr[0]:.3f} ± {p_psnr[1]:.3f}" in line
        assert ("not implemented" in line) == (variant is None)
    assert "not run" in next(row for row in table.splitlines() if row.startswith("| DCT-Net (ours) |"))
    payload = json.loads((out / "table2.json").read_text(encoding="utf-8"))
    assert payload["dataset"] == "ctspine1k" and payload["rows"]["x2ct-baseline"]["cases"] == 2
    split = json.loads((out / "split" / "split.json").read_text(encoding="utf-8"))
    assert split["dataset"] == "ctspine1k" and split["paper_sizes"] == {"train": 650, "val": 60, "test": 74}
    assert sorted((out / "split" / "test.txt").read_text(encoding="utf-8").split()) == ["case000", "case001"]
    assert "--dataset ctspine1k" in (out / "commands.sh").read_text(encoding="utf-8")
    # Table 2 has no ablation rows, and the two multi-GPU modes exclude each other
    for extra in (["--rows", "ablation-no-perceptual"], ["--gpus", "2", "--nproc", "2"], ["--seeds", "1,1"]):
        bad = _script(str(ctspine_root), str(tmp_path / "bad"), "--dry-run", "--dataset", "ctspine1k", *extra)
        assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1, bad.stderr
