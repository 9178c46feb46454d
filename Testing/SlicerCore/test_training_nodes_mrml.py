"""DCTNetSlicerLib.training_nodes — the loss plot and evaluation table of DCTNet Training — on real MRML.

A run's metrics log grows while the module polls it: the loss table follows it, the chart is put in the layout
once (not on every poll), and no evaluation table node appears until there are evaluation results.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

slicer = pytest.importorskip("slicer")
if not hasattr(slicer, "vtkMRMLScene"):
    pytest.skip("`slicer` here is not slicer-core's MRML build", allow_module_level=True)

from DCTNetSlicerLib.training_nodes import CHART_NAME, EVALUATION_TABLE_NAME, LOSS_TABLE_NAME, TrainingNodes  # noqa: E402


class _History:
    """A RunHistory fed from metrics-log records, as the module keeps it (``DCTNetLib.training.runlog``)."""

    def __init__(self, tmp_path):
        from DCTNetLib.training.runlog import MetricsTail, RunHistory

        self.log = tmp_path / "metrics.jsonl"
        self.log.write_text("")
        self.tail, self.history = MetricsTail(self.log), RunHistory()

    def append(self, *records):
        with self.log.open("a") as handle:
            handle.writelines(json.dumps(r) + "\n" for r in records)
        return self.history.update(self.tail.read_new())


def _table(node) -> dict[str, list]:
    table = node.GetTable()
    columns = {}
    for c in range(table.GetNumberOfColumns()):
        column = table.GetColumn(c)
        columns[column.GetName()] = [column.GetValue(r) for r in range(column.GetNumberOfTuples())]
    return columns


def test_losses_are_plotted_and_the_chart_is_shown_once_per_run(scene, tmp_path):
    pytest.importorskip("DCTNetLib.training.runlog")
    shown = []
    nodes = TrainingNodes(scene, show_chart=shown.append)
    run = _History(tmp_path)
    assert nodes.update_plot(run.history) is None and shown == []  # nothing logged yet: no nodes at all
    assert scene.GetFirstNodeByName(LOSS_TABLE_NAME) is None

    run.append({"event": "train", "step": 10, "losses": {"recon": 0.5, "adv": 1.0}})
    chart = nodes.update_plot(run.history)
    assert chart.GetName() == CHART_NAME and shown == [chart]
    for step in (20, 30, 40):  # later polls: the same nodes, more rows, no layout switch
        run.append({"event": "train", "step": step, "losses": {"recon": 0.5 / step, "adv": 1.0}})
        assert nodes.update_plot(run.history) is chart
    assert shown == [chart]
    columns = _table(scene.GetFirstNodeByName(LOSS_TABLE_NAME))
    np.testing.assert_array_equal(columns["step"], [10, 20, 30, 40])
    np.testing.assert_allclose(columns["recon"], [0.5, 0.025, 0.5 / 30, 0.0125])
    series = [scene.GetNodeByID(chart.GetNthPlotSeriesNodeID(i)) for i in range(chart.GetNumberOfPlotSeriesNodes())]
    assert sorted(s.GetYColumnName() for s in series) == ["adv", "recon"]
    assert {s.GetXColumnName() for s in series} == {"step"}

    # the scene was closed (new scene, same module): a new chart is made, and shown once again
    scene.Clear(0)
    run.append({"event": "train", "step": 50, "losses": {"recon": 0.01}})
    again = nodes.update_plot(run.history)
    assert again is not chart and shown == [chart, again]


def test_no_evaluation_table_until_there_are_results(scene, tmp_path):
    pytest.importorskip("DCTNetLib.training.runlog")
    nodes = TrainingNodes(scene, show_chart=lambda chart: None)
    run = _History(tmp_path)
    run.append({"event": "train", "step": 10, "losses": {"recon": 0.5}})
    assert nodes.update_evaluation_table(run.history) is None
    assert scene.GetFirstNodeByName(EVALUATION_TABLE_NAME) is None  # a training run leaves no empty table

    run.append({"event": "eval", "case": "A", "psnr": 26.0, "ssim": 0.6, "lpips": 0.3},
               {"event": "eval", "case": "B", "psnr": 28.0, "ssim": 0.7, "lpips": 0.2})
    table = nodes.update_evaluation_table(run.history)
    columns = _table(table)
    assert columns["case"] == ["A", "B", "mean ± std"]
    assert columns["psnr"][-1] == "27.000 ± 1.414"
    assert nodes.update_evaluation_table(run.history) is table  # updated in place, not a second node
    tables = scene.GetNodesByClass("vtkMRMLTableNode")
    names = [tables.GetItemAsObject(i).GetName() for i in range(tables.GetNumberOfItems())]
    assert names.count(EVALUATION_TABLE_NAME) == 1
