"""Smoke test of ``benchmarks/run_all.py --quick``: one command runs every section and writes a complete report.

No timing is asserted (the CI machine's speed is not the product's); the test checks that each benchmark ran
(numbers, not errors), that skipped sections say why, and that the headline summary is filled in.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
RUN_ALL = REPO / "benchmarks" / "run_all.py"

pytestmark = pytest.mark.slow  # ~1-3 min: several model builds and a DICOM → DRR case


def _errors(node, path="sections"):
    """Every ``error`` entry anywhere in the report, with its location."""
    if isinstance(node, dict):
        found = [(path, node["error"])] if "error" in node else []
        for key, value in node.items():
            found += _errors(value, f"{path}.{key}")
        return found
    return []


def test_quick_run_writes_complete_report(tmp_path):
    output = tmp_path / "report.json"
    proc = subprocess.run([sys.executable, str(RUN_ALL), "--output", str(output), "--quick", "--threads", "1"],
                          capture_output=True, text=True, cwd=str(REPO), timeout=900)
    assert proc.returncode == 0, proc.stderr[-2000:]
    report = json.loads(output.read_text(encoding="utf-8"))

    assert report["mode"] == "quick"
    for key in ("platform", "cpu_model", "logical_cores", "torch", "torch_threads", "cuda_available"):
        assert key in report["machine"]
    assert report["threads"] == 1
    sections = report["sections"]
    assert set(sections) == {"generator", "interactive", "drr", "prepare", "training", "threads", "cdm_steps", "cuda"}
    cdm_missing = sections["cdm_steps"].get("skipped")  # the curve script is optional for this runner
    errors = [e for e in _errors(sections) if not (cdm_missing and e[0].startswith("sections.cdm_steps"))]
    assert not errors, errors

    gen = sections["generator"]
    assert gen["dctnet"]["median_s"] > 0 and gen["x2ct"]["median_s"] > 0
    assert gen["dctnet"]["peak_rss_mb"] > 0 and gen["time_ratio"] == pytest.approx(
        gen["dctnet"]["median_s"] / gen["x2ct"]["median_s"], rel=0.01)
    assert gen["profile_dctnet"]["top_ops"] and gen["profile_dctnet"]["breakdown"]["layers_s"]
    assert gen["what_if_instance_norm_as_group_norm"]["max_abs_output_diff"] < 1e-4

    assert sections["interactive"]["warm"]["median_s"] > 0 and sections["interactive"]["ddim_steps"] >= 1
    drr = sections["drr"]
    if not drr.get("skipped"):
        assert drr["throughput_ratio"] > 0 and min(drr["ncc_pa_lat"]) > 0.9  # same geometry: images agree
    prep = sections["prepare"]
    assert prep["workers"]["1"]["s_per_case"] > 0 and prep["profile"]["by_own_time"]
    assert set(prep["workers"]["1"]["steps_median_s"]) >= {"read", "preprocess", "drr", "drr_bone_suppressed"}
    for key in ("gan_small", "cdm_small", "gan_full_one_step"):
        assert sections["training"][key]["steps_per_s"] > 0
    assert sections["training"]["gan_full_one_step"]["peak_rss_mb"] > 0
    import torch

    assert bool(sections["cuda"].get("skipped")) == (not torch.cuda.is_available())
    assert report["summary"]["generator_time_ratio"] == gen["time_ratio"]
