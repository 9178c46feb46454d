"""The nodes DCTNet Training keeps up to date while a run goes: the loss curves and the evaluation table.

:class:`TrainingNodes` turns a ``RunHistory`` (see :mod:`DCTNetSlicerLib.training_runs`) into MRML nodes each time
the module polls the run's metrics log:

- the loss table ``DCTNet losses`` and the plot chart ``DCTNet training`` (one series per loss term). The chart is
  put in the view layout once, when it is created: polling again only updates the table, so a user who switches
  to another layout during a run is not switched back every two seconds;
- the evaluation table ``DCTNet evaluation`` (one row per case, then mean ± std), created only once there are
  evaluation results (a training run has none, so no empty table node appears).

Works on any MRML scene (``slicer-core`` in ``Testing/SlicerCore``); ``slicer`` and ``vtk`` are imported inside.
"""

from __future__ import annotations

from typing import Any, Callable

from .training_runs import eval_table_rows, loss_table_columns

__all__ = ["LOSS_TABLE_NAME", "CHART_NAME", "EVALUATION_TABLE_NAME", "TrainingNodes", "show_chart_in_layout"]

LOSS_TABLE_NAME = "DCTNet losses"
CHART_NAME = "DCTNet training"
EVALUATION_TABLE_NAME = "DCTNet evaluation"


def show_chart_in_layout(chart: Any) -> None:
    """Slicer's Plots module: switch to a layout with a plot view and show ``chart`` in it."""
    import slicer

    slicer.modules.plots.logic().ShowChartInLayout(chart)


class TrainingNodes:
    """The loss plot and the evaluation table of the current run.

    Args:
        scene: MRML scene. Defaults to ``slicer.mrmlScene``.
        show_chart: called with the chart node when the chart is created. Defaults to
            :func:`show_chart_in_layout`.
    """

    def __init__(self, scene: Any = None, show_chart: Callable[[Any], None] | None = None) -> None:
        self._scene = scene
        self.show_chart = show_chart or show_chart_in_layout
        self.table = None
        self.chart = None
        self.series: dict[str, Any] = {}

    @property
    def scene(self) -> Any:
        if self._scene is not None:
            return self._scene
        import slicer

        return slicer.mrmlScene

    def update_plot(self, history: Any) -> Any:
        """Loss curves of ``history`` in the table and chart; returns the chart (None before the first loss)."""
        import slicer

        names, table = loss_table_columns(history)
        if table.shape[0] == 0:
            return None
        created = self.table is None or self.table.GetScene() is None or self.chart.GetScene() is None
        if created:
            self.table = self.scene.AddNewNodeByClass("vtkMRMLTableNode", LOSS_TABLE_NAME)
            self.chart = self.scene.AddNewNodeByClass("vtkMRMLPlotChartNode", CHART_NAME)
            self.chart.SetXAxisTitle("step")
            self.chart.SetYAxisTitle("loss")
            self.series = {}
        slicer.util.updateTableFromArray(self.table, table, columnNames=names)
        for name in names[1:]:
            if name in self.series:
                continue
            series = self.scene.AddNewNodeByClass("vtkMRMLPlotSeriesNode", f"DCTNet {name}")
            series.SetAndObserveTableNodeID(self.table.GetID())
            series.SetXColumnName("step")
            series.SetYColumnName(name)
            series.SetPlotType(series.PlotTypeScatter)
            series.SetMarkerStyle(series.MarkerStyleNone)
            series.SetUniqueColor()
            self.chart.AddAndObservePlotSeriesNodeID(series.GetID())
            self.series[name] = series
        if created:
            self.show_chart(self.chart)
        return self.chart

    def update_evaluation_table(self, history: Any) -> Any:
        """Per-case metrics and mean ± std in a table node (string columns); None while there are no results."""
        import vtk

        header, rows = eval_table_rows(history)
        if not rows:
            return None
        node = self.scene.GetFirstNodeByName(EVALUATION_TABLE_NAME)
        node = node or self.scene.AddNewNodeByClass("vtkMRMLTableNode", EVALUATION_TABLE_NAME)
        table = node.GetTable()
        table.Initialize()
        for column, name in enumerate(header):
            values = vtk.vtkStringArray()
            values.SetName(name)
            for row in rows:
                values.InsertNextValue(row[column])
            table.AddColumn(values)
        node.Modified()
        return node
