"""Real films reach ``dctnet reconstruct`` exactly as on the command line, and the run's lifecycle, on real MRML.

- A DICOM film loaded in the module, with Add Data or from Slicer's DICOM database reaches the command as its own
  file, so the command's header checks apply and the model input is the command line's (a mirrored 0.4 mm film: a
  flipped 128² image both ways); a node whose voxels changed is written out instead.
- Closing the scene cancels a running reconstruction and nothing is loaded into the new scene.
- Reconstructions run on one worker process kept alive between clicks; the preview runs the images-only mode.
- 2-D images loaded as Slicer loads them (one axial slice) are shown in slice views rotated to their plane.

Run with ``Testing/SlicerCore/run.sh``.
"""

from __future__ import annotations

import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

slicer = pytest.importorskip("slicer")
if not hasattr(slicer, "vtkMRMLScene"):
    pytest.skip("`slicer` here is not slicer-core's MRML build", allow_module_level=True)
pydicom = pytest.importorskip("pydicom")

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "Python"))
from test_io_radiograph_pydicom import write_dx  # noqa: E402

from DCTNetLib.commands.reconstruct import read_films  # noqa: E402  (torch-free: what the command reads)
from DCTNetLib.io.radiograph import resize_radiograph  # noqa: E402
from DCTNetSlicerLib import layout, nodes, reconstruction  # noqa: E402

SIDE = 1024  # a 0.4 mm film of 410 mm: mapped onto the 500 mm training detector by the command


def _write_film(path: Path, view: str, orientation: tuple[str, str], seed: int) -> np.ndarray:
    """A DX film with ImagerPixelSpacing 0.4 mm, ViewPosition and PatientOrientation; returns its pixels."""
    rows, cols = np.mgrid[0:SIDE, 0:SIDE] / SIDE
    pixels = (np.exp(-((rows - 0.45) / 0.3) ** 2 - ((cols - 0.3) / 0.15) ** 2) * 3000
              + np.random.default_rng(seed).integers(0, 200, (SIDE, SIDE))).astype(np.uint16)
    write_dx(path, pixels)  # the main suite's writer (pydicom 2.4 and 3.x)
    ds = pydicom.dcmread(path)
    ds.ViewPosition, ds.PatientOrientation, ds.ImagerPixelSpacing = view, list(orientation), [0.4, 0.4]
    ds.save_as(str(path))
    return pixels


def _add_data(scene, path: Path):
    """What File › Add Data does with an image file: a volume node read by its archetype storage node."""
    node = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", path.stem)
    storage = scene.AddNewNodeByClass("vtkMRMLVolumeArchetypeStorageNode")
    storage.SetFileName(str(path))
    node.SetAndObserveStorageNodeID(storage.GetID())
    assert storage.ReadData(node)
    return node


def _model_input(pa: Path, lat: Path) -> tuple[np.ndarray, np.ndarray]:
    (pa_image, lat_image), _ = read_films(pa, lat)
    return resize_radiograph(pa_image), resize_radiograph(lat_image)


@pytest.fixture
def films(tmp_path):
    pa, lat = tmp_path / "pa.dcm", tmp_path / "lat.dcm"
    _write_film(pa, "PA", ("R", "F"), seed=1)  # stored mirrored: the command flips it back
    _write_film(lat, "LL", ("P", "F"), seed=2)
    return pa, lat


def test_dicom_films_reach_the_command_as_their_files_and_give_the_command_lines_model_input(scene, films, tmp_path):
    pa_file, lat_file = films
    expected = _model_input(pa_file, lat_file)
    assert expected[0].shape == (128, 128)

    # 1. loaded by the module
    pa, lat = (reconstruction.load_radiograph(path, view, scene) for path, view in ((pa_file, "PA"), (lat_file, "LAT")))
    np.testing.assert_allclose(nodes.node_ijk_to_ras(pa)[:3, :3] @ [1, 0, 0], [-0.4, 0, 0], atol=1e-9)  # 0.4 mm
    shown = slicer.util.arrayFromVolume(pa)[0]
    raw = pydicom.dcmread(pa_file).pixel_array.astype(np.float32)
    assert np.corrcoef(shown.ravel(), raw[:, ::-1].ravel())[0, 1] > 0.999  # shown flipped back, as the model sees it
    # 2. with Add Data: Slicer's volume archetype storage node reads the DICOM file (as one axial slice)
    added = _add_data(scene, lat_file)
    assert slicer.util.arrayFromVolume(added).shape == (1, SIDE, SIDE) and not added.GetModifiedSinceRead()
    # 3. from Slicer's DICOM database: the DICOM plugins set DICOM.instanceUIDs; the database maps it to the file
    from_database = _add_data(scene, pa_file)  # the DICOM plugins read through the same storage node
    from_database.GetStorageNode().SetFileName(str(tmp_path / "no longer here.dcm"))  # only the database knows
    from_database.SetAttribute("DICOM.instanceUIDs", str(pydicom.dcmread(pa_file).SOPInstanceUID))
    database = SimpleNamespace(fileForInstance=lambda uid: str(pa_file) if uid == from_database.GetAttribute(
        "DICOM.instanceUIDs") else "")
    previous = getattr(slicer, "dicomDatabase", None)
    slicer.dicomDatabase = database
    try:
        assert reconstruction.source_file(from_database) == pa_file
        for pa_node, lat_node in ((pa, lat), (from_database, added)):
            run = reconstruction.Run(pa_node, lat_node)
            try:
                assert run.inputs == {"pa": pa_file, "lat": lat_file}
                given = dict(zip(run.args[::1], run.args[1:]))
                assert given["--pa"] == str(pa_file) and given["--lat"] == str(lat_file)
                for got, want in zip(_model_input(run.inputs["pa"], run.inputs["lat"]), expected):
                    np.testing.assert_array_equal(got, want)
            finally:
                run.cleanup()
    finally:
        slicer.dicomDatabase = previous

    # what the old export path gave the model for this film: unflipped, the whole 410 mm image as the 500 mm field
    exported = reconstruction.export_radiograph(from_database, tmp_path / "exported_pa")
    before = _model_input(exported, lat_file)[0]
    assert float(np.abs(before - expected[0]).mean()) > 0.05

    # a node edited after loading is not its file any more: written out, and read back as the node holds it
    slicer.util.arrayFromVolume(pa)[0, :10, :10] = 1.0
    pa.Modified()
    assert reconstruction.source_file(pa) is None
    run = reconstruction.Run(pa, lat)
    try:
        assert run.inputs["pa"].parent == run.folder and run.inputs["lat"] == lat_file
    finally:
        run.cleanup()
    assert not run.folder.exists()


def test_closing_the_scene_cancels_the_run_and_loads_nothing(scene, tiny_bundle, child_python):
    pa = nodes.radiograph_to_node(np.random.default_rng(0).random((32, 32)), "PA", "pa", scene)
    lat = nodes.radiograph_to_node(np.random.default_rng(1).random((32, 32)), "LAT", "lat", scene)
    finished = []
    task = reconstruction.reconstruct_in_background(
        pa, lat, reconstruction.Options(weights=str(tiny_bundle), device="cpu", input_checks=False, steps=2), scene,
        on_finished=lambda *result: finished.append(result), python=child_python)
    folder = Path(task.args[task.args.index("--output") + 1]).parent
    scene.Clear(0)  # File › Close Scene
    assert finished and finished[0][0] is False and "Cancelled" in finished[0][1]
    assert finished[0][2] == {} and not task.running and not folder.exists()
    assert scene.GetNumberOfNodesByClass("vtkMRMLScalarVolumeNode") == 0
    assert task.wait(5)  # nothing left to deliver: the worker was killed with the run


def test_reconstructions_share_one_worker_and_the_preview_runs_images_only(scene, tiny_bundle, child_python):
    pa = nodes.radiograph_to_node(np.random.default_rng(0).random((32, 32)), "PA", "pa", scene)
    lat = nodes.radiograph_to_node(np.random.default_rng(1).random((32, 32)), "LAT", "lat", scene)
    options = reconstruction.Options(weights=str(tiny_bundle), device="cpu", input_checks=False, steps=2)
    reconstruction.reconstruct(pa, lat, options, scene, python=child_python, timeout_s=600)
    worker = reconstruction.worker(child_python)
    pid = worker.process.pid
    lines = []
    made, _ = reconstruction.reconstruct(pa, lat, options, scene, python=child_python, images_only=True,
                                         timeout_s=600, on_log=lines.append)
    assert worker.process.pid == pid and worker.alive and not worker.busy  # the same process served both
    assert set(made) == {"pa_bs", "lat_bs"}
    command = next(line for line in lines if line.startswith("$ "))
    assert "--images-only" in command and "--extras" not in command
    reconstruction.shutdown_workers()
    assert not reconstruction._WORKERS


def test_images_loaded_as_one_axial_slice_are_shown_in_their_own_plane(scene, views, films):
    """Add Data and the DICOM browser load a 2-D image as one axial slice; the radiograph views rotate to it, while
    the module's own radiographs keep their coronal / sagittal views."""
    added = _add_data(scene, films[0])
    normal = nodes.node_ijk_to_ras(added)[:3, 2]
    reconstruction.show_radiographs(added, added, views=views)
    for role in ("pa", "lat"):
        slice_node = views.slice_logic(layout.RADIOGRAPH_ROLES[role]).GetSliceNode()
        slice_normal = nodes.matrix_to_numpy(slice_node.GetSliceToRAS())[:3, 2]
        assert abs(float(np.dot(slice_normal, normal / np.linalg.norm(normal)))) == pytest.approx(1.0, abs=1e-6)
        assert slice_node.GetOrientation() not in ("Coronal", "Sagittal")  # the old views cut it edge-on
    ours = reconstruction.load_radiograph(films[0], "PA", scene)
    reconstruction.show_radiographs(ours, ours, views=views)
    assert views.slice_logic(layout.RADIOGRAPH_ROLES["pa"]).GetSliceNode().GetOrientation() == "Coronal"


def test_a_monochrome1_film_loaded_by_slicer_is_shown_and_exported_the_right_way_round(scene, tmp_path):
    from DCTNetLib.io.radiograph import read_radiograph

    film = tmp_path / "mono1.dcm"
    _write_film(film, "PA", ("L", "F"), seed=3)
    ds = pydicom.dcmread(film)
    ds.PhotometricInterpretation = "MONOCHROME1"
    ds.save_as(str(film))
    truth = read_radiograph(film)  # bright = attenuation: the stored values inverted
    loaded = _add_data(scene, film)  # slicer-core's ITK/GDCM reader inverts MONOCHROME1 itself: left alone
    assert np.corrcoef(slicer.util.arrayFromVolume(loaded)[0].ravel(), truth.ravel())[0, 1] > 0.99
    assert not reconstruction.undo_monochrome1(loaded)
    # a reader that keeps the stored values (bone dark), as the issue saw it through the DICOM browser
    raw = pydicom.dcmread(film).pixel_array.astype(np.float32)
    node = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "as stored")
    slicer.util.updateVolumeFromArray(node, raw[np.newaxis])
    node.CreateDefaultDisplayNodes()
    node.SetAttribute("DICOM.instanceUIDs", str(pydicom.dcmread(film).SOPInstanceUID))
    previous = getattr(slicer, "dicomDatabase", None)
    slicer.dicomDatabase = SimpleNamespace(fileForInstance=lambda uid: str(film))
    try:
        assert reconstruction.undo_monochrome1(node)
    finally:
        slicer.dicomDatabase = previous
    assert node.GetDisplayNode().GetColorNodeID() == "vtkMRMLColorTableNodeInvertedGrey"
    assert np.corrcoef(nodes.node_to_radiograph(node).ravel(), truth.ravel())[0, 1] > 0.999
    exported = reconstruction.export_radiograph(node, tmp_path / "exported")
    assert np.corrcoef(read_radiograph(exported).ravel(), truth.ravel())[0, 1] > 0.999
    plain = nodes.radiograph_to_node(truth, "PA", "plain", scene)
    assert not reconstruction.undo_monochrome1(plain)  # a node of our own is left alone


def test_dicom_export_writes_the_ct_as_a_series_filed_under_the_pa_films_patient(scene, films, tiny_bundle,
                                                                                 child_python, tmp_path):
    """The module's DICOM export folder: each reconstruction writes a new series folder (``--dicom``), which takes
    the patient and study of a DICOM PA film; the preview never writes one."""
    pa_file, lat_file = films
    film = pydicom.dcmread(pa_file)
    film.PatientID, film.StudyInstanceUID = "DCTNET-TEST-7", "1.2.826.0.1.3680043.10.999.7"
    film.save_as(str(pa_file))
    pa = reconstruction.load_radiograph(pa_file, "PA", scene)
    lat = reconstruction.load_radiograph(lat_file, "LAT", scene)
    (tmp_path / "export").mkdir()  # the folder the user picked
    series = reconstruction.dicom_series_folder(tmp_path / "export", pa.GetName())
    assert series.parent == tmp_path / "export" and not series.exists()
    options = reconstruction.Options(weights=str(tiny_bundle), device="cpu", input_checks=False, steps=2,
                                     dicom_folder=str(series))
    lines = []
    volumes, _ = reconstruction.reconstruct(pa, lat, options, scene, python=child_python, timeout_s=600,
                                            on_log=lines.append)
    assert "--dicom" in next(line for line in lines if line.startswith("$ "))
    slices = [pydicom.dcmread(path) for path in sorted(series.glob("*.dcm"))]
    hu = slicer.util.arrayFromVolume(volumes["ct"])
    assert len(slices) == hu.shape[0]
    assert {(ds.Modality, ds.PatientID, ds.StudyInstanceUID) for ds in slices} == \
        {("CT", "DCTNET-TEST-7", "1.2.826.0.1.3680043.10.999.7")}
    stored = np.stack([ds.pixel_array * float(ds.RescaleSlope) + float(ds.RescaleIntercept) for ds in slices])
    assert abs(float(stored.mean()) - float(hu.mean())) < 1.0  # the same CT, in integer HU
    # the next export goes to a new folder; a preview writes none
    assert reconstruction.dicom_series_folder(tmp_path / "export", pa.GetName()) != series
    assert "--dicom" not in reconstruction.command_args("pa.png", "lat.png", "ct.nrrd", options, images_only=True)


def test_films_naming_two_patients_warn_and_are_not_exported_under_one(scene, films, tiny_bundle, child_python,
                                                                         tmp_path):
    """A PA and a lateral whose DICOM headers name two patients: the module's run reports the command's warning that
    names them, and with a DICOM export folder the run fails with that reason and writes no series."""
    pa_file, lat_file = films
    for path, patient in ((pa_file, "DCTNET-TEST-7"), (lat_file, "DCTNET-TEST-8")):
        film = pydicom.dcmread(path)
        film.PatientID = patient
        film.save_as(str(path))
    pa = reconstruction.load_radiograph(pa_file, "PA", scene)
    lat = reconstruction.load_radiograph(lat_file, "LAT", scene)
    (tmp_path / "export").mkdir()  # the folder the user picked
    series = reconstruction.dicom_series_folder(tmp_path / "export", pa.GetName())
    options = reconstruction.Options(weights=str(tiny_bundle), device="cpu", input_checks=False, steps=2,
                                     dicom_folder=str(series))
    with pytest.raises(RuntimeError, match="name two patients"):
        reconstruction.reconstruct(pa, lat, options, scene, python=child_python, timeout_s=600)
    assert not series.exists()
    told = []
    options = reconstruction.Options(weights=str(tiny_bundle), device="cpu", input_checks=False, steps=2)
    reconstruction.reconstruct(pa, lat, options, scene, python=child_python, timeout_s=600,
                               on_notes=lambda notes, warnings: told.extend(warnings))
    assert any("name two patients" in line and "DCTNET-TEST-8" in line for line in told)
