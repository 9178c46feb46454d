"""Issues 5 and 12, bad and hostile input: every case of the generated corpus (Testing/Data/bad_inputs/make_corpus.py) fed to every public
entry point its manifest names. Each must give its expected outcome: a DCTNet error of the expected type whose
message names the problem *and* the file, or acceptance with the documented conversion / warning. No other exception
type may escape, the command line must exit 2 with one line on stderr and no traceback, and no weights file may run
code.
"""

from __future__ import annotations

import builtins
import errno
import importlib.util
import logging
import os
import shutil
import sys
import warnings
from collections import namedtuple
from pathlib import Path

import numpy as np
import pytest

from DCTNetLib import cli
from DCTNetLib.commands import reconstruct as _reconstruct_command  # noqa: F401  (a broken import fails here)
from DCTNetLib.errors import DCTNetError, InputError, OutputError, WeightsError
from DCTNetLib.checkpoints import bundle as _bundle  # noqa: F401  (a broken import fails here)

REPO_ROOT = Path(__file__).resolve().parents[2]
CORPUS_SCRIPT = REPO_ROOT / "Testing" / "Data" / "bad_inputs" / "make_corpus.py"


def _load_corpus_module():
    spec = importlib.util.spec_from_file_location("dctnet_bad_input_corpus", CORPUS_SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses and pickling look the module up by name
    spec.loader.exec_module(module)
    return module


mc = _load_corpus_module()
ERRORS = {"InputError": InputError, "OutputError": OutputError, "WeightsError": WeightsError}
CLI_ENTRIES = {"prepare", "reconstruct", "reconstruct_weights", "evaluate", "reconstruct_dicom", "reconstruct_batch"}
# Library text that must never reach a user (pydicom's advice, torch's C++ assertion, a traceback, a temp name).
LEAKS = ("force=True", "enforce fail", "Traceback", "/.tmp-")
PAIRS = [(name, entry) for name, case in mc.MANIFEST.items() for entry in case.expect]
LUMA = np.array([0.299, 0.587, 0.114])  # ITU-R BT.601, the documented RGB → grey rule


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("bad_inputs")
    mc.make_corpus(folder)
    return folder


# ---------------------------------------------------------------------------------------------- simulations


def _simulate(recipe: str, target: Path, monkeypatch, request) -> None:
    """Make ``target`` unreadable / its folder unwritable / the disk full, as far as this process can tell.

    Real permissions are used when not running as root; root reads and writes everything, so then the refusal is
    injected at ``open`` / ``os.open`` for that one path, which is where a real refusal would surface.
    """
    if recipe == "no_read_permission":
        if os.geteuid() != 0:
            target.chmod(0)
            request.addfinalizer(lambda: target.chmod(0o644))
            return
        real_open = builtins.open  # root reads everything: refuse this one path at open()

        def open_refusing(file, *args, **kwargs):
            if isinstance(file, (str, os.PathLike)) and Path(file).resolve() == target.resolve():
                raise PermissionError(errno.EACCES, "Permission denied", str(file))
            return real_open(file, *args, **kwargs)

        monkeypatch.setattr(builtins, "open", open_refusing)
    elif recipe == "not_writable":
        folder = target.parent.resolve()
        real = os.open

        def os_open_refusing(path, flags, *args, **kwargs):
            if Path(path).resolve().parent == folder and flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT):
                raise PermissionError(errno.EACCES, "Permission denied", str(path))
            return real(path, flags, *args, **kwargs)

        monkeypatch.setattr(os, "open", os_open_refusing)
    elif recipe == "disk_full_space":
        usage = namedtuple("usage", "total used free")
        monkeypatch.setattr(shutil, "disk_usage", lambda path: usage(10**9, 10**9, 0))
    elif recipe == "disk_full_write":
        import SimpleITK as sitk

        real_write = os.write

        def write_enospc(fd, data):
            if fd <= 2:
                return real_write(fd, data)
            raise OSError(errno.ENOSPC, "No space left on device")

        def sitk_write_fails(*args, **kwargs):  # what ITK raises when its writer cannot write every byte
            raise RuntimeError("Exception thrown in SimpleITK ImageFileWriter_Execute: Could not write file")

        monkeypatch.setattr(os, "write", write_enospc)
        monkeypatch.setattr(sitk, "WriteImage", sitk_write_fails)
    elif recipe == "appears_meanwhile":  # another run writes the same output while this one computes
        from DCTNetLib.io import atomic

        real_fsync = atomic._fsync_file

        def fsync_then_other_run_finishes(tmp):
            real_fsync(tmp)
            if Path(tmp).parent.resolve() == target.parent.resolve() and not target.exists():
                target.write_bytes(b"written by another run")

        target.unlink(missing_ok=True)
        request.addfinalizer(lambda: target.unlink(missing_ok=True))
        monkeypatch.setattr(atomic, "_fsync_file", fsync_then_other_run_finishes)
    elif recipe == "file_size_limit":
        pass  # a real limit, set in a child process only: see _call_library_under_fsize_limit
    elif recipe:
        raise AssertionError(f"unknown simulation {recipe}")


# ------------------------------------------------------------------------------------------------ entries


def _call_library(entry: str, name: str, path: Path, corpus: Path):
    """Run one library entry point on one case; returns its result (errors propagate)."""
    if entry == "read_ct":
        from DCTNetLib.io.ct import read_ct
        return read_ct(path)
    if entry == "read_radiograph":
        from DCTNetLib.io.radiograph import read_radiograph
        return read_radiograph(path)
    if entry == "load_radiograph":
        from DCTNetLib.io.radiograph import load_radiograph
        return load_radiograph(path)
    if entry == "write_ct":
        from DCTNetLib.io.ct import CTVolume, write_ct
        return write_ct(CTVolume(mc.synthetic_ct_hu(), spacing=(2.0, 1.5, 1.5)), path)
    if entry == "write_ct_new":
        from DCTNetLib.io.ct import CTVolume, write_ct
        return write_ct(CTVolume(mc.synthetic_ct_hu(), spacing=(2.0, 1.5, 1.5)), path, overwrite=False)
    if entry == "bundle":
        from DCTNetLib.checkpoints.bundle import load_model_bundle
        return load_model_bundle(path)
    if entry == "write_text":
        from DCTNetLib.io.atomic import atomic_write_text
        return atomic_write_text(path.with_name("report.json"), "{}\n")
    if entry == "check_pair":
        from DCTNetLib.io.radiograph import read_radiograph, view_pair_warnings
        pa, lat = read_radiograph(corpus / "pair_pa.png"), read_radiograph(corpus / "pair_lat.png")
        return view_pair_warnings(pa, pa) if name == "pair_identical" else view_pair_warnings(lat, pa)
    if entry == "load_checkpoint":
        from DCTNetLib.checkpoints.checkpoint import load_checkpoint
        return load_checkpoint(path)
    if entry == "safe_load":
        from DCTNetLib.io.safe_load import load_torch_file
        return load_torch_file(path, expected_sha256=mc.weights_sha256(corpus).get(path.name))
    if entry == "numpy_pickle":
        from DCTNetLib.io.safe_load import load_numpy_pickle
        return load_numpy_pickle(path)
    raise AssertionError(f"no library entry {entry}")


_CHILD = """
import json, resource, sys
from pathlib import Path
sys.path.insert(0, sys.argv[1])
soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
resource.setrlimit(resource.RLIMIT_FSIZE, (int(sys.argv[2]), hard))
import test_reliability_corpus as t
from DCTNetLib.errors import DCTNetError
try:
    t._call_library(sys.argv[3], sys.argv[4], Path(sys.argv[5]), Path(sys.argv[6]))
    print(json.dumps(None))
except DCTNetError as exc:
    print(json.dumps([type(exc).__name__, str(exc)]))
"""


def _call_library_under_fsize_limit(entry: str, name: str, path: Path, corpus: Path):
    """``_call_library`` in a child process under a real file-size limit (a quota, ``ulimit -f``).

    The limit is per process and covers every file it writes, so setting it in pytest's own process would also stop
    pytest's output when that is redirected to a file longer than the limit (as in CI). The child's DCTNet error is
    raised again here with its type and message; anything else it raises fails the test with its traceback.
    """
    import json
    import subprocess

    done = subprocess.run([sys.executable, "-c", _CHILD, str(Path(__file__).parent), str(mc.FSIZE_LIMIT), entry,
                           name, str(path), str(corpus)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    if result is not None:
        kind, message = result
        raise ERRORS[kind](message)
    return path


def _prepare_source(name: str, path: Path, tmp_path: Path) -> tuple[str, Path]:
    """A download-like source folder holding only this case: LIDC layout for DICOM folders, NIfTI for files."""
    source = tmp_path / "source"
    if name.startswith("src_"):  # already a download-like NIfTI folder
        shutil.copytree(path, source)
        return "ctspine1k", source
    if path.is_dir():
        shutil.copytree(path, source / "LIDC-IDRI-0001" / "01-01-2000-CT" / path.name, symlinks=True)
        return "lidc-idri", source
    source.mkdir()
    shutil.copy(path, source / path.name)
    return "ctspine1k", source


def _cli(argv: list[str], capsys) -> tuple[int, str, str]:
    capsys.readouterr()
    code = cli.main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def _assert_one_line_error(code: int, err: str, fragment: str, names: list[str]) -> None:
    assert code == 2, f"exit code {code}, stderr: {err!r}"
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1, f"expected one error line, got {lines}"
    assert not [leak for leak in LEAKS if leak in lines[0]], lines[0]
    assert fragment.lower() in lines[0].lower(), lines[0]
    assert any(n in lines[0] for n in names), f"{names} not named in: {lines[0]}"


def _run_cli(entry: str, name: str, case, path: Path, corpus: Path, tmp_path: Path, capsys, monkeypatch,
             request) -> None:
    outcome, fragment = case.expect[entry]
    if entry in ("reconstruct", "reconstruct_weights"):
        good = ["--pa", corpus / "good_pa.png", "--lat", corpus / "good_lat.png"]
        if entry == "reconstruct_weights":
            argv = [*good, "--output", tmp_path / "ct.nii.gz", "--weights", path]
        elif name == "out_is_input":
            argv = ["--ct", path, "--output", path, "--overwrite"]
        elif outcome == "ok":  # a legal but awkward output name: written into this test's folder
            output = tmp_path / path.relative_to(corpus)
            output.parent.mkdir(parents=True, exist_ok=True)
            argv = [*good, "--output", output]
        elif name.startswith("out_"):
            argv = [*good, "--output", path]
        else:
            argv = ["--pa", path, "--lat", corpus / "good_lat.png", "--output", tmp_path / "ct.nii.gz"]
        before = path.read_bytes() if len(path.name) < 255 and path.is_file() else None
        _simulate(case.simulate, path, monkeypatch, request)
        code, _, err = _cli(["reconstruct", *map(str, argv), "--device", "cpu"], capsys)
        if outcome == "ok":
            from DCTNetLib.io.ct import read_ct
            assert code == 0 and not err.strip().count("\n"), (code, err)
            assert read_ct(output).shape == (128, 128, 128)
            assert [p.name for p in output.parent.iterdir()] == [output.name]  # no temporary file left
            return
        _assert_one_line_error(code, err, fragment, [path.name, path.parent.name])
        if before is not None and entry == "reconstruct":
            assert path.read_bytes() == before, "an input or an earlier file was changed"
        if case.simulate == "appears_meanwhile":
            assert path.read_bytes() == b"written by another run"  # the other run's file is kept
            assert not [p for p in path.parent.iterdir() if p.name.startswith(".tmp-")]
        return
    if entry == "evaluate":
        _run_evaluate(path, fragment, tmp_path, capsys)
        return
    if entry in ("reconstruct_dicom", "reconstruct_batch"):
        _run_refused_outputs(entry, path, fragment, corpus, tmp_path, capsys)
        return
    # dctnet prepare
    output = tmp_path / "prepared"
    if outcome == "prepared":
        dataset, source = _prepare_source(name, path, tmp_path)
        code, out, err = _cli(["prepare", "--dataset", dataset, "--source", str(source), "--output", str(output),
                               "--workers", "1"], capsys)
        assert code == 0 and "Traceback" not in err and fragment in out + err, (code, out, err)
        _check_prepared(name, output)
        return
    if outcome == "failed":
        dataset, source = _prepare_source(name, path, tmp_path)
        code, out, err = _cli(["prepare", "--dataset", dataset, "--source", str(source), "--output", str(output),
                               "--workers", "1"], capsys)
        assert code == 1 and "Traceback" not in err, (code, err)
        assert "0 done" in out and "1 failed" in out, out
        failed = (output / "failed.txt").read_text(encoding="utf-8").strip().splitlines()
        assert len(failed) == 1, failed
        assert fragment.lower() in failed[0].lower(), failed[0]
        assert str(source) in failed[0], failed[0]  # names the series folder or file inside the download
        return
    # output problems: a source with one case (a good CT, or a bad one for the write test) and a failing disk
    good = name == "out_disk_full_space"
    dataset, source = _prepare_source(name, corpus / ("good_ct.nii.gz" if good else "ct_nan.nii.gz"), tmp_path)
    _simulate(case.simulate, output / "x", monkeypatch, request)
    code, _, err = _cli(["prepare", "--dataset", dataset, "--source", str(source), "--output", str(output),
                         "--workers", "1"], capsys)
    _assert_one_line_error(code, err, fragment, [output.name])


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _run_refused_outputs(entry: str, path: Path, fragment: str, corpus: Path, tmp_path: Path, capsys) -> None:
    """``--dicom FOLDER --overwrite`` over a folder it must not replace, or ``--batch`` with an id that is a path:
    one line, exit 2, the folder byte-identical and nothing written anywhere."""
    good = ["--lat", str(corpus / "good_lat.png"), "--overwrite", "--device", "cpu"]
    if entry == "reconstruct_dicom":
        pa = path / "pa.png" if (path / "pa.png").exists() else corpus / "good_pa.png"
        output = path / "ct.nii.gz" if (path / "ct.nii.gz").exists() else tmp_path / "ct.nii.gz"
        argv = ["--pa", str(pa), "--output", str(output), "--dicom", str(path)]
    else:
        good = ["--overwrite", "--device", "cpu"]
        argv = ["--batch", str(path), "--output", str(tmp_path / "volumes"), "--dicom", str(tmp_path / "dicom")]
    before = _snapshot(path) if path.is_dir() else path.read_bytes()
    code, _, err = _cli(["reconstruct", *argv, *good], capsys)
    _assert_one_line_error(code, err, fragment, [path.name])
    assert (_snapshot(path) if path.is_dir() else path.read_bytes()) == before, "the folder was changed"
    assert list(tmp_path.iterdir()) == [], "something was written"


def _run_evaluate(checkpoint: Path, fragment: str, tmp_path: Path, capsys) -> None:
    """``dctnet evaluate --overwrite`` with a bad checkpoint must leave the earlier results byte-identical."""
    from DCTNetLib.data.case_splits import write_splits
    from DCTNetLib.data.prepared_cases import write_case

    data = tmp_path / "prepared"
    rng = np.random.default_rng(0)
    write_case(data / "cases" / "c0", rng.random((16, 16, 16)), rng.random((2, 16, 16)), rng.random((2, 16, 16)),
               {"case_id": "c0"})
    write_splits(data, {"train": [], "val": [], "test": ["c0"]})
    out = tmp_path / "eval"
    out.mkdir()
    earlier = {"cases.csv": "case,psnr\nold,30\n", "table.md": "| earlier table |\n", "metrics.jsonl": "{}\n"}
    for name, text in earlier.items():
        (out / name).write_text(text, encoding="utf-8")
    code, _, err = _cli(["evaluate", "--data", str(data), "--checkpoint", str(checkpoint), "--output", str(out),
                         "--overwrite", "--no-lpips", "--device", "cpu"], capsys)
    _assert_one_line_error(code, err, fragment, [checkpoint.name])
    assert {p.name: p.read_text(encoding="utf-8") for p in out.iterdir()} == earlier


def _check_prepared(name: str, output: Path) -> None:
    """Every discovered file was prepared under its own id, or reported as a duplicate (never merged)."""
    from DCTNetLib.data.prepared_cases import is_case_done

    cases = sorted(p.name for p in (output / "cases").iterdir() if is_case_done(p))
    failed = (output / "failed.txt").read_text(encoding="utf-8")
    if name == "src_same_stem":
        assert cases == ["siteA_imgs_case001", "siteB_imgs_case001"] and failed == "", (cases, failed)
    elif name == "src_twin_nifti":
        assert cases == ["case002"], cases
        assert failed.count("\n") == 1 and "duplicate case id case002" in failed, failed
        assert "case002.nii.gz" in failed and "case002.nii " in failed.replace(",", " "), failed
    elif name == "ct_latin1_name":
        assert cases == ["ct_café"] and failed == "", (cases, failed)
    else:
        raise AssertionError(f"no prepare check for {name}")


# ------------------------------------------------------------------------------------------ outcome checks


def _check_accepted(name: str, result, corpus: Path) -> None:
    """What "accepted" means for each accepted case (values actually checked, not just "no error")."""
    from PIL import Image

    if name.startswith("rg_") and result.shape == (128, 128):  # load_radiograph: model-ready
        assert result.dtype == np.float32 and 0.0 <= result.min() and result.max() <= 1.0 and np.ptp(result) > 0.3
        return
    raw = np.asarray(Image.open(corpus / name)) if name.endswith((".png", ".tif")) else None
    if name.startswith("out_"):  # write_ct of a legal but awkward name: the written file reads back exactly
        from DCTNetLib.io.ct import read_ct
        assert result.name == mc.MANIFEST[name].path.split("/")[-1]
        np.testing.assert_array_equal(read_ct(result).hu, mc.synthetic_ct_hu().astype(np.float32))
        assert not [p for p in result.parent.iterdir() if p.name.startswith(".tmp-")]
    elif name == "ct_latin1_name":
        from DCTNetLib.io.ct import read_ct
        np.testing.assert_array_equal(result.hu, read_ct(corpus / "good_ct.nii.gz").hu)
    elif name == "rg_latin1_name":
        np.testing.assert_allclose(result, np.asarray(Image.open(corpus / "good_pa.png")) / 255.0, atol=1e-6)
    elif name == "ct_sform_scale.nii":  # the warning says which voxel size is used, and it is
        np.testing.assert_allclose(result.spacing, (mc.SLICE_MM, mc.PIXEL_MM, mc.PIXEL_MM))
    elif name == "rg_dicom_bad_is.dcm":
        assert np.corrcoef(result.ravel(), mc.synthetic_views()[0].ravel())[0, 1] > 0.99
    elif name == "rg_exif_rotated.jpg":
        upright = np.load(corpus / "rg_exif_upright.npy").astype(np.float64) / 255.0
        assert result.shape == upright.shape  # 60 × 48 upright, not the stored 48 × 60
        assert np.abs(result - upright).mean() < 0.02, np.abs(result - upright).mean()
    elif name == "rg_palette.dcm":
        import pydicom
        indices = pydicom.dcmread(corpus / name).pixel_array.astype(np.float64)
        pa = mc.synthetic_views()[0]
        assert np.corrcoef(indices.ravel(), pa.ravel())[0, 1] < -0.99  # the raw indices run backwards …
        assert np.corrcoef(result.ravel(), pa.ravel())[0, 1] > 0.99  # … the colour table puts them right
    elif name in ("rg_rgb.png", "rg_rgba.png"):
        np.testing.assert_allclose(result, raw[..., :3] @ LUMA / 255.0, atol=1e-5)
    elif name in ("rg_16bit.png", "rg_float.tif"):
        raw = raw.astype(np.float64)
        np.testing.assert_allclose(result, (raw - raw.min()) / np.ptp(raw), atol=1e-5)
    elif name == "rg_monochrome1.dcm":
        import pydicom
        stored = pydicom.dcmread(corpus / name).pixel_array.astype(np.float64)
        np.testing.assert_allclose(result, 1.0 - (stored - stored.min()) / np.ptp(stored), atol=1e-5)
        pa = mc.synthetic_views()[0]
        assert np.corrcoef(result.ravel(), pa.ravel())[0, 1] > 0.99  # bone bright again, as in the PA
    elif name == "ct_two_series":
        assert result.shape == (mc.SLICES, mc.ROWS, mc.COLS)  # the 8-slice series, not the 6-slice one
        assert result.hu.min() == -1000.0  # series A holds HU + 0…7 per slice, series B HU + 5…10
    else:
        raise AssertionError(f"no acceptance check for {name}")


@pytest.mark.parametrize(("name", "entry"), PAIRS, ids=[f"{n}-{e}" for n, e in PAIRS])
def test_corpus_case(name, entry, corpus, tmp_path, capsys, caplog, monkeypatch, request):
    case = mc.MANIFEST[name]
    path = corpus / case.path
    outcome, fragment = case.expect[entry]
    if entry in CLI_ENTRIES:
        _run_cli(entry, name, case, path, corpus, tmp_path, capsys, monkeypatch, request)
        return
    old = path.read_bytes() if len(path.name) < 255 and path.is_file() and entry.startswith("write") else None
    _simulate(case.simulate, path, monkeypatch, request)
    caplog.set_level(logging.INFO)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # any Python warning must be deliberate: turn it into a failure here
        warnings.filterwarnings("ignore", message=".*pickle protocol.*")  # torch's note on protocol-4 files
        try:
            if case.simulate == "file_size_limit":
                result = _call_library_under_fsize_limit(entry, name, path, corpus)
            else:
                result = _call_library(entry, name, path, corpus)
        except DCTNetError as exc:
            assert outcome in ERRORS, f"{name} via {entry}: expected {outcome}, got {type(exc).__name__}: {exc}"
            assert isinstance(exc, ERRORS[outcome]), f"{type(exc).__name__}: {exc}"
            message = str(exc)
            assert fragment.lower() in message.lower(), message
            assert "\n" not in message, message
            assert not [leak for leak in LEAKS if leak in message], message
            target = path.with_name("report.json") if entry == "write_text" else path
            assert target.name in message or target.parent.name in message, f"file not named: {message}"
            if old is not None:
                assert path.read_bytes() == old, "the earlier file was damaged"
                assert not [p for p in path.parent.iterdir() if p.name.startswith(".tmp-")], "temp file left"
            return
    assert outcome in ("ok", "warns"), f"{name} via {entry}: expected {outcome}, got a result"
    if entry == "check_pair":
        assert len(result) == 1 and fragment in result[0], result
        return
    if outcome == "warns":
        records = [r for r in caplog.records if fragment in r.getMessage() and r.levelno >= logging.WARNING]
        assert records, f"no warning containing {fragment!r}: {[r.getMessage() for r in caplog.records]}"
        assert path.name in records[0].getMessage()
    if name == "ct_two_series":
        message = records[0].getMessage()
        import pydicom
        kept = pydicom.dcmread(path / "A001.dcm", stop_before_pixels=True).SeriesInstanceUID
        skipped = pydicom.dcmread(path / "B001.dcm", stop_before_pixels=True).SeriesInstanceUID
        assert f"using the largest: {kept}" in message and f"skipped: {skipped}" in message, message
    _check_accepted(name, result, corpus)


# --------------------------------------------------------------------------------------------- the corpus


def test_corpus_covers_every_item_of_the_issue(corpus):
    covered = {case.issue_item for case in mc.MANIFEST.values()}
    assert len(mc.ISSUE_ITEMS) == 25
    assert set(mc.ISSUE_ITEMS) <= covered, set(mc.ISSUE_ITEMS) - covered
    assert len(mc.MANIFEST) >= len(mc.ISSUE_ITEMS)
    assert len(PAIRS) >= 2 * len(mc.ISSUE_ITEMS)  # most cases go through two or more entry points
    issue12 = {case.issue_item for case in mc.ISSUE12_MANIFEST.values()}
    assert set(mc.ISSUE12_ITEMS) == issue12, set(mc.ISSUE12_ITEMS) ^ issue12
    issue21 = {case.issue_item for case in mc.ISSUE21_MANIFEST.values()}
    assert set(mc.ISSUE21_ITEMS) == issue21, set(mc.ISSUE21_ITEMS) ^ issue21
    for name, case in mc.MANIFEST.items():
        path = corpus / case.path
        if name.startswith("out_") and name != "out_missing_folder":
            assert path.parent.is_dir(), name  # the output folder exists; the simulated disk / permission fails
        else:
            assert os.path.lexists(path) or "missing" in name, name
    files = [p for p in corpus.rglob("*") if p.is_file() and not p.is_symlink() and p.name != "manifest.json"]
    assert max(p.stat().st_size for p in files if p.name not in mc.BOMBS) < 16 * 1024  # "a few KB" each
    assert max(p.stat().st_size for p in files if p.name in mc.BOMBS) < 1024 * 1024  # … but a bomb's ~1/1000
    manifest = (corpus / "manifest.json").read_text(encoding="utf-8")
    assert all(f'"{name}"' in manifest for name in mc.MANIFEST)


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")  # torch's note on protocol-4 pickles
def test_no_weights_file_ran_code(corpus):
    """Runs after the weights cases (same module corpus); also proves the payload is live under plain pickle."""
    import pickle

    from DCTNetLib.checkpoints.checkpoint import load_checkpoint as load_training_checkpoint
    from DCTNetLib.io.safe_load import load_numpy_pickle, load_torch_file

    for loader, file in [(load_torch_file, "w_code.pt"), (load_torch_file, "w_code.pkl"),
                         (load_training_checkpoint, "w_code.pt"), (load_training_checkpoint, "w_code.pkl"),
                         (load_numpy_pickle, "w_code.pkl")]:
        with pytest.raises(WeightsError, match=r"refusing to load .*w_code\.p"):
            loader(corpus / file)
    assert not (corpus / mc.MARKER_NAME).exists()
    # the same payload really runs code when unpickled unsafely (so the refusals above mean something)
    live = corpus.parent / "live_marker"
    pickle.loads(pickle.dumps(mc.CreatesMarkerWhenUnpickled(str(live))))
    assert live.exists()
    live.unlink()


def test_view_pair_check_on_real_geometry(lidc_demo_ct):
    """The swap rule on DRRs of a real chest CT: the true pair passes, the swapped pair and a duplicate warn."""
    import torch

    from DCTNetLib.data.drr import make_drrs
    from DCTNetLib.data.preprocess import preprocess_ct
    from DCTNetLib.io.radiograph import view_pair_warnings

    drr = make_drrs(torch.from_numpy(preprocess_ct(lidc_demo_ct).volume)[None, None])[0].numpy()
    assert view_pair_warnings(drr[0], drr[1]) == []
    assert "swapped" in view_pair_warnings(drr[1], drr[0])[0]
    assert "identical" in view_pair_warnings(drr[0], drr[0])[0]


def test_inference_check_pair_warns_for_identical_and_swapped(corpus):
    """The public pair check (inference.check_pair) gives the same two warnings."""
    from DCTNetLib.inference import check_pair
    from DCTNetLib.io.radiograph import read_radiograph

    pa, lat = read_radiograph(corpus / "pair_pa.png"), read_radiograph(corpus / "pair_lat.png")
    with pytest.warns(RuntimeWarning, match="identical"):
        check_pair(pa, pa)
    with pytest.warns(RuntimeWarning, match="swapped"):
        check_pair(lat, pa)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check_pair(pa, lat)


def test_cli_missing_inputs_exit_2_without_traceback(corpus, tmp_path, capsys):
    code, _, err = _cli(["prepare", "--dataset", "lidc-idri", "--source", str(corpus / "no_such_download"),
                         "--output", str(tmp_path / "out")], capsys)
    _assert_one_line_error(code, err, "source folder not found", ["no_such_download"])
    (tmp_path / "a_file").write_text("x")
    source = tmp_path / "download"
    shutil.copytree(corpus / "ct_two_series", source / "LIDC-IDRI-0001" / "01-01-2000-CT" / "series")
    code, _, err = _cli(["prepare", "--dataset", "lidc-idri", "--source", str(source),
                         "--output", str(tmp_path / "a_file" / "out")], capsys)
    _assert_one_line_error(code, err, "cannot create output folder", ["a_file"])
