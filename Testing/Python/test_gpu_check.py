"""``benchmarks/gpu_check.py``: skips its CUDA section cleanly without a GPU (exit 0, one JSON document saying
why) and computes its first-principles figures from the real networks on the meta device."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "benchmarks" / "gpu_check.py"
sys.path.insert(0, str(REPO / "benchmarks"))

import gpu_check  # noqa: E402


def test_without_a_gpu_the_cuda_section_is_skipped_with_its_reason(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # also on a GPU machine
    assert gpu_check.cuda_section(1, {}) == {
        "skipped": True, "reason": "torch.cuda.is_available() is False: no CUDA GPU on this machine"}


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU: the check would really run")
def test_script_exits_0_with_a_skipped_cuda_section(tmp_path):
    output = tmp_path / "gpu.json"
    proc = subprocess.run([sys.executable, str(SCRIPT), "--skip-expected", "--output", str(output)],
                          capture_output=True, text=True, timeout=300, check=False, encoding="utf-8")
    assert proc.returncode == 0, proc.stderr[-2000:]
    printed = json.loads(proc.stdout)
    assert printed == json.loads(output.read_text(encoding="utf-8"))
    assert printed["cuda"]["skipped"] is True and "no CUDA GPU" in printed["cuda"]["reason"]
    assert printed["machine"]["cuda_available"] is False


def test_expected_figures_come_from_the_real_networks(one_thread):
    from DCTNetLib.evaluation.tables import count_parameters_m
    from DCTNetLib.models.presets import build_discriminator, build_generator, gan_preset

    figures = gpu_check.expected_gan_step("dctnet")
    preset = gan_preset("full")
    with torch.device("meta"):
        g, d = build_generator(preset.generator), build_discriminator(preset.discriminator)
    assert figures["trained_params_m"] == pytest.approx(2 * count_parameters_m(g) + count_parameters_m(d), abs=0.01)
    assert figures["batch"] == 1 and figures["steps_100_epochs"] == 854 * 100
    # a training step is at least forward + backward of both generators (backward ≈ 2 x forward)
    assert figures["step_gflops"] > 2 * 3 * figures["g_raw_forward_gflops"] * 0.9
    assert figures["weights_grads_adam_gb"] == pytest.approx(16 * (62.4e6 + 14.7e6 / 4) / 2 ** 30, rel=0.05)
    assert figures["expected_peak_gb"] > figures["saved_activations_gb"] > 0
    # the X2CT-GAN baseline is counted at its recipe's batch of 4
    assert gpu_check.measured_hours({"dctnet_fp32": {"median_s": 1.0}, "x2ct_baseline_fp32": {}},
                                    {"rows": {"dctnet": figures}})["dctnet"]["hours"] == pytest.approx(
        854 * 100 / 3600, abs=0.1)


def test_a_conv_is_counted_as_two_flops_per_multiply_add():
    conv = torch.nn.Conv3d(2, 4, 3, padding=1, bias=False).to("meta")
    x = torch.rand(1, 2, 8, 8, 8, device="meta")
    flops, saved = gpu_check._count(lambda: conv(x))
    assert flops == 2 * (4 * 8 ** 3) * (2 * 3 ** 3)
    assert saved >= x.numel() * x.element_size()  # autograd keeps the input for the weight's gradient
