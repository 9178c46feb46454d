"""What DCTNet Reconstruction does with MRML nodes, with or without the Slicer GUI.

The module's Logic is a thin layer over these functions; they take the scene and the views as arguments (the
Slicer application's by default), so ``Testing/SlicerCore`` runs them on the Qt-free ``slicer-core`` MRML.

- Radiographs in: :func:`load_radiograph` (PNG/JPEG/TIFF/DICOM file → single-slice volume node),
  :func:`radiographs_from_ct` (a CT node → PA and lateral DRR nodes plus the prepared 128³ reference CT).
- Reconstruction: the public ``dctnet reconstruct`` command, the same one users run, in a ``dctnet worker`` child
  kept alive between clicks (:class:`~DCTNetSlicerLib.tasks.Worker`: torch imported and the model loaded once).
  :class:`Run` hands the command **the original file** of each radiograph node when the node still holds what
  that file holds (:func:`source_file`: a file loaded here, with Add Data, or from Slicer's DICOM database), so a
  DICOM film gets exactly the command line's header checks (pixel spacing onto the training detector,
  ViewPosition, PatientOrientation flips); other nodes are written to files the command reads back unchanged
  (:func:`export_radiograph`). The command reports progress as JSON lines and, in its last line, the files it
  wrote by role; :func:`outputs_to_scene` turns those files into nodes placed where the radiographs came from.
  :func:`reconstruct_in_background` returns at once (the GUI); :func:`reconstruct` starts the same and waits
  (console, scripts, self-test). Closing the scene cancels a run (:class:`SceneGuard`).
- Views: :func:`show_results`, :func:`show_radiographs` (:mod:`DCTNetSlicerLib.layout`).

Nothing here imports torch in Slicer's own process: :func:`radiographs_from_ct` runs ``dctnet drr`` and the
comparison with a reference CT runs in ``dctnet reconstruct --reference``, both on the worker. Slicer's process
needs numpy, SimpleITK, Pillow and (for DICOM films) pydicom; the worker that runs the model needs torch.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from . import layout, nodes, radiographs, results

__all__ = [
    "Options",
    "Run",
    "load_radiograph",
    "radiographs_from_ct",
    "run_on_worker",
    "export_radiograph",
    "source_file",
    "dicom_series_folder",
    "SceneGuard",
    "command_args",
    "outputs_to_scene",
    "reconstruct",
    "reconstruct_in_background",
    "show_results",
    "show_radiographs",
    "undo_monochrome1",
]

logger = logging.getLogger(__name__)

# The reconstructed CT's file name in the run folder; NRRD keeps float32 HU and the grid exactly.
OUTPUT_NAME = "ct.nrrd"
# Node attributes of a radiograph loaded by load_radiograph: its file, and a digest of the voxels read from it (a
# node whose voxels changed since is written out again instead of passing the file).
SOURCE_FILE_ATTRIBUTE = "DCTNet.SourceFile"
SOURCE_DIGEST_ATTRIBUTE = "DCTNet.SourceDigest"
# Files `dctnet reconstruct` reads as radiographs (a node stored in any other format is written out).
_RADIOGRAPH_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".dcm", ".dicom", ".dic", "")


@dataclass
class Options:
    """Options of one reconstruction (those of ``dctnet reconstruct``).

    Args:
        weights: model file. Defaults to the shipped weights.
        device: ``"auto"``, ``"cpu"`` or ``"cuda"``.
        steps: DDIM steps of the bone suppression; ``None`` or 0 = the model's default.
        seed: sampling seed.
        input_checks: refuse what does not look like a chest radiograph and turn a lateral facing right
            (``DCTNetLib.io.film_gate``); False passes ``--no-input-checks``. Defaults to True.
        dicom_folder: also write the CT as a DICOM series into this new folder (``--dicom``; under the PA film's
            patient and study when the PA is a DICOM film); see :func:`dicom_series_folder`. Not for previews.
        refine: refine the volume until its DRRs agree with the radiographs (``--refine``: helps on radiographs
            made from a CT, imprints a real film's borders and display curve). Defaults to False.
        fusion: the CT: ``"mean"`` of G(Y) and G(X), or ``"raw"`` = G(Y) alone (``--fusion``). Defaults to
            ``"mean"``.
        atlas: with ``refine``, mix in the shipped chest atlases registered to the radiographs (``--atlas``).
            Defaults to False.
        register: the default film-robust registration of the CT to the radiographs; False passes
            ``--no-registration`` (ignored with ``refine``, which brings its own). Defaults to True.
        mix_atlases: after that registration, the default atlas prior (real chest CTs registered to the
            radiographs, their median mixed in); False passes ``--no-atlas`` (ignored without ``register`` or with
            ``refine``). Defaults to True.
    """

    weights: str | None = None
    device: str = "auto"
    steps: int | None = None
    seed: int = 0
    input_checks: bool = True
    dicom_folder: str | None = None
    refine: bool = False
    fusion: str = "mean"
    atlas: bool = False
    register: bool = True
    mix_atlases: bool = True


def dicom_series_folder(parent: str | Path, name: str) -> Path:
    """A new folder inside ``parent`` for one reconstruction's DICOM series: ``<name> DCTNet <date-time>``, with
    ``-2``, ``-3``… when taken, so an export never replaces an earlier one (``dctnet reconstruct --dicom`` refuses a
    folder that is not empty). ``name`` (a node name) is reduced to characters every file system accepts."""
    import re
    import time

    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._") or "radiographs"
    base = Path(parent) / f"{safe[:60]} DCTNet {time.strftime('%Y%m%d-%H%M%S')}"
    folder, count = base, 1
    while folder.exists():
        count += 1
        folder = base.with_name(f"{base.name}-{count}")
    return folder


# -- radiographs in ------------------------------------------------------------------------------------------------
def load_radiograph(path: str | Path, view: str = "PA", scene: Any = None) -> Any:
    """A PNG/JPEG/TIFF/DICOM CR/DX radiograph as a single-slice volume node in [0, 1] (see ``read_radiograph``).

    A DICOM film's header is checked as ``dctnet reconstruct`` checks it (``DCTNetLib.io.film``): a film whose
    ViewPosition names the other view is refused, and a mirrored or upside-down film (PatientOrientation) is shown
    flipped back, at its physical pixel spacing. The node remembers its file, so the reconstruction reads that file
    itself (:func:`source_file`).

    Args:
        path: image file.
        view: ``"PA"`` or ``"LAT"``: places the image in a coronal / sagittal plane through the origin.
        scene: MRML scene. Defaults to ``slicer.mrmlScene``.
    """
    from DCTNetLib.io.film import check_view, film_info
    from DCTNetLib.io.radiograph import read_radiograph

    image = read_radiograph(path)
    info = film_info(path, image.shape)
    flip_cols, flip_rows, messages = check_view(info, view.lower())
    for message in messages + info.warnings:
        logger.warning("%s", message)
    image = np.ascontiguousarray(image[::-1 if flip_rows else 1, ::-1 if flip_cols else 1])
    node = nodes.radiograph_to_node(image, view, f"{Path(path).stem} {view.upper()}", scene,
                                    pixel_spacing_mm=info.spacing_mm)
    node.SetAttribute(SOURCE_FILE_ATTRIBUTE, str(Path(path).resolve()))
    node.SetAttribute(SOURCE_DIGEST_ATTRIBUTE, _voxel_digest(node))
    return node


def _voxel_digest(node: Any) -> str:
    import slicer

    array = np.ascontiguousarray(slicer.util.arrayFromVolume(node))
    return hashlib.sha256(array.tobytes() + str(array.dtype).encode()).hexdigest()


def _dicom_database_file(node: Any) -> str | None:
    """The instance file of a single-image node loaded from Slicer's DICOM database (its ``DICOM.instanceUIDs``
    attribute, set by the DICOM plugins), else None."""
    uids = (node.GetAttribute("DICOM.instanceUIDs") or "").split()
    if len(uids) != 1:
        return None
    try:
        import slicer

        database = slicer.dicomDatabase
        return database.fileForInstance(uids[0]) or None if database is not None else None
    except (ImportError, AttributeError):
        return None


def source_file(node: Any) -> Path | None:
    """The file a radiograph node still holds unchanged, for ``dctnet reconstruct`` to read itself; else None.

    In order: a file :func:`load_radiograph` read (when the voxels still have the digest they had then); the
    instance file of an image loaded from Slicer's DICOM database; the file of the node's storage node (Add Data)
    when the node was not modified since it was read. A node made here (DRRs of a CT) has none.
    """
    candidates = []
    recorded = node.GetAttribute(SOURCE_FILE_ATTRIBUTE)
    if recorded and node.GetAttribute(SOURCE_DIGEST_ATTRIBUTE) == _voxel_digest(node):
        candidates.append(recorded)
    if not recorded:
        unmodified = not node.GetModifiedSinceRead()
        storage = node.GetStorageNode()
        candidates += [path for path in (_dicom_database_file(node),
                                         storage.GetFileName() if storage is not None else None) if unmodified]
    for candidate in candidates:
        if candidate and Path(candidate).is_file() and Path(candidate).suffix.lower() in _RADIOGRAPH_SUFFIXES:
            return Path(candidate)
    return None


def radiographs_from_ct(ct_node: Any, scene: Any = None, python: str | None = None, timeout_s: float | None = None,
                        on_log: Callable[[str], None] | None = None) -> tuple[Any, Any]:
    """PA and lateral DRRs of a CT node with the training geometry; also adds the 128³ reference CT.

    The CT is written to a temporary file and ``dctnet drr`` projects it on the worker process (torch is never
    imported in Slicer's process); its files become nodes. Returns ``(paNode, latNode)``, centred on the CT; both
    reference the prepared CT (node reference :data:`DCTNetSlicerLib.nodes.REFERENCE_ROLE`), so a reconstruction
    of them lands on that grid and is compared with it.

    Args:
        ct_node: the CT volume node.
        scene: MRML scene. Defaults to ``slicer.mrmlScene``.
        python: interpreter of the worker. Defaults to ``PythonSlicer``.
        timeout_s: give up after this many seconds.
        on_log: called with each output line of the command.

    Raises:
        RuntimeError: the command failed (its ``error:`` line), timed out, or the scene was closed meanwhile.
    """
    from DCTNetLib.io.ct import read_ct, write_ct
    from DCTNetLib.io.geometry import lps_to_ras
    from DCTNetLib.io.radiograph import read_radiograph

    if ct_node is None:
        raise ValueError("ctNode: no CT volume selected")
    scene = scene if scene is not None else _default_scene()
    folder = Path(tempfile.mkdtemp(prefix="DCTNet-drr-"))
    try:
        source = write_ct(nodes.volume_node_to_ct_volume(ct_node), folder / "ct.nrrd")
        last = run_on_worker(["drr", "--ct", str(source), "--output", str(folder / "drr"), "--progress", "json"],
                             scene, python=python, timeout_s=timeout_s, on_log=on_log)
        outputs, geometry = last["outputs"], last["geometry"]
        name = ct_node.GetName()
        reference = nodes.ct_volume_to_node(read_ct(outputs["reference"]), f"{name} reference 128³", scene,
                                            role="reference")
        centre = lps_to_ras(last["centre_lps"])  # the CT grid's centre, as radiographs.radiograph_centre_ras
        views = []
        for view in ("PA", "LAT"):
            node = nodes.radiograph_to_node(read_radiograph(outputs[view.lower()]), view, f"{name} {view}", scene,
                                            centre_ras=centre)
            node.SetAttribute(radiographs.GEOMETRY_ATTRIBUTE, json.dumps(geometry, sort_keys=True))
            node.SetNodeReferenceID(nodes.REFERENCE_ROLE, reference.GetID())
            views.append(node)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return views[0], views[1]


def run_on_worker(args: list[str], scene: Any = None, python: str | None = None, timeout_s: float | None = None,
                  on_log: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Run one ``dctnet`` request (``args``, with ``--progress json``) on the worker and wait for it; returns its last
    progress event that lists ``outputs``. Closing the scene meanwhile cancels it.

    Raises:
        RuntimeError: the command failed (its ``error:`` line), listed no outputs, timed out, or was cancelled.
    """
    from .tasks import SlicerTask

    events: list[dict[str, Any]] = []
    outcome: dict[str, Any] = {}
    task = SlicerTask(args, on_log=on_log or logger.info, on_event=events.append,
                      on_finished=lambda success, message: outcome.update(success=success, message=message),
                      worker=worker(python))
    guard = SceneGuard(scene if scene is not None else _default_scene(), task.cancel)
    try:
        task.start()
        if not task.wait(timeout_s):
            task.cancel()
            raise RuntimeError(f"dctnet {args[0]} did not finish in {timeout_s:.0f} s")
    finally:
        guard.remove()
    if guard.closed:
        raise RuntimeError("Cancelled: the scene was closed")
    if not outcome.get("success"):
        raise RuntimeError(outcome.get("message") or f"dctnet {args[0]} failed")
    listed = [event for event in events if event.get("event") == "progress" and isinstance(event.get("outputs"), dict)]
    if not listed:
        raise RuntimeError(f"dctnet {args[0]} finished without listing its outputs")
    return listed[-1]


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
    if array.dtype == np.uint8 and single and array.ndim in (3, 4) and not node.GetAttribute(nodes.MONOCHROME1_ATTRIBUTE):
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
def command_args(pa: str | Path, lat: str | Path, output: str | Path, options: Options | None = None,
                 images_only: bool = False, reference: str | Path | None = None) -> list[str]:
    """``dctnet`` arguments (after ``python -m DCTNetLib``) of one reconstruction with all its outputs (the
    bone-suppressed radiographs alone with ``images_only``: the preview), compared with a ``reference`` CT file
    when given (``--reference``: PSNR, SSIM and MAE computed by the command)."""
    options = options or Options()
    args = ["reconstruct", "--pa", str(pa), "--lat", str(lat), "--output", str(output),
            *(["--images-only"] if images_only else ["--extras", "--no-figure"]),
            "--progress", "json", "--device", options.device, "--seed", str(int(options.seed))]
    if options.weights:
        args += ["--weights", str(options.weights)]
    if options.steps:
        args += ["--steps", str(int(options.steps))]
    if not options.input_checks:
        args.append("--no-input-checks")
    if options.refine and not images_only:
        args += ["--refine", "--atlas"] if options.atlas else ["--refine"]
    elif not options.register and not images_only:
        args.append("--no-registration")
    elif not options.mix_atlases and not images_only:
        args.append("--no-atlas")
    if options.fusion != "mean" and not images_only:
        args += ["--fusion", options.fusion]
    if options.dicom_folder and not images_only:
        args += ["--dicom", str(options.dicom_folder)]
    if reference is not None and not images_only:
        args += ["--reference", str(reference)]
    return args


class Run:
    """One reconstruction of two radiograph nodes: its folder, its command line and the files it wrote.

    Args:
        pa_node, lat_node: radiograph volume nodes (single slice; scalar or RGB).
        options: :class:`Options`.
        folder: working folder (created, and removed by :meth:`cleanup`). Defaults to a new temporary folder.
        images_only: the preview (bone-suppressed radiographs only).
    """

    def __init__(self, pa_node: Any, lat_node: Any, options: Options | None = None, folder: str | Path | None = None,
                 images_only: bool = False):
        if pa_node is None or lat_node is None:
            raise ValueError("select both a PA and a lateral radiograph first")
        self.pa_node, self.lat_node = pa_node, lat_node
        self.images_only = images_only
        self.folder = Path(folder) if folder is not None else Path(tempfile.mkdtemp(prefix="DCTNet-"))
        reference_node = None if images_only else pa_node.GetNodeReference(nodes.REFERENCE_ROLE)
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            self.inputs = {view: source_file(node) or export_radiograph(node, self.folder / view)
                           for view, node in (("pa", pa_node), ("lat", lat_node))}
            if reference_node is not None:  # the CT the radiographs were made from: the command compares with it
                from DCTNetLib.io.ct import write_ct

                self.inputs["reference"] = write_ct(nodes.volume_node_to_ct_volume(reference_node),
                                                    self.folder / "reference.nrrd")
        except BaseException:
            self.cleanup()
            raise
        self.args = command_args(self.inputs["pa"], self.inputs["lat"], self.folder / OUTPUT_NAME, options,
                                 images_only, self.inputs.get("reference"))
        self.metrics: dict[str, float] = {}  # PSNR / SSIM / MAE against the reference, from the command
        self.outputs: dict[str, str] | None = None
        self.notes: list[str] = []
        self.warnings: list[str] = []

    def on_event(self, event: dict[str, Any]) -> None:
        """Keep the files, the notes and the warnings for the user of the last progress event."""
        if event.get("event") == "progress" and isinstance(event.get("outputs"), dict):
            self.outputs = {str(role): str(path) for role, path in event["outputs"].items()}
            self.notes = [str(note) for note in event.get("notes") or []]
            self.warnings = [str(line) for line in event.get("warnings") or []]
            self.metrics = {str(key): float(value) for key, value in (event.get("metrics") or {}).items()}

    def load(self, scene: Any = None, existing: dict[str, Any] | None = None) -> tuple[dict[str, Any], dict[str, float]]:
        """The outputs as nodes (see :func:`outputs_to_scene`).

        Raises:
            OutputError: the command listed no outputs, or the radiographs were removed from the scene meanwhile.
        """
        from DCTNetLib.errors import OutputError

        if not self.outputs:
            raise OutputError("the reconstruction finished without listing its outputs")
        if self.pa_node.GetScene() is None or self.lat_node.GetScene() is None:
            raise OutputError("the radiographs were removed from the scene during the reconstruction")
        made, metrics = outputs_to_scene(self.outputs, self.pa_node, self.lat_node, scene, existing, self.images_only)
        # PSNR and SSIM as the command computed them; the MAE of the difference volume when there is one
        return made, {**self.metrics, **metrics}

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
    its MAE are added when there is a reference of the reconstruction's size.

    Args:
        outputs: role → file, from the command's last progress event.
        pa_node, lat_node: the radiographs that were reconstructed.
        scene: MRML scene. Defaults to ``slicer.mrmlScene``.
        existing: nodes of a previous run by role, overwritten instead of adding new ones.
        images_only: load only the bone-suppressed radiographs (the preview).

    Returns:
        ``(nodes by role, metrics)``; metrics (``psnr``, ``ssim``, ``mae_hu``) only with a reference.
    """
    scene = scene if scene is not None else _default_scene()
    existing = {role: node for role, node in (existing or {}).items() if node is not None and node.GetScene() is scene}
    volumes, images = results.read_outputs(outputs, images_only)
    centre = _centre_ras(pa_node)
    made = results.volumes_to_nodes(volumes, images, scene, existing, name=f"{pa_node.GetName()} DCTNet",
                                    centre_ras=centre)
    reference = pa_node.GetNodeReference(nodes.REFERENCE_ROLE)
    for role in volumes:
        results.place_at(made[role], reference, centre)
    metrics: dict[str, float] = {}
    same_grid = reference is not None and "ct" in made and reference.GetImageData() is not None and \
        reference.GetImageData().GetDimensions() == made["ct"].GetImageData().GetDimensions()
    if same_grid:
        made["difference"], metrics = results.compare_to_reference(made["ct"], reference, scene,
                                                                   existing.get("difference"))
    elif reference is not None:  # a model with another output size: the command's metrics only (it resamples)
        logger.info("no difference volume: the reconstruction's grid is not the reference's")
    return made, metrics


def _default_scene() -> Any:
    import slicer

    return slicer.mrmlScene


_WORKERS: dict[str, Any] = {}


def worker(python: str | None = None):
    """The ``dctnet worker`` child reconstructions run on (one per interpreter, started on first use)."""
    from .tasks import Worker, python_executable

    python = python or python_executable()
    if python not in _WORKERS:
        _WORKERS[python] = Worker(python)
    return _WORKERS[python]


def shutdown_workers() -> None:
    """Let the idle workers exit and kill a busy one (module cleanup, application exit)."""
    for each in list(_WORKERS.values()):
        each.close()
    _WORKERS.clear()


class SceneGuard:
    """Cancels a task when the scene it writes into starts closing (File › Close Scene, a new scene, the
    self-test's ``Clear``), so it never writes into removed nodes or points views at unrelated new ones.

    Args:
        scene: the MRML scene.
        cancel: called once when the scene starts closing.
    """

    def __init__(self, scene: Any, cancel: Callable[[], None]) -> None:
        self.scene, self.cancel, self.closed = scene, cancel, False
        # vtkMRMLScene::StartCloseEvent, invoked by vtkMRMLScene::Clear before any node is removed
        self._tag = scene.AddObserver(scene.StartCloseEvent, self._on_close)

    def _on_close(self, caller: Any = None, event: Any = None) -> None:
        if not self.closed:
            self.closed = True
            self.cancel()

    def remove(self) -> None:
        if self._tag is not None:
            self.scene.RemoveObserver(self._tag)
            self._tag = None


def reconstruct(pa_node: Any, lat_node: Any, options: Options | None = None, scene: Any = None,
                existing: dict[str, Any] | None = None, progress: Callable[[float, str], None] | None = None,
                python: str | None = None, images_only: bool = False, timeout_s: float | None = None,
                on_notes: Callable[[list[str]], None] | None = None,
                on_log: Callable[[str], None] | None = None) -> tuple[dict[str, Any], dict[str, float]]:
    """Run ``dctnet reconstruct`` on two radiograph nodes and wait for it; returns :func:`outputs_to_scene`'s.

    The same run as :func:`reconstruct_in_background`, waited for (in Slicer the window stays alive meanwhile).

    Args:
        pa_node, lat_node: radiograph nodes.
        options: :class:`Options`.
        scene: MRML scene. Defaults to ``slicer.mrmlScene``.
        existing: nodes to overwrite, by role.
        progress: ``callback(fraction, message)`` for each stage.
        python: interpreter of the worker. Defaults to ``PythonSlicer`` (see ``tasks.python_executable``).
        images_only: only the bone-suppressed radiographs (the preview).
        timeout_s: give up (and kill the worker) after this many seconds.
        on_notes: ``callback(notes, warnings)`` with what the user must be told (the shipped model is a
            demonstration model trained on DRRs; what could not be checked on the films), called when the run
            succeeds; both are also logged.
        on_log: called with each output line of the command.

    Raises:
        RuntimeError: the command failed (its ``error:`` line), timed out, or the scene was closed.
    """
    outcome: dict[str, Any] = {}

    def finished(success: bool, message: str, made: dict[str, Any], metrics: dict[str, float]) -> None:
        outcome.update(success=success, message=message, made=made, metrics=metrics)

    task = reconstruct_in_background(pa_node, lat_node, options, scene, existing,
                                     on_progress=(lambda f, m: progress(f or 0.0, m)) if progress else None,
                                     on_finished=finished, images_only=images_only, on_notes=on_notes,
                                     python=python, on_log=on_log)
    if not task.wait(timeout_s):
        task.cancel()
        raise RuntimeError(f"dctnet reconstruct did not finish in {timeout_s:.0f} s")
    if not outcome.get("success"):
        raise RuntimeError(outcome.get("message") or "the reconstruction failed")
    return outcome["made"], outcome["metrics"]


def _tell(run: Run, on_notes: Callable[..., None] | None) -> None:
    for note in run.notes:
        logger.warning("note: %s", note)
    for line in run.warnings:
        logger.warning("%s", line)
    if on_notes is not None:
        on_notes(run.notes, run.warnings)


def reconstruct_in_background(pa_node: Any, lat_node: Any, options: Options | None = None, scene: Any = None,
                              existing: dict[str, Any] | None = None,
                              on_progress: Callable[[float | None, str], None] | None = None,
                              on_finished: Callable[[bool, str, dict[str, Any], dict[str, float]], None] | None = None,
                              images_only: bool = False, on_notes: Callable[..., None] | None = None,
                              python: str | None = None, on_log: Callable[[str], None] | None = None):
    """Start ``dctnet reconstruct`` on two radiograph nodes and return the running ``SlicerTask`` at once.

    When it ends, ``on_finished(success, message, nodes_by_role, metrics)`` is called on the GUI thread; on
    success the nodes are already in the scene, and ``on_notes(notes, warnings)`` has been called first (see
    :func:`reconstruct`). ``task.cancel()`` kills the run and everything it started; so does closing the scene,
    and then nothing is loaded. The run's temporary folder is removed whatever happens.
    """
    from .tasks import SlicerTask

    scene = scene if scene is not None else _default_scene()
    run = Run(pa_node, lat_node, options, images_only=images_only)
    guard: SceneGuard | None = None

    def finished(success: bool, message: str) -> None:
        made: dict[str, Any] = {}
        metrics: dict[str, float] = {}
        try:
            if guard is not None and guard.closed:
                success, message = False, "Cancelled: the scene was closed"
            elif success:
                made, metrics = run.load(scene, existing)
                _tell(run, on_notes)
        except Exception as exc:  # reported through the callback: the GUI shows it, the log has the trace
            logger.exception("reading the reconstruction failed")
            success, message = False, str(exc)
        finally:
            run.cleanup()
            if guard is not None:
                guard.remove()
        if on_finished:
            on_finished(success, message, made, metrics)

    try:
        task = SlicerTask(run.args, on_log=on_log or logger.info, on_progress=on_progress, on_event=run.on_event,
                          on_finished=finished, worker=worker(python))
        guard = SceneGuard(scene, task.cancel)
        return task.start()
    except BaseException:
        run.cleanup()
        if guard is not None:
            guard.remove()
        raise


# -- views ---------------------------------------------------------------------------------------------------------
def show_results(volumes: dict[str, Any], pa_node: Any, lat_node: Any, show_uncertainty: bool = False,
                 views: Any = None, volume_rendering: bool = False, volume_rendering_logic: Any = None) -> None:
    """The results layout: the CT in linked axial/sagittal/coronal views (the uncertainty map over it, with its
    colour legend, when asked), the radiographs in their own row, and with ``volume_rendering`` the CT in the 3D
    view with :data:`DCTNetSlicerLib.display.VOLUME_RENDERING_PRESET` (hidden again without it)."""
    from . import display

    overlay = volumes.get("uncertainty") if show_uncertainty else None
    layout.show_results(volumes["ct"], overlay_node=overlay, views=views,
                        radiographs={**volumes, "pa": pa_node, "lat": lat_node})
    display.show_legend(volumes.get("uncertainty"), visible=show_uncertainty)
    display.show_volume_rendering(volumes["ct"], volume_rendering, volume_rendering_logic=volume_rendering_logic)


def undo_monochrome1(node: Any) -> bool:
    """Show a MONOCHROME1 film (stored high values = dark) that Slicer loaded without inverting it the right way
    round. Whether a reader inverts MONOCHROME1 depends on it (slicer-core's ITK/GDCM archetype reader does; a
    reader that does not leaves bone dark), so the node's voxels are compared with the film as
    ``read_radiograph`` reads it (bright = attenuation) and only a node that correlates negatively is changed: its
    display gets the inverted grey colour table (values stay as stored; the reconstruction reads the film's file)
    and it is marked so that an export inverts it too. Returns True when the node is such a film."""
    if node is None or node.GetAttribute(SOURCE_FILE_ATTRIBUTE) or node.GetAttribute(nodes.MONOCHROME1_ATTRIBUTE):
        return bool(node is not None and node.GetAttribute(nodes.MONOCHROME1_ATTRIBUTE))
    path = _dicom_database_file(node) or (node.GetStorageNode().GetFileName() if node.GetStorageNode() else None)
    if not path or not Path(path).is_file():
        return False
    try:
        import slicer

        from DCTNetLib.io.radiograph import dcmread_checked, has_dicom_prefix, read_radiograph

        if not has_dicom_prefix(path):
            return False
        photometric = str(dcmread_checked(path, stop_before_pixels=True).get("PhotometricInterpretation", ""))
        if photometric.strip().upper() != "MONOCHROME1":
            return False
        truth = read_radiograph(path)
        stored = np.squeeze(np.asarray(slicer.util.arrayFromVolume(node), dtype=np.float64))
    except Exception as exc:  # not a readable DICOM film: nothing to undo
        logger.info("cannot check the DICOM film %s: %s", path, exc)
        return False
    if stored.shape != truth.shape or float(np.corrcoef(stored.ravel(), truth.ravel())[0, 1]) > -0.5:
        return False  # loaded the right way round already
    node.SetAttribute(nodes.MONOCHROME1_ATTRIBUTE, "1")
    display = node.GetDisplayNode()
    if display is not None:
        # one of the colour tables every Slicer scene holds (vtkMRMLColorTableNode type InvertedGrey)
        display.SetAndObserveColorNodeID("vtkMRMLColorTableNodeInvertedGrey")
    return True


def show_radiographs(pa_node: Any, lat_node: Any, outputs: dict[str, Any] | None = None, views: Any = None) -> None:
    """The results layout with only the radiograph row filled (before a reconstruction): the two radiographs and
    the bone-suppressed ones among ``outputs`` (nodes of a run by role), if any."""
    for node in (pa_node, lat_node):
        undo_monochrome1(node)
    layout.ensure_layout(views)
    layout.show_radiographs({**(outputs or {}), "pa": pa_node, "lat": lat_node}, views)
