"""Tailing a run's metrics.jsonl while it grows (DCTNetLib.training.runlog)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from DCTNetLib.training.runlog import EVAL, TRAIN, VAL, MetricsTail, RunHistory, format_mean_std, make_record


def _append(path, text: str) -> None:
    with path.open("a", encoding="utf-8") as handle:
        handle.write(text)


def _line(record: dict) -> str:
    return json.dumps(record) + "\n"


def _train(epoch: int, step: int, losses: dict) -> dict:
    """A train record as the trainers write it (the loss names are those of the GAN trainer)."""
    return make_record(TRAIN, epoch=epoch, step=step, losses=losses, lr=2e-4, time=1.0e9 + step)


def _val(epoch: int, **metrics) -> dict:
    return make_record(VAL, epoch=epoch, step=10 * epoch, **metrics)


def _eval(case: str, **metrics) -> dict:
    return make_record(EVAL, case=case, method="DCT-Net", checkpoint="best.pt", **metrics)


def test_records_are_checked_against_the_schema():
    with pytest.raises(ValueError, match="unknown metrics-log record kind"):
        make_record("trian", epoch=1)
    with pytest.raises(ValueError, match="needs losses"):
        make_record(TRAIN, epoch=1, step=1, lr=0.1, time=0.0)


def test_tail_returns_only_new_complete_records(tmp_path):
    log = tmp_path / "metrics.jsonl"
    tail = MetricsTail(log)
    assert tail.read_new() == []  # not created yet

    _append(log, _line(_train(1, 10, {"total": 2.0, "recon": 0.5})))
    first = tail.read_new()
    assert [r["step"] for r in first] == [10]
    assert tail.read_new() == []  # nothing new

    # a record cut in the middle (the writer has not finished the line yet) is held back
    half = _line(_train(1, 20, {"total": 1.5, "recon": 0.4}))
    _append(log, half[:17])
    assert tail.read_new() == []
    _append(log, half[17:] + "this is not json\n" + _line(_val(1, psnr=21.0)))
    second = tail.read_new()
    assert [r["event"] for r in second] == ["train", "val"]
    assert second[0]["losses"]["recon"] == 0.4
    assert tail.skipped == 1
    assert tail.offset == log.stat().st_size


def test_tail_starts_over_when_the_log_is_rewritten(tmp_path):
    log = tmp_path / "metrics.jsonl"
    _append(log, "".join(_line(_train(1, s, {"loss": float(s)})) for s in range(1, 6)))
    tail = MetricsTail(log)
    assert len(tail.read_new()) == 5
    log.write_text(_line(_train(1, 1, {"loss": 9.0})))
    records = tail.read_new()
    assert tail.restarted and [r["losses"]["loss"] for r in records] == [9.0]


def test_history_builds_loss_curves_validation_and_evaluation_table(tmp_path):
    log = tmp_path / "metrics.jsonl"
    tail, history = MetricsTail(log), RunHistory()
    rng = np.random.default_rng(0)
    expected_recon = []
    for step in range(10, 110, 10):  # written in three bursts, read after each
        recon = float(rng.uniform(0.1, 1.0))
        expected_recon.append(recon)
        _append(log, _line(_train(1 + step // 50, step, {"total": 3 * recon, "recon": recon, "bad": "nan-text"})))
        if step in (30, 70, 100):
            history.update(tail.read_new())
    _append(log, _line(_val(2, psnr=22.5, ssim=0.5)))
    _append(log, _line(make_record("checkpoint", path="x.pt", best=False, step=100, epoch=2)))
    psnrs = [26.0, 27.0, 28.5]
    for i, value in enumerate(psnrs):
        _append(log, _line(_eval(f"case{i}", psnr=value, ssim=0.6 + i / 100, lpips=0.3 - i / 100)))
    understood = history.update(tail.read_new())
    assert understood == 4 and history.other_events == {"checkpoint": 1}

    series = history.loss_series()
    assert set(series) == {"total", "recon"}  # the non-numeric "bad" entry is dropped
    steps, values = series["recon"]
    np.testing.assert_array_equal(steps, np.arange(10, 110, 10))
    np.testing.assert_allclose(values, expected_recon)
    np.testing.assert_allclose(series["total"][1], 3 * np.asarray(expected_recon))
    assert history.last_step == 100 and history.last_epoch == 2
    assert set(history.validation_series()) == {"psnr", "ssim"}  # epoch and step are not metrics
    assert history.validation_series()["psnr"][1].tolist() == [22.5]

    assert [row.case for row in history.evaluations] == ["case0", "case1", "case2"]
    assert history.eval_metric_names() == ["psnr", "ssim", "lpips"]
    summary = history.eval_summary()
    assert summary["psnr"].mean == pytest.approx(np.mean(psnrs))
    assert summary["psnr"].std == pytest.approx(np.std(psnrs, ddof=1))
    assert summary["psnr"].count == 3
    assert format_mean_std(summary["psnr"]) == f"{np.mean(psnrs):.3f} ± {np.std(psnrs, ddof=1):.3f}"


def test_re_evaluated_case_replaces_its_row_and_missing_metrics_are_ignored():
    history = RunHistory()
    history.update([
        _eval("a", psnr=20.0, ssim=0.5),
        _eval("b", psnr=24.0),
        _eval("a", psnr=22.0, ssim=0.7),
    ])
    assert [(row.case, row.values["psnr"]) for row in history.evaluations] == [("b", 24.0), ("a", 22.0)]
    summary = history.eval_summary()
    assert summary["psnr"].mean == pytest.approx(23.0)
    assert summary["ssim"].count == 1 and summary["ssim"].std == 0.0
    empty = history.eval_summary(["lpips"])["lpips"]
    assert empty.count == 0 and math.isnan(empty.mean) and format_mean_std(empty) == "–"


def test_a_line_nested_too_deeply_is_skipped_with_a_warning_naming_the_file(tmp_path, caplog, capsys):
    """A line of 100,000 nested lists made json raise RecursionError: `dctnet plot` (and the Slicer training monitor,
    which tails the log the same way) ended in a traceback. Now the line is skipped with one warning naming the file,
    and the records around it are read."""
    import logging

    from DCTNetLib.cli import main as dctnet

    log = tmp_path / "metrics.jsonl"
    _append(log, _line(_train(1, 1, {"total": 2.0})) + "[" * 100_000 + "]" * 100_000 + "\n"
            + _line(_train(1, 2, {"total": 1.5})) + _line(_val(1, psnr=20.0)))
    tail = MetricsTail(log)
    with caplog.at_level(logging.WARNING):
        records = tail.read_new()
    assert [r["event"] for r in records] == [TRAIN, TRAIN, VAL] and tail.skipped == 1
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "nested too deeply" in warnings[0] and str(log) in warnings[0], warnings
    assert dctnet(["plot", str(tmp_path)]) == 0
    assert "Traceback" not in capsys.readouterr().err
    assert (tmp_path / "curves.png").is_file()
