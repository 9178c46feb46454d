"""The reconstruction-GAN trainer, ``dctnet train`` / ``dctnet evaluate``, and kill -9 + resume of ``train`` and
``prepare``.

Sizes: a "micro" variant of the tiny preset (16² radiographs → 16³ volumes, one attention level) for training,
the tiny preset at 32³ for evaluation (LPIPS-alex needs ≥ 31 px). Equality tests pin one intra-op thread in
every process (``torch.set_num_threads(1)`` here, ``OMP_NUM_THREADS=1`` in subprocesses), since float sums
depend on how they are split over threads.
"""

from __future__ import annotations

import csv
import json
import math
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from DCTNetLib.cli import main as dctnet
from test_training_cli import write_tiny_prepared

MICRO = {"image_size": 16, "encoder_blocks": [1, 1], "decoder_channels": [8, 8, 8], "decoder_convs": [1, 0],
         "attention_levels": [True, False], "fusion_rank": 8}
SUBPROCESS_ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
CLI_TRAIN = ["--preset", "tiny", "--device", "cpu", "--bs-source", "target", "--set", "model=" + json.dumps(MICRO),
             "--set", "num_workers=0", "--set", "progress=false", "--set", "log_every=1",
             "--set", "deterministic=true", "--set", "checkpoint_every=1", "--set", "loss.contrastive_metric=l1"]
KILL_SEED = int(os.environ.get("DCTNET_TEST_KILL_SEED", time.time_ns() % 2**31))


@pytest.fixture(scope="module")
def prepared16(tmp_path_factory) -> Path:
    return write_tiny_prepared(tmp_path_factory.mktemp("prep16"), n_train=4, n_val=1, size=16)


class StandInFeatures(nn.Module):
    """A small frozen conv stack standing in for VGG16 (five ReLU taps), so the perceptual path runs fast."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(123)
        self.convs = nn.ModuleList(nn.Conv2d(a, b, 3, padding=1) for a, b in [(1, 4), (4, 4), (4, 8), (8, 8), (8, 8)])
        self.requires_grad_(False)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Shapes: ``(N, 1, H, W)`` → five ``(N, C, H, W)`` maps."""
        outputs = []
        for conv in self.convs:
            x = torch.relu(conv(x))
            outputs.append(x)
        return tuple(outputs)


def gan_config(**overrides):
    from DCTNetLib.training.config import GANTrainConfig

    values = dict(size="tiny", model=dict(MICRO), epochs=2, num_workers=0, progress=False, deterministic=True,
                  device="cpu", bs_source="target", checkpoint_every=1, log_every=1)
    values.update(overrides)
    return GANTrainConfig(**values)


def make_trainer(config, run_dir: Path, data: Path, perceptual=None, dist_info=None):
    from DCTNetLib.data.prepared_cases import PreparedCaseDataset
    from DCTNetLib.training.gan_trainer import GANTrainer, build_gan_preset

    run_dir.mkdir(parents=True, exist_ok=True)
    val = PreparedCaseDataset(data, "val")
    return GANTrainer(config, run_dir, train_set=PreparedCaseDataset(data, "train"), val_set=val if len(val) else None,
                      preset=build_gan_preset(config), perceptual=perceptual, dist_info=dist_info)


def load_state(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)


def max_weight_diff(a: dict, b: dict, skip_suffix: str | None = None) -> float:
    """Largest |difference| over every tensor of every model in two checkpoints (same keys required), leaving out
    tensors whose name ends with ``skip_suffix``."""
    assert a["models"].keys() == b["models"].keys()
    worst = 0.0
    for name in a["models"]:
        assert a["models"][name].keys() == b["models"][name].keys()
        for key, tensor in a["models"][name].items():
            if skip_suffix and key.endswith(skip_suffix):
                continue
            worst = max(worst, float((tensor.double() - b["models"][name][key].double()).abs().max()))
    return worst


def assert_same_weights(a: dict, b: dict) -> None:
    for name in a["models"]:
        for key, tensor in a["models"][name].items():
            assert torch.equal(tensor, b["models"][name][key]), f"{name}.{key} differs"


# ---------------------------------------------------------------------------------------------- (a) resume
def test_resume_gives_the_same_weights_as_an_uninterrupted_run(prepared16, tmp_path, one_thread):
    """2 epochs straight == stopped mid-epoch 1 then resumed == 1 epoch then resumed to 2 (perceptual path on)."""
    straight = make_trainer(gan_config(), tmp_path / "a", prepared16, StandInFeatures())
    assert straight.fit().status == "done"
    reference = load_state(tmp_path / "a" / "latest.pt")
    assert reference["progress"]["step"] == 8 and set(reference["models"]) == {"g_raw", "g_bs", "discriminator"}

    first = make_trainer(gan_config(stop_after_steps=3), tmp_path / "b", prepared16, StandInFeatures())
    assert first.fit().status == "interrupted"
    assert load_state(tmp_path / "b" / "latest.pt")["progress"]["step"] == 3
    resumed = make_trainer(gan_config(), tmp_path / "b", prepared16, StandInFeatures())
    assert resumed.fit(resume=True).step == 8

    one_epoch = make_trainer(gan_config(epochs=1), tmp_path / "c", prepared16, StandInFeatures())
    one_epoch.fit()
    make_trainer(gan_config(epochs=2), tmp_path / "c", prepared16, StandInFeatures()).fit(resume=True)

    for run in ("b", "c"):
        state = load_state(tmp_path / run / "latest.pt")
        assert_same_weights(reference, state)
        for name in ("generators", "discriminator"):
            exp_avg = reference["optimizers"][name]["state"][0]["exp_avg"]
            assert torch.equal(exp_avg, state["optimizers"][name]["state"][0]["exp_avg"])
        assert state["progress"]["best_metric"] == reference["progress"]["best_metric"]
    # training moved the weights, and the losses were finite and logged with all terms
    records = [json.loads(line) for line in (tmp_path / "a" / "metrics.jsonl").read_text(encoding="utf-8").splitlines()]
    losses = [r["losses"] for r in records if r["event"] == "train"]
    assert set(losses[0]) >= {"adv", "contrastive", "recon", "proj", "recon_x", "proj_x", "d_real", "d_fake"}
    assert all(math.isfinite(v) for entry in losses for v in entry.values())
    val = [r for r in records if r["event"] == "val"]
    assert len(val) == 2 and all(math.isfinite(r["psnr"]) and 0 < r["ssim"] <= 1 for r in val)
    # the reader of the Slicer training module sees the trainer's own loss and metric names, nothing else
    from DCTNetLib.training.runlog import MetricsTail, RunHistory

    history = RunHistory()
    history.update(MetricsTail(tmp_path / "a" / "metrics.jsonl").read_new())
    assert set(history.losses) == set(losses[0])
    assert set(history.validation) == set(val[0]) - {"event", "epoch", "step"}


def test_resume_with_other_bone_suppressed_inputs_is_refused(prepared16, tmp_path, one_thread):
    from DCTNetLib.errors import InputError

    trainer = make_trainer(gan_config(max_steps=1, loss={"contrastive_metric": "l1"}), tmp_path, prepared16)
    trainer.fit()
    other = make_trainer(gan_config(loss={"contrastive_metric": "l1"}), tmp_path, prepared16)
    other.cdm_info = {"path": "/elsewhere/cdm.pt", "key": "0123456789abcdef"}
    with pytest.raises(InputError, match="bone-suppressed inputs"):
        other.fit(resume=True)


# ---------------------------------------------------------------------------------------------- (b) DDP
def test_two_gloo_processes_with_batch_1_equal_one_process_with_batch_2(prepared16, tmp_path, one_thread):
    """``torchrun --nproc_per_node=2 … dctnet train`` (gloo, CPU) vs one process with the global batch."""
    from DCTNetLib.data.prepared_cases import PreparedCaseDataset
    from DCTNetLib.models.presets import GANPreset, build_generator
    from DCTNetLib.training.gan_trainer import build_gan_preset

    epochs = 2  # 4 cases / global batch 2 → 4 steps
    single = make_trainer(gan_config(batch_size=2, epochs=epochs, loss={"contrastive_metric": "l1"}),
                          tmp_path / "single", prepared16)
    single.fit()
    run = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "DCTNetLib",
           "train", "--data", str(prepared16), "--output", str(run), "--epochs", str(epochs), *CLI_TRAIN,
           "--set", "batch_size=1"]
    done = subprocess.run(cmd, env=SUBPROCESS_ENV, capture_output=True, encoding="utf-8",
                          errors="replace", timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    ddp, reference = load_state(run / "latest.pt"), load_state(tmp_path / "single" / "latest.pt")
    assert ddp["progress"]["step"] == reference["progress"]["step"] == 4
    assert ddp["progress"]["world_size"] == 2 and len(ddp["rng"]) == 2
    # Conv biases feeding a non-affine instance norm have an exact gradient of 0: Adam turns the float noise in
    # it into ±lr steps of either sign, so they are left out of the weight comparison; the outputs (which they
    # cannot change) and every other weight must agree.
    diff = max_weight_diff(ddp, reference, skip_suffix="bias")
    print(f"DDP vs single process: max |Δweight| (non-bias) = {diff:.3g}")
    assert diff < 1e-4  # < lr/2: a wrong batch split or missing all-reduce differs by many steps of 2e-4
    preset = GANPreset.from_dict(ddp["model_config"])
    outputs = []
    for state in (ddp, reference):
        g_raw = build_generator(preset.generator).eval()
        g_raw.load_state_dict(state["models"]["g_raw"])
        with torch.no_grad():
            outputs.append(g_raw(torch.stack([c["drr"] for c in PreparedCaseDataset(prepared16, "train")])))
    out_diff = float((outputs[0] - outputs[1]).abs().max())
    print(f"DDP vs single process: max |ΔG(Y)| = {out_diff:.3g}")
    assert out_diff < 1e-5
    assert ddp["progress"]["best_metric"] == pytest.approx(reference["progress"]["best_metric"], rel=1e-6)
    torch.manual_seed(0)  # the trainer's seed: reproduces G(Y)'s initial weights
    initial = build_generator(build_gan_preset(gan_config()).generator).state_dict()
    moved = max(float((t - ddp["models"]["g_raw"][k]).abs().max()) for k, t in initial.items())
    assert moved > 1e-4  # the runs did train


# ---------------------------------------------------------------------------------------------- (c) kill -9
def _count(path: Path, word: str) -> int:
    try:
        return path.read_text(encoding="utf-8").count(word)
    except FileNotFoundError:
        return 0


def _kill_when(proc: subprocess.Popen, ready, rng: random.Random, timeout: float = 300) -> bool:
    """SIGKILL ``proc`` a random 0–0.3 s after ``ready()`` turns true; False when it finished first."""
    deadline = time.monotonic() + timeout
    while not ready():
        if proc.poll() is not None:
            return False
        assert time.monotonic() < deadline, "subprocess made no progress"
        time.sleep(0.02)
    time.sleep(rng.uniform(0.0, 0.3))
    if proc.poll() is not None:
        return False
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    return True


def test_kill_9_during_dctnet_train_then_resume_ends_with_the_same_weights(prepared16, tmp_path, one_thread):
    rng = random.Random(KILL_SEED)
    epochs = 2  # 8 steps
    argv = ["train", "--data", str(prepared16), "--epochs", str(epochs), *CLI_TRAIN]
    assert dctnet([*argv, "--output", str(tmp_path / "reference")]) == 0
    run = tmp_path / "killed"
    log = run / "metrics.jsonl"
    cmd = [sys.executable, "-m", "DCTNetLib", *argv, "--output", str(run)]
    kills = 0
    for attempt in range(3):
        before = _count(log, '"checkpoint"')
        target = before + rng.randint(1, 3)
        proc = subprocess.Popen(cmd + (["--resume"] if attempt else []), env=SUBPROCESS_ENV,
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, encoding="utf-8",
                                errors="replace")
        if attempt < 2 and _kill_when(proc, lambda: _count(log, '"checkpoint"') >= target, rng):
            kills += 1
            continue
        _, err = proc.communicate(timeout=600)
        assert proc.returncode == 0, err[-3000:]
        break
    assert kills == 2, f"only {kills} kill(s) happened before the run finished (seed {KILL_SEED})"
    final, reference = load_state(run / "latest.pt"), load_state(tmp_path / "reference" / "latest.pt")
    assert final["progress"]["step"] == 8
    assert_same_weights(reference, final)
    assert final["progress"]["best_metric"] == reference["progress"]["best_metric"], f"seed {KILL_SEED}"


def _case_files(root: Path) -> dict[str, object]:
    """Every prepared file's content (meta.json without its timings) and the split files."""
    out: dict[str, object] = {}
    for path in sorted((root / "cases").rglob("*")):
        if path.suffix == ".npy":
            out[str(path.relative_to(root))] = path.read_bytes()
        elif path.name == "meta.json":
            meta = json.loads(path.read_text(encoding="utf-8"))
            meta.pop("timing_s")
            out[str(path.relative_to(root))] = meta
    for path in sorted((root / "splits").glob("*.txt")):
        out[str(path.relative_to(root))] = path.read_text(encoding="utf-8")
    return out


def test_kill_9_during_dctnet_prepare_then_rerun_gives_the_same_cases(tmp_path, one_thread):
    from DCTNetLib.data.prepare import prepare_dataset
    from DCTNetLib.data.phantom import phantom_ct
    from DCTNetLib.io.ct import write_ct

    rng = random.Random(KILL_SEED + 1)
    source = tmp_path / "source"
    source.mkdir()
    for i in range(2):
        write_ct(phantom_ct(size=32, seed=i), source / f"chest{i}.nii.gz")
    prepare_dataset("ctspine1k", source, tmp_path / "reference", workers=1, progress=False)
    reference = _case_files(tmp_path / "reference")
    assert len(reference) == 2 * 4 + 3  # 3 arrays + meta per case, 3 split files

    output = tmp_path / "killed"
    cmd = [sys.executable, "-m", "DCTNetLib", "prepare", "--dataset", "ctspine1k", "--source", str(source),
           "--output", str(output), "--workers", "1"]

    def files_done() -> int:
        return sum(1 for p in (output / "cases").rglob("*") if p.suffix in (".npy", ".json"))

    kills = 0
    for attempt in range(3):
        proc = subprocess.Popen(cmd, env=SUBPROCESS_ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                encoding="utf-8", errors="replace")
        if attempt < 2:
            target = rng.randint(0, 6)
            if _kill_when(proc, lambda: (output / "cases").is_dir() and files_done() >= target, rng):
                kills += 1
                continue
        _, err = proc.communicate(timeout=600)
        assert proc.returncode == 0, err[-3000:]
        break
    assert kills == 2, f"only {kills} kill(s) happened before the run finished (seed {KILL_SEED + 1})"
    assert _case_files(output) == reference, f"seed {KILL_SEED + 1}"


# ---------------------------------------------------------------------------------------------- (d) evaluate
def test_evaluate_writes_csv_and_table_matching_the_metrics_module(tmp_path, one_thread):
    from DCTNetLib.data.case_splits import write_splits
    from DCTNetLib.data.prepared_cases import PreparedCaseDataset
    from DCTNetLib.io.imagenet_weights import find_imagenet_weights
    from DCTNetLib.evaluation.metrics import evaluate_volume
    from DCTNetLib.evaluation.tables import count_parameters_m, format_mean_std
    from DCTNetLib.errors import WeightsError
    from DCTNetLib.models.presets import GANPreset, build_discriminator, build_generator

    data = write_tiny_prepared(tmp_path / "prep32", n_train=1, n_val=2, size=32, seed=3)
    write_splits(data, {"train": ["case00"], "val": [], "test": ["case01", "case02"]})
    config = gan_config(model={"attention_levels": [False, False, False]}, max_steps=2, epochs=1,
                        loss={"contrastive_metric": "l1"})
    make_trainer(config, tmp_path / "run", data).fit()
    checkpoint = tmp_path / "run" / "latest.pt"
    try:
        find_imagenet_weights("alexnet")
        lpips_flags: list[str] = []
    except WeightsError:
        lpips_flags = ["--no-lpips"]
    out = tmp_path / "eval"
    assert dctnet(["evaluate", "--data", str(data), "--split", "test", "--checkpoint", str(checkpoint),
                   "--output", str(out), "--device", "cpu", *lpips_flags]) == 0

    # independent recomputation from the checkpoint
    state = load_state(checkpoint)
    preset = GANPreset.from_dict(state["model_config"])
    g_raw = build_generator(preset.generator)
    g_raw.load_state_dict(state["models"]["g_raw"])
    g_raw.eval()
    lpips_model = None
    if not lpips_flags:
        from DCTNetLib.evaluation.lpips_metric import build_lpips

        lpips_model = build_lpips()
    dataset = PreparedCaseDataset(data, "test")
    expected = []
    with torch.no_grad():
        for item in dataset:
            pred = g_raw(item["drr"][None])[0, 0].numpy()
            expected.append({"case": item["case_id"], **evaluate_volume(pred, item["ct"][0].numpy(), lpips_model)})
    rows = list(csv.DictReader((out / "cases.csv").open()))
    assert [r["case"] for r in rows] == ["case01", "case02"]
    keys = ["psnr", "ssim", "mae_unit", "mae_hu", "psnr_x2ct"] + ([] if lpips_flags else ["lpips"])
    for row, want in zip(rows, expected):
        for key in keys:
            assert float(row[key]) == pytest.approx(want[key], rel=1e-9, abs=1e-12), key
    assert ("lpips" in rows[0]) == (not lpips_flags)

    table = (out / "table.md").read_text(encoding="utf-8")
    # the row names the model evaluated (preset, checkpoint, step), not the paper's "DCT-Net (ours)"
    assert "(ours)" not in table
    line = next(l for l in table.splitlines() if l.startswith("| ") and f"{checkpoint.parent.name}/{checkpoint.name}, step" in l)
    cells = [c.strip() for c in line.strip("|").split("|")]
    for cell, key in zip(cells[1:4], ("psnr", "ssim", "lpips")):
        values = [e[key] for e in expected if key in e]
        want = format_mean_std((float(np.mean(values)), float(np.std(values)))) if values else "—"
        assert cell == want, key
    built = [build_generator(preset.generator), build_generator(preset.generator),
             build_discriminator(preset.discriminator)]
    assert cells[4] == f"{count_parameters_m(*built):.1f}"
    assert "X2CT-PSNR" in table and "MAE (HU" in table
    records = [json.loads(l) for l in (out / "metrics.jsonl").read_text(encoding="utf-8").splitlines()]
    assert [r["case"] for r in records if r["event"] == "eval"] == ["case01", "case02"]
    # a second run into the same folder is refused instead of overwriting
    assert dctnet(["evaluate", "--data", str(data), "--checkpoint", str(checkpoint), "--output", str(out),
                   "--no-lpips", "--device", "cpu"]) == 2


def test_evaluate_ablations_collects_the_variant_runs_in_table_1_order(prepared16, tmp_path, one_thread):
    from DCTNetLib.data.case_splits import write_splits

    runs = tmp_path / "runs"
    for variant in ("dctnet", "ablation-no-dual-branch"):
        config = gan_config(variant=variant, max_steps=1, loss={"contrastive_metric": "l1"})
        make_trainer(config, runs / variant, prepared16).fit()
    data = tmp_path / "prep"
    shutil.copytree(prepared16, data)
    write_splits(data, {"train": ["case00"], "val": [], "test": ["case03", "case04"]})
    out = tmp_path / "eval"
    assert dctnet(["evaluate", "--data", str(data), "--ablations", "--runs", str(runs), "--output", str(out),
                   "--no-lpips", "--device", "cpu"]) == 0
    lines = [l for l in (out / "table.md").read_text(encoding="utf-8").splitlines() if l.startswith("| ")]
    second = next(i for i in range(1, len(lines)) if lines[i].startswith("| Method"))
    paper_table = [[c.strip() for c in l.strip("|").split("|")] for l in lines[2:second]]
    assert [row[0] for row in paper_table] == ["w/o Dual-branch", "DCT-Net (ours)"]
    for variant in ("dctnet", "ablation-no-dual-branch"):
        cases = list(csv.DictReader((out / f"cases_{variant}.csv").open()))
        assert [c["case"] for c in cases] == ["case03", "case04"] and "lpips" not in cases[0]
    from DCTNetLib.checkpoints.networks import load_gan_generators

    single, dual = (load_gan_generators(runs / v / "latest.pt")[3] for v in ("ablation-no-dual-branch", "dctnet"))
    assert dual > single  # the dual-branch model also trains G(X)
    assert [row[4] for row in paper_table] == [f"{single:.1f}", f"{dual:.1f}"]


def test_train_with_a_cdm_caches_its_samples_and_resume_reuses_the_recorded_cdm(prepared16, tmp_path, one_thread):
    from DCTNetLib.checkpoints.networks import load_cdm
    from DCTNetLib.training.cache import case_seed

    data = tmp_path / "prep"
    shutil.copytree(prepared16, data)
    cdm_run = tmp_path / "cdm"
    assert dctnet(["train-cdm", "--data", str(data), "--output", str(cdm_run), "--preset", "tiny", "--device", "cpu",
                   "--max-steps", "1", "--set", "model.image_size=16", "--set", "model.sampling_steps=2",
                   "--set", "num_workers=0", "--set", "progress=false", "--set", "batch_size=2"]) == 0
    cli = [a if a != "target" else "cdm" for a in CLI_TRAIN]
    run = tmp_path / "gan"
    argv = ["train", "--data", str(data), "--output", str(run), *cli]
    assert dctnet([*argv, "--cdm", str(cdm_run / "latest.pt"), "--max-steps", "1"]) == 0
    state = load_state(run / "latest.pt")
    key = state["cdm"]["key"]
    cached = sorted((data / "cases").rglob("drr_cdm_*.npy"))
    assert [p.name for p in cached] == [f"drr_cdm_{key}.npy"] * 5  # 4 training + 1 validation case
    cdm, _ = load_cdm(cdm_run / "latest.pt")
    drr = torch.from_numpy(np.load(data / "cases" / "case02" / "drr.npy"))[None]
    with torch.no_grad():
        direct = cdm.suppress_bones(drr, steps=2, seed=case_seed(0, "case02"), eta=0.0)[0].numpy()
    np.testing.assert_allclose(np.load(data / "cases" / "case02" / f"drr_cdm_{key}.npy"), direct, atol=1e-6)
    mtimes = [p.stat().st_mtime_ns for p in cached]
    # --resume without --cdm: the CDM recorded in the checkpoint, and its cache, are used again
    assert dctnet([*argv, "--resume", "--max-steps", "2"]) == 0
    assert load_state(run / "latest.pt")["progress"]["step"] == 2
    assert [p.stat().st_mtime_ns for p in cached] == mtimes
    _check_export_and_direct_loading(run / "latest.pt", cdm_run / "latest.pt", tmp_path)


def _check_export_and_direct_loading(gan_ckpt: Path, cdm_ckpt: Path, tmp_path: Path) -> None:
    """`dctnet export` copies exactly the checkpoints' weights (EMA or online CDM), and a GAN checkpoint whose run
    recorded its CDM loads directly as a model."""
    from DCTNetLib.inference import Reconstructor
    from DCTNetLib.checkpoints.bundle import load_model_bundle

    gan, cdm = load_state(gan_ckpt), load_state(cdm_ckpt)
    for choice, expected in (("ema", cdm["ema"]["diffusion"]["model"]), ("online", cdm["models"]["diffusion"])):
        bundle_path = tmp_path / f"bundle_{choice}.pt"
        assert dctnet(["export", "--gan", str(gan_ckpt), "--cdm", str(cdm_ckpt), "--cdm-weights", choice,
                       "--output", str(bundle_path)]) == 0
        bundle = load_model_bundle(bundle_path)
        assert all(torch.equal(v, expected[k]) for k, v in bundle.cdm.state_dict().items()), choice
        assert all(torch.equal(v, gan["models"]["g_raw"][k]) for k, v in bundle.g_raw.state_dict().items())
        assert all(torch.equal(v, gan["models"]["g_bs"][k]) for k, v in bundle.g_bs.state_dict().items())
    assert dctnet(["export", "--gan", str(gan_ckpt), "--cdm", str(cdm_ckpt), "--output",
                   str(tmp_path / "bundle_ema.pt")]) == 2  # no silent overwrite
    # --strength is stored in the CDM's config and used by its sampler
    assert dctnet(["export", "--gan", str(gan_ckpt), "--cdm", str(cdm_ckpt), "--strength", "0.5", "--output",
                   str(tmp_path / "bundle_half.pt")]) == 0
    half = load_model_bundle(tmp_path / "bundle_half.pt")
    assert half.cdm.config.sampling_strength == 0.5 and half.cdm_config["sampling_strength"] == 0.5
    assert dctnet(["export", "--gan", str(gan_ckpt), "--cdm", str(cdm_ckpt), "--strength", "1.5", "--output",
                   str(tmp_path / "bundle_bad.pt")]) == 2
    assert dctnet(["export", "--gan", str(gan_ckpt), "--cdm", str(cdm_ckpt), "--samples", "3", "--output",
                   str(tmp_path / "bundle_mean.pt")]) == 0
    assert load_model_bundle(tmp_path / "bundle_mean.pt").cdm.config.sampling_samples == 3
    # --smooth-output: the same weights with the generators' fixed output filter switched on
    assert dctnet(["export", "--gan", str(gan_ckpt), "--cdm", str(cdm_ckpt), "--smooth-output", "--output",
                   str(tmp_path / "bundle_smooth.pt")]) == 0
    smooth = load_model_bundle(tmp_path / "bundle_smooth.pt")
    assert smooth.gan_preset["generator"]["output_smoothing"] is True
    assert all(torch.equal(v, gan["models"]["g_raw"][k]) for k, v in smooth.g_raw.state_dict().items())
    direct = Reconstructor.load(gan_ckpt, device="cpu")
    assert all(torch.equal(v, gan["models"]["g_raw"][k]) for k, v in direct.g_raw.state_dict().items())
    assert direct.cdm is not None


# ---------------------------------------------------------------------------------------------- product path
def test_product_path_trains_in_its_own_group_with_its_bone_image_term(prepared16, tmp_path, one_thread):
    """A run with the product path and its bone-image term: the path's group runs at product_lr_scale × lr, the
    term is logged and the path's mix leaves zero; without a path the term is refused."""
    model = {**MICRO, "product_channels": 2}
    config = gan_config(model=model, loss={"lambda_bone_image": 10.0}, product_lr_scale=5.0, epochs=1)
    trainer = make_trainer(config, tmp_path / "p", prepared16, StandInFeatures())
    assert [g["lr"] for g in trainer.optimizers["generators"].param_groups] == [config.lr, 5.0 * config.lr]
    assert trainer.fit().status == "done"
    state = load_state(tmp_path / "p" / "latest.pt")
    assert state["models"]["g_raw"]["product.mix.weight"].abs().max() > 0
    rows = [json.loads(line) for line in (tmp_path / "p" / "metrics.jsonl").read_text().splitlines()]
    logged = [r["losses"]["bone_image"] for r in rows if r.get("event") == "train"]
    assert logged and all(np.isfinite(logged)) and logged[0] > 0

    with pytest.raises(Exception, match="product path"):
        make_trainer(gan_config(loss={"lambda_bone_image": 10.0}), tmp_path / "q", prepared16, StandInFeatures())


def test_best_checkpoint_can_be_chosen_on_the_validation_bone_dice(prepared16, tmp_path, one_thread, capsys):
    """Validation logs the bone Dice and the 99.9th percentile; with best_on=bone_dice, best.pt is the state of the
    validation with the highest bone Dice, and an unknown metric is refused."""
    from DCTNetLib.errors import InputError

    config = gan_config(epochs=3, val_every=1, best_on="bone_dice", loss={"lambda_bone_dice": 1.0},
                        lr=5e-3)
    trainer = make_trainer(config, tmp_path / "b", prepared16, StandInFeatures())
    result = trainer.fit()
    assert result.status == "done" and result.best_key == "bone_dice"
    from types import SimpleNamespace

    from DCTNetLib.commands.train_common import report

    assert report(result, SimpleNamespace(is_main=True)) == 0
    assert f"best validation bone Dice {result.best_metric:.3f};" in capsys.readouterr().out
    rows = [json.loads(line) for line in (tmp_path / "b" / "metrics.jsonl").read_text().splitlines()]
    vals = [r for r in rows if r["event"] == "val"]
    assert len(vals) == 3 and all({"bone_dice", "p999_hu", "psnr"} <= set(r) for r in vals)
    best_step = max(vals, key=lambda r: r["bone_dice"])["step"]  # first of equals: only improvements replace it
    best = load_state(tmp_path / "b" / "best.pt")
    assert best["progress"]["step"] == best_step
    assert best["progress"]["best_metric"] == pytest.approx(max(r["bone_dice"] for r in vals))
    with pytest.raises(InputError, match="best_on"):
        gan_config(best_on="lpips")


def test_lambda_fused_trains_the_branch_mean_that_a_reconstruction_gives(prepared16, tmp_path, one_thread):
    """``loss.lambda_fused`` adds G(Y)'s voxel terms on ½ (G(Y) + G(X)), the CT `dctnet reconstruct` writes; it is
    off by default and refused without the second branch."""
    from DCTNetLib.data.prepared_cases import PreparedCaseDataset
    from DCTNetLib.errors import InputError
    from DCTNetLib.models.presets import LossConfig

    item = PreparedCaseDataset(prepared16, "train")[0]
    batch = {key: item[key][None] for key in ("drr", "drr_bs", "ct")}
    fused = make_trainer(gan_config(loss={"lambda_fused": 1.0, "contrastive_metric": "l1"}, max_steps=1),
                         tmp_path / "fused", prepared16)
    torch.manual_seed(7)  # the same dropout masks in both forward passes
    with torch.no_grad():
        mean = (fused.g_raw(batch["drr"]) + fused.g_bs(batch["drr_bs"])) / 2
        expected = {"recon_fused": float(fused.criterion.reconstruction(mean, batch["ct"])),
                    "proj_fused": float(fused.criterion.projection(mean, batch["ct"]))}
    torch.manual_seed(7)
    terms = fused.train_step(batch)
    for name, value in expected.items():
        assert terms[name] == pytest.approx(value, rel=1e-5), name
    assert terms["recon_fused"] != pytest.approx(terms["recon"], rel=1e-3)  # the mean is not G(Y)
    plain = make_trainer(gan_config(loss={"contrastive_metric": "l1"}, max_steps=1), tmp_path / "plain", prepared16)
    torch.manual_seed(7)
    plain_terms = plain.train_step(batch)
    assert not any(name.endswith("_fused") for name in plain_terms)
    # the fused terms are in the loss the generators step on, with G(Y)'s weights (λ3 ℓ_recon + λ4 ℓ_proj here)
    loss = fused.preset.loss
    added = loss.lambda_recon * terms["recon_fused"] + loss.lambda_proj * terms["proj_fused"]
    assert terms["total"] == pytest.approx(plain_terms["total"] + added, rel=1e-4)
    with pytest.raises(InputError, match="lambda_fused needs dual_branch=True"):
        LossConfig(lambda_fused=1.0, dual_branch=False, contrastive=False)
