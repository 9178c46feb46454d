"""What DCTNet Reconstruction does with MRML nodes, with or without the Slicer GUI.

The module's Logic is a thin layer over these functions; they take the scene and the views as arguments (the
Slicer application's by default), so ``Testing/SlicerCore`` runs them on the Qt-free ``slicer-core`` MRML.

- Radiographs in: :func:`load_radiograph` (PNG/JPEG/TIFF/DICOM file → single-slice volume node),
  :func:`radiographs_from_ct` (a CT node → PA and lateral DRR nodes plus the prepared 128³ reference CT).
- Reconstruction: the public ``dctnet reconstruct`` command, the same one users run, in a child process
  (``PythonSlicer -m DCTNetLib reconstruct ... --extras --progress json``). :class:`Run` writes the two radiograph
  nodes to files and builds the command line; the command reports progress as JSON lines and, in its last line,
  the files it wrote by role; :func:`outputs_to_scene` turns those files into nodes placed where the radiographs
  came from. :func:`reconstruct` waits for the command (console, scripts, self-test);
  :func:`reconstruct_in_background` returns at once (the GUI).
- Views: :func:`show_results`, :func:`show_radiographs` (:mod:`DCTNetSlicerLib.layout`).

Only :func:`radiographs_from_ct` needs torch in Slicer's own process; everything else needs numpy, SimpleITK and
Pillow (the child process that runs the model needs torch).
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from . import layout, nodes, radiographs, results
from .process import BackgroundProcess, module_command

__all__ = [
    "Options",
    "Run",
    "load_radiograph",
    "radiographs_from_ct",
    "export_radiograph",
    "command_args",
    "outputs_to_scene",
    "reconstruct",
    "reconstruct_in_background",
    "show_results",
    "show_radiographs",
]

logger = logging.getLogger(__name__)

# The reconstructed CT's file name in the run folder; NRRD keeps float32 HU and the grid exactly.
OUTPUT_NAME = "ct.nrrd"


@dataclass
class Options:
    """Options of one reconstruction (those of ``dctnet reconstruct``).

    Args:
        weights: model file. Defaults to the shipped weights.
        device: ``"auto"``, ``"cpu"`` or ``"cuda"``.
        steps: DDIM steps of the bone suppression; ``None`` or 0 = the model's default.
        seed: sampling seed.
    """

    weights: str | None = None
    device: str = "auto"
    steps: int | None = None
    seed: int = 0


# -- radiographs in ------------------------------------------------------------------------------------------------
def load_radiograph(path: str | Path, view: str = "PA", scene: Any = None) -> Any:
    """A PNG/JPEG/TIFF/DICOM CR/DX radiograph as a single-slice volume node in [0, 1] (see ``read_radiograph``).

    Args:
        path: image file.
        view: ``"PA"`` or ``"LAT"``: places the image in a coronal / sagittal plane through the origin.
        scene: MRML scene. Defaults to ``slicer.mrmlScene``.
    """
    from DCTNetLib.io.radiograph import read_radiograph

    image = read_radiograph(path)
    return nodes.radiograph_to_node(image, view, f"{Path(path).stem} {view.upper()}", scene)


def radiographs_from_ct(ct_node: Any, scene: Any = None) -> tuple[Any, Any]:
    """PA and lateral DRRs of a CT node with the training geometry; also adds the 128³ reference CT.

    Needs torch (the DRR projector). Returns ``(paNode, latNode)``, centred on the CT; both reference the prepared
    CT (node reference :data:`DCTNetSlicerLib.nodes.REFERENCE_ROLE`), so a reconstruction of them lands on that
    grid and is compared with it.
    """
    if ct_node is None:
        raise ValueError("ctNode: no CT volume selected")
    pair = radiographs.radiographs_from_ct(nodes.volume_node_to_ct_volume(ct_node))
    name = ct_node.GetName()
    reference = nodes.ct_volume_to_node(radiographs.reference_ct(pair.prepared), f"{name} reference 128³", scene,
                                        role="reference")
    centre = radiographs.radiograph_centre_ras(pair.prepared)
    views = []
    for image, view in ((pair.pa, "PA"), (pair.lat, "LAT")):
        node = nodes.radiograph_to_node(image, view, f"{name} {view}", scene, centre_ras=centre)
        node.SetAttribute(radiographs.GEOMETRY_ATTRIBUTE, radiographs.geometry_to_json(pair.prepared))
        node.SetNodeReferenceID(nodes.REFERENCE_ROLE, reference.GetID())
        views.append(node)
    return views[0], views[1]


def export_radiograph(node: Any, stem: Path) -> Path:
    """Write a radiograph node to a file that ``dctnet reconstruct`` reads back as the module sees it.

    ``read_radiograph`` divides 8-bit files by 255 and min–max scales every other file, so:

    - 8-bit nodes (grey or RGB, e.g. a PNG loaded with Add Data) are written as they are, as PNG: the command
      reads them exactly as it reads the original file;
    - images that span [0, 1] (what ``read_radiograph`` made of a 16-bit, float or DICOM file) are written as a
      float32 TIFF: the min–max scaling is then the identity, so the values arrive unchanged;
    - any other image in [0, 1] (e.g. DRRs, divided by their maximum only) is written as an 8-bit PNG, so it is not
      stretched: exact for values on the 1/255 grid (images read from 8-bit files), else within 1/510.

    Returns:
        the file written (``stem`` plus ``.png`` or ``.tif``).
    """
    import SimpleITK as sitk
    import slicer

    if node is None or node.GetImageData() is None:
        raise ValueError("radiograph node has no image data")
    array = np.asarray(slicer.util.arrayFromVolume(node))
    single = [axis for axis, n in enumerate(array.shape[:3]) if n == 1]
    if array.dtype == np.uint8 and single and array.ndim in (3, 4):
        image, suffix = np.squeeze(array, axis=single[0]), ".png"
    else:
        grey = nodes.node_to_radiograph(node)
        if float(grey.min()) == 0.0 and float(grey.max()) == 1.0:
            image, suffix = grey, ".tif"
        else:
            image, suffix = np.rint(grey * 255.0).astype(np.uint8), ".png"
    path = Path(f"{stem}{suffix}")
    sitk.WriteImage(sitk.GetImageFromArray(np.ascontiguousarray(image), isVector=image.ndim == 3), str(path))
    return path


# -- the command ---------------------------------------------------------------------------------------------------
def command_args(pa: str | Path, lat: str | Path, output: str | Path, options: Options | None = None) -> list[str]:
    """``dctnet`` arguments (after ``python -m DCTNetLib``) of one reconstruction with all its outputs."""
    options = options or Options()
    args = ["reconstruct", "--pa", str(pa), "--lat", str(lat), "--output", str(output), "--extras",
            "--progress", "json", "--device", options.device, "--seed", str(int(options.seed))]
    if options.weights:
        args += ["--weights", str(options.weights)]
    if options.steps:
        args += ["--steps", str(int(options.steps))]
    return args


class Run:
    """One reconstruction of two radiograph nodes: its folder, its command line and the files it wrote.

    Args:
        pa_node, lat_node: radiograph volume nodes (single slice; scalar or RGB).
        options: :class:`Options`.
        folder: working folder (created, and removed by :meth:`cleanup`). Defaults to a new temporary folder.
    """

    def __init__(self, pa_node: Any, lat_node: Any, options: Options | None = None, folder: str | Path | None = None):
        if pa_node is None or lat_node is None:
            raise ValueError("select both a PA and a lateral radiograph first")
        self.pa_node, self.lat_node = pa_node, lat_node
        self.folder = Path(folder) if folder is not None else Path(tempfile.mkdtemp(prefix="DCTNet-"))
        self.folder.mkdir(parents=True, exist_ok=True)
        pa = export_radiograph(pa_node, self.folder / "pa")
        lat = export_radiograph(lat_node, self.folder / "lat")
        self.args = command_args(pa, lat, self.folder / OUTPUT_NAME, options)
        self.outputs: dict[str, str] | None = None
        self.notes: list[str] = []

    def on_event(self, event: dict[str, Any]) -> None:
        """Keep the files and the notes for the user (e.g. "a demonstration model") of the last progress event."""
        if event.get("event") == "progress" and isinstance(event.get("outputs"), dict):
            self.outputs = {str(role): str(path) for role, path in event["outputs"].items()}
            self.notes = [str(note) for note in event.get("notes") or []]

    def load(self, scene: Any = None, existing: dict[str, Any] | None = None,
             images_only: bool = False) -> tuple[dict[str, Any], dict[str, float]]:
        """The outputs as nodes (see :func:`outputs_to_scene`)."""
        if not self.outputs:
            from DCTNetLib.errors import OutputError

            raise OutputError("the reconstruction finished without listing its outputs")
        return outputs_to_scene(self.outputs, self.pa_node, self.lat_node, scene, existing, images_only)

    def cleanup(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)


def _centre_ras(node: Any) -> np.ndarray:
    from DCTNetLib.io.geometry import volume_centre_ras

    return volume_centre_ras(node.GetImageData().GetDimensions()[::-1], nodes.node_ijk_to_ras(node))


def outputs_to_scene(outputs: dict[str, str], pa_node: Any, lat_node: Any, scene: Any = None,
                     existing: dict[str, Any] | None = None,
                     images_only: bool = False) -> tuple[dict[str, Any], dict[str, float]]:
    """Nodes for the files of a ``dctnet reconstruct`` run, placed where the radiographs came from.

    The volumes get the grid of the radiographs' reference CT when there is one (radiographs made from a CT),
    else they are centred on the PA radiograph's centre; a ``difference`` volume (reconstruction − reference) and
    its metrics are added when there is a reference.

    Args:
        outputs: role → file, from the command's last progress event.
        pa_node, lat_node: the radiographs that were reconstructed.
        scene: MRML scene. Defaults to ``slicer.mrmlScene``.
        existing: nodes of a previous run by role, overwritten instead of adding new ones.
        images_only: load only the bone-suppressed radiographs (the preview).

    Returns:
        ``(nodes by role, metrics)``; metrics (``psnr``, ``ssim``, ``mae_hu``) only with a reference.
    """
    existing = existing or {}
    volumes, images = results.read_outputs(outputs)
    if images_only:
        volumes = {}
    centre = _centre_ras(pa_node)
    made = results.volumes_to_nodes(volumes, images, scene, existing, name=f"{pa_node.GetName()} DCTNet",
                                    centre_ras=centre)
    reference = pa_node.GetNodeReference(nodes.REFERENCE_ROLE)
    for role in volumes:
        results.place_at(made[role], reference, centre)
    metrics: dict[str, float] = {}
    if reference is not None and "ct" in made:
        made["difference"], metrics = results.compare_to_reference(made["ct"], reference, scene,
                                                                   existing.get("difference"))
    return made, metrics


def _child(args: list[str], python: str | None) -> tuple[list[str], dict[str, str]]:
    from . import tasks

    return module_command("DCTNetLib", args, python=python or tasks.python_executable()), tasks._environment()


def reconstruct(pa_node: Any, lat_node: Any, options: Options | None = None, scene: Any = None,
                existing: dict[str, Any] | None = None, progress: Callable[[float, str], None] | None = None,
                python: str | None = None, images_only: bool = False, timeout_s: float | None = None,
                on_notes: Callable[[list[str]], None] | None = None) -> tuple[dict[str, Any], dict[str, float]]:
    """Run ``dctnet reconstruct`` on two radiograph nodes and wait for it; returns :func:`outputs_to_scene`'s.

    Args:
        pa_node, lat_node: radiograph nodes.
        options: :class:`Options`.
        scene: MRML scene. Defaults to ``slicer.mrmlScene``.
        existing: nodes to overwrite, by role.
        progress: ``callback(fraction, message)`` for each stage.
        python: interpreter of the child. Defaults to ``PythonSlicer`` (see ``tasks.python_executable``).
        images_only: keep only the bone-suppressed radiographs (the preview).
        timeout_s: give up (and kill the child) after this many seconds.
        on_notes: ``callback(notes)`` with what the user must be told once (the shipped model is a demonstration
            model trained on DRRs), called when the run succeeds; the notes are also logged.

    Raises:
        RuntimeError: the command failed (its ``error:`` line) or timed out.
    """
    run = Run(pa_node, lat_node, options)
    try:
        argv, env = _child(run.args, python)
        process = BackgroundProcess(argv, env=env).start()
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while True:
            update = process.poll()
            for line in update.lines:
                logger.info("%s", line)
            for event in update.events:
                run.on_event(event)
                if event.get("event") == "progress" and progress is not None:
                    progress(float(event.get("fraction", 0.0)), str(event.get("message", "")))
            if update.finished:
                break
            if deadline is not None and time.monotonic() > deadline:
                process.cancel()
                raise RuntimeError(f"dctnet reconstruct did not finish in {timeout_s:.0f} s")
            time.sleep(0.05)
        if process.returncode != 0:
            raise RuntimeError(process.error_summary())
        loaded = run.load(scene, existing, images_only)
        _tell(run.notes, on_notes)
        return loaded
    finally:
        run.cleanup()


def _tell(notes: list[str], on_notes: Callable[[list[str]], None] | None) -> None:
    for note in notes:
        logger.warning("note: %s", note)
    if on_notes is not None:
        on_notes(notes)


def reconstruct_in_background(pa_node: Any, lat_node: Any, options: Options | None = None, scene: Any = None,
                              existing: dict[str, Any] | None = None,
                              on_progress: Callable[[float | None, str], None] | None = None,
                              on_finished: Callable[[bool, str, dict[str, Any], dict[str, float]], None] | None = None,
                              images_only: bool = False, on_notes: Callable[[list[str]], None] | None = None):
    """Start ``dctnet reconstruct`` on two radiograph nodes and return the running ``SlicerTask`` at once.

    When it ends, ``on_finished(success, message, nodes_by_role, metrics)`` is called on the GUI thread; on
    success the nodes are already in the scene, and ``on_notes(notes)`` has been called first (see
    :func:`reconstruct`). ``task.cancel()`` kills the run and everything it started.
    """
    from .tasks import SlicerTask

    run = Run(pa_node, lat_node, options)

    def finished(success: bool, message: str) -> None:
        made: dict[str, Any] = {}
        metrics: dict[str, float] = {}
        try:
            if success:
                made, metrics = run.load(scene, existing, images_only)
                _tell(run.notes, on_notes)
        except Exception as exc:  # reported through the callback: the GUI shows it, the log has the trace
            logger.exception("reading the reconstruction failed")
            success, message = False, str(exc)
        finally:
            run.cleanup()
        if on_finished:
            on_finished(success, message, made, metrics)

    return SlicerTask(run.args, on_log=logger.info, on_progress=on_progress, on_event=run.on_event,
                      on_finished=finished).start()


# -- views ---------------------------------------------------------------------------------------------------------
def show_results(volumes: dict[str, Any], pa_node: Any, lat_node: Any, show_uncertainty: bool = False,
                 views: Any = None) -> None:
    """The results layout: the CT in linked axial/sagittal/coronal views (the uncertainty map over it when
    asked), the radiographs in their own row."""
    overlay = volumes.get("uncertainty") if show_uncertainty else None
    layout.show_results(volumes["ct"], overlay_node=overlay, views=views, radiographs={
        "pa": pa_node, "lat": lat_node, "pa_bs": volumes.get("pa_bs"), "lat_bs": volumes.get("lat_bs")})


def show_radiographs(pa_node: Any, lat_node: Any, pa_bs: Any = None, lat_bs: Any = None, views: Any = None) -> None:
    """The results layout with only the radiograph row filled (before a reconstruction)."""
    layout.ensure_layout(views)
    layout.show_radiographs({"pa": pa_node, "lat": lat_node, "pa_bs": pa_bs, "lat_bs": lat_bs}, views)
