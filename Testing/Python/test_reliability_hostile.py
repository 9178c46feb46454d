"""Issue 12, hostile inputs, the parts that are not a single file of the corpus (test_reliability_corpus.py runs
those): memory bombs measured in a child process with a small address-space limit, NaN weights and outputs,
``--steps`` beyond the diffusion, library messages and warnings on stderr, SIGTERM of ``reconstruct`` and of
``prepare --workers 2`` (and ``kill -9`` of its parent), a non-UTF-8 ``prepare`` source with workers, and the
interrupt message's promise.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from DCTNetLib import cli
from DCTNetLib.errors import InputError, OutputError, WeightsError
from test_reliability_weights import _corpus_module

REPO_ROOT = Path(__file__).resolve().parents[2]
PACKAGE_ROOT = REPO_ROOT / "DCTNetReconstruction"
pytestmark = pytest.mark.filterwarnings("ignore:Detected pickle protocol")


mc = _corpus_module()  # the corpus generator (Testing/Data/bad_inputs/make_corpus.py), loaded once per session


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("hostile")
    mc.make_corpus(folder)
    return folder


def _child(code: str, *args: str, env: dict | None = None, timeout: float = 600) -> subprocess.CompletedProcess:
    """Run ``code`` in a fresh interpreter with the package importable; stdout/stderr captured as text."""
    environment = {**os.environ, "PYTHONPATH": str(PACKAGE_ROOT), "OMP_NUM_THREADS": "1", **(env or {})}
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code), *args], capture_output=True, text=True,
                          env=environment, timeout=timeout)


def _cli(argv: list[str], capsys) -> tuple[int, str, str]:
    capsys.readouterr()
    code = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


# ------------------------------------------------------------------------------------------------ memory bombs

# In the child: the readers are imported (torch too, for the weights loader), then the address space is capped at
# what is mapped now plus LIMIT_MIB. A 64 MiB allocation must still work and a 1 GiB one must fail (so the cap is
# real), and each bomb must be refused with its one-line error — not a MemoryError, which is what decoding it under
# the cap would give.
BOMB_CHILD = """
    import json, resource, sys
    import numpy as np
    import torch
    from DCTNetLib.data.case_arrays import load_case_array
    from DCTNetLib.errors import DCTNetError
    from DCTNetLib.io.ct import read_ct
    from DCTNetLib.io.radiograph import read_radiograph
    from DCTNetLib.io.safe_load import load_torch_file

    def vm_size():
        for line in open("/proc/self/status"):
            if line.startswith("VmSize:"):
                return int(line.split()[1]) * 1024
    limit = vm_size() + int(sys.argv[1]) * 2**20
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    out = {"small_allocation": bool(np.ones(64 * 2**20, np.uint8).sum())}
    try:
        np.ones(2**30, np.uint8)
        out["big_allocation"] = "allowed"
    except MemoryError:
        out["big_allocation"] = "MemoryError"
    readers = {"radiograph": read_radiograph, "ct": read_ct, "torch": load_torch_file,
               "npy": lambda path: load_case_array(path, "ct")}
    for pair in sys.argv[2:]:  # READER=PATH
        reader, path = pair.split("=", 1)
        try:
            readers[reader](path)
            out[path] = "accepted"
        except DCTNetError as exc:
            out[path] = str(exc)
        except MemoryError:
            out[path] = "MemoryError"
    print(json.dumps(out))
"""
LIMIT_MIB = 200


def test_memory_bombs_are_refused_from_their_headers_under_a_small_address_space(corpus):
    bombs = [corpus / "rg_deflate_bomb.dcm", corpus / "rg_nifti_20000.nii", corpus / "ct_1200.nii"]
    readers = ("radiograph", "radiograph", "ct")
    result = _child(BOMB_CHILD, str(LIMIT_MIB), *(f"{reader}={bomb}" for reader, bomb in zip(readers, bombs)))
    assert result.returncode == 0, result.stderr[-2000:]
    out = json.loads(result.stdout.strip().splitlines()[-1])
    assert out["small_allocation"] and out["big_allocation"] == "MemoryError", out  # the cap is real
    assert "decompression bomb" in out[str(bombs[0])] and "320 MiB" in out[str(bombs[0])], out  # 40 × 2048² × 2 B
    assert "too large" in out[str(bombs[1])] and "20000×20000" in out[str(bombs[1])], out
    assert "too large" in out[str(bombs[2])] and "(1200, 1200, 1200)" in out[str(bombs[2])], out
    assert result.stderr.strip() == "", result.stderr


def test_a_deflated_file_is_checked_by_its_header_then_by_a_streamed_count(tmp_path, monkeypatch):
    """12 frames of 512² × 16 bit = 6 MiB, with the limit lowered to 5 MiB: refused from the header; with a header
    that states nothing, refused by counting the inflated bytes; under an 8 MiB limit it is decoded (all zero, so
    "blank"), which shows the checks, not a failure to read, made the refusals."""
    from DCTNetLib.io import radiograph

    path = tmp_path / "zeros.dcm"
    mc._deflated_bomb(path, frames=12, side=512)
    monkeypatch.setattr(radiograph, "MAX_PIXEL_BYTES", 5 * 2**20)
    with pytest.raises(InputError, match=r"claims 6 MiB of pixel data.*zeros\.dcm"):
        radiograph.read_radiograph(path)
    monkeypatch.setattr(radiograph, "_claimed_pixel_bytes", lambda ds, p: 0)  # a header that says nothing
    with pytest.raises(InputError, match=r"inflates to over 5 MiB.*zeros\.dcm"):
        radiograph.read_radiograph(path)
    monkeypatch.setattr(radiograph, "MAX_PIXEL_BYTES", 8 * 2**20)
    with pytest.raises(InputError, match=r"blank.*zeros\.dcm"):
        radiograph.read_radiograph(path)


def test_a_huge_recorded_architecture_is_refused_without_allocating_it(corpus):
    """3.5 G parameters recorded: refused from the meta-device build; the child's peak memory stays small."""
    result = _child("""
        import json, resource, sys
        import torch
        from DCTNetLib.checkpoints.bundle import load_model_bundle
        from DCTNetLib.errors import WeightsError
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        try:
            load_model_bundle(sys.argv[1])
            message = "accepted"
        except WeightsError as exc:
            message = str(exc)
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        print(json.dumps({"message": message, "grew_kib": peak - before}))
    """, str(corpus / "b_huge_arch.pt"))
    assert result.returncode == 0, result.stderr[-2000:]
    out = json.loads(result.stdout.strip().splitlines()[-1])
    assert re.search(r"needs 1\d\.\d GiB of weights", out["message"]) and "b_huge_arch.pt" in out["message"], out
    assert out["grew_kib"] < 300 * 1024, out  # building it would take 13 GiB


# ------------------------------------------------------------------------------------------------ garbage out


@pytest.fixture(scope="module")
def nan_bundle(tmp_path_factory) -> Path:
    """The shipped bundle with one weight of G(Y) set to NaN."""
    import torch

    from DCTNetLib.checkpoints.bundle import default_weights_path
    from DCTNetLib.io.safe_load import load_torch_file

    state = load_torch_file(default_weights_path())
    key = next(k for k, v in state["generator"]["g_raw"].items() if v.is_floating_point() and v.numel() > 1)
    state["generator"]["g_raw"][key].view(-1)[0] = float("nan")
    path = tmp_path_factory.mktemp("nan") / "nan_weights.pt"
    torch.save(state, path)
    return path


def test_nan_weights_are_refused_by_the_loader_and_the_cli(nan_bundle, corpus, tmp_path, capsys):
    from DCTNetLib.checkpoints.bundle import load_model_bundle

    with pytest.raises(WeightsError, match=r"G\(Y\) weights hold 1 NaN/inf value.*") as info:
        load_model_bundle(nan_bundle)
    assert str(nan_bundle) in str(info.value)
    code, _, err = _cli(["reconstruct", "--pa", corpus / "good_pa.png", "--lat", corpus / "good_lat.png",
                         "--output", tmp_path / "ct.nii.gz", "--weights", nan_bundle, "--device", "cpu"], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1 and "NaN/inf" in err and "nan_weights.pt" in err, err
    assert not list(tmp_path.iterdir())


def test_a_non_finite_volume_is_never_written(tmp_path):
    from DCTNetLib.io.ct import CTVolume, write_ct

    hu = np.full((8, 8, 8), -1000.0, np.float32)
    hu[3, 3, 3] = np.nan
    with pytest.raises(OutputError, match=r"1 NaN/inf voxel.*out\.nii\.gz"):
        write_ct(CTVolume(hu, spacing=(1.0, 1.0, 1.0)), tmp_path / "out.nii.gz")
    assert not list(tmp_path.iterdir())


def test_steps_beyond_the_diffusion_are_refused_before_sampling(corpus, tmp_path, capsys):
    code, _, err = _cli(["reconstruct", "--pa", corpus / "good_pa.png", "--lat", corpus / "good_lat.png",
                         "--output", tmp_path / "ct.nii.gz", "--steps", "5000", "--device", "cpu"], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert "--steps 5000 is more than the 1000 steps" in err, err
    assert not list(tmp_path.iterdir())


def test_a_blank_model_input_names_the_radiograph_files(corpus, tmp_path, capsys, monkeypatch):
    """The arrays' own check ("PA radiograph is blank") cannot know the files; the command adds them."""
    from DCTNetLib.io import radiograph

    monkeypatch.setattr(radiograph, "read_radiograph", lambda path: np.zeros((64, 64), np.float32))
    code, _, err = _cli(["reconstruct", "--pa", corpus / "good_pa.png", "--lat", corpus / "good_lat.png",
                         "--output", tmp_path / "ct.nii.gz", "--device", "cpu"], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert "PA radiograph is blank" in err and "good_pa.png" in err and "good_lat.png" in err, err


# ------------------------------------------------------------------------------------------ messages on stderr


def test_itk_and_pydicom_warnings_reach_stderr_as_one_line_of_ours(corpus):
    """With logging set up as the CLI does, stderr holds our line naming the file, not ITK's "WARNING: In …" block
    nor pydicom's raw UserWarning; the control shows that ITK does print its block for the same file."""
    ours = _child("""
        import logging, sys
        logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
        from DCTNetLib.io.ct import read_ct
        from DCTNetLib.io.radiograph import read_radiograph
        read_ct(sys.argv[1])
        read_radiograph(sys.argv[2])
    """, str(corpus / "ct_sform_scale.nii"), str(corpus / "rg_dicom_bad_is.dcm"))
    assert ours.returncode == 0, ours.stderr
    lines = ours.stderr.strip().splitlines()
    assert len(lines) == 2, lines
    assert "disagrees with itself on the voxel size" in lines[0] and "ct_sform_scale.nii" in lines[0], lines
    assert "Invalid value for VR IS" in lines[1] and "rg_dicom_bad_is.dcm" in lines[1], lines
    assert not [line for line in lines if "WARNING: In" in line or "UserWarning" in line or "pydicom" in line]
    control = _child("import SimpleITK as sitk, sys; sitk.ReadImage(sys.argv[1])", str(corpus / "ct_sform_scale.nii"))
    assert "WARNING: In" in control.stderr and "unexpected scales in sform" in control.stderr


# ----------------------------------------------------------------------------------------------------- SIGTERM

RECONSTRUCT_CHILD = """
    import dataclasses, sys, time
    import numpy as np
    from DCTNetLib import cli, inference
    from DCTNetLib.io import ct as ct_module
    from DCTNetLib.io.ct import CTVolume

    class Model:  # the network is not what is tested here: the command's writing and its signal handling are
        device, cdm, refinement_iterations, refining, refinement_steps = "cpu", None, 0, False, "off"
        def reconstruct(self, pa, lat, **kwargs):
            fields = {f.name: None for f in dataclasses.fields(inference.ReconstructionResult) if f.name != "timings"}
            volume = CTVolume(np.full((16, 16, 16), -1000.0, np.float32), spacing=(2.5, 2.5, 2.5))
            return inference.ReconstructionResult(**{**fields, "ct_hu": volume, "pa": pa, "lat": lat,
                                                     "ct_unit": np.zeros((16, 16, 16), np.float32)})

    inference.Reconstructor.load = classmethod(lambda cls, weights=None, device="auto", refinement=None, fusion="mean":
                                             Model())
    write = ct_module.sitk.WriteImage
    def slow_write(image, name, *args, **kwargs):
        write(image, name, *args, **kwargs)  # the temporary file is complete …
        print("WRITTEN", flush=True)
        time.sleep(120)  # … and the run is stopped before its rename
    ct_module.sitk.WriteImage = slow_write
    sys.exit(cli.main(sys.argv[1:]))
"""


def _wait_for_line(process: subprocess.Popen, expected: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if expected in line:
            return
        if not line and process.poll() is not None:
            break
    raise AssertionError(f"no {expected!r} from the child: {process.stderr.read()[-2000:]}")


def test_sigterm_during_reconstruct_removes_the_temporary_file_and_exits_143(corpus, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    env = {**os.environ, "PYTHONPATH": str(PACKAGE_ROOT), "OMP_NUM_THREADS": "1"}
    argv = ["reconstruct", "--pa", corpus / "good_pa.png", "--lat", corpus / "good_lat.png",
            "--output", out / "ct.nii.gz", "--device", "cpu"]
    process = subprocess.Popen([sys.executable, "-c", textwrap.dedent(RECONSTRUCT_CHILD), *map(str, argv)],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        _wait_for_line(process, "WRITTEN", timeout=300)
        assert [p.name for p in out.iterdir() if p.name.startswith(".tmp-")], "the partial file was not there"
        process.send_signal(signal.SIGTERM)
        code = process.wait(timeout=60)
    finally:
        process.kill()
    err = process.stderr.read()
    assert code == 143, err
    assert err.strip().splitlines()[-1] == ("dctnet reconstruct: terminated; files written so far are valid."), err
    assert "Traceback" not in err
    assert list(out.iterdir()) == [], list(out.iterdir())  # no hidden partial file, no output


def _nifti_sources(folder: Path, count: int, size: int = 48) -> None:
    """``count`` small CTs (a phantom) as NIfTI files: enough work that the workers are busy when signalled."""
    from DCTNetLib.data.phantom import phantom_ct
    from DCTNetLib.io.ct import write_ct

    folder.mkdir(parents=True)
    for index in range(count):
        write_ct(phantom_ct(size=size, seed=index), folder / f"case{index:02d}.nii.gz")


def _descendants(pid: int) -> list[int]:
    import psutil

    try:
        return [child.pid for child in psutil.Process(pid).children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def _alive(pids: list[int]) -> list[int]:
    import psutil

    alive = []
    for pid in pids:
        try:
            if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                alive.append(pid)
        except psutil.NoSuchProcess:
            pass
    return alive


def _start_prepare_with_workers(tmp_path: Path, count: int) -> tuple[subprocess.Popen, Path, list[int]]:
    """``dctnet prepare --workers 2`` on ``count`` cases, returned once both workers are writing a case."""
    source, output = tmp_path / "source", tmp_path / "prepared"
    _nifti_sources(source, count)
    env = {**os.environ, "PYTHONPATH": str(PACKAGE_ROOT), "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen([sys.executable, "-m", "DCTNetLib.cli", "prepare", "--dataset", "ctspine1k",
                                "--source", str(source), "--output", str(output), "--workers", "2"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                               start_new_session=True)
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline and process.poll() is None:
        cases = output / "cases"
        if cases.is_dir() and len([p for p in cases.iterdir() if p.is_dir()]) >= 2:
            break
        time.sleep(0.2)
    workers = _descendants(process.pid)
    assert process.poll() is None and len(workers) >= 2, (process.poll(), workers)
    return process, output, workers


def _leftovers(output: Path) -> list[str]:
    return [str(p.relative_to(output)) for p in output.rglob(".tmp-*")]


def test_sigterm_stops_prepare_workers_and_leaves_no_temporary_file(tmp_path):
    process, output, workers = _start_prepare_with_workers(tmp_path, count=8)
    try:
        process.send_signal(signal.SIGTERM)
        code = process.wait(timeout=120)
        deadline = time.monotonic() + 30
        while _alive(workers) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert _alive(workers) == [], "workers outlived the command"
    finally:
        os.killpg(process.pid, signal.SIGKILL) if process.poll() is None else None
    err = process.stderr.read()
    assert code == 143, err
    assert err.strip().splitlines()[-1] == ("dctnet prepare: terminated; files written so far are valid (re-run the "
                                            "same command to continue: finished cases are skipped)."), err
    assert "Traceback" not in err, err
    assert _leftovers(output) == []
    done = [p for p in (output / "cases").iterdir() if (p / "meta.json").is_file()]
    assert len(done) < 8  # it did stop


def test_workers_end_themselves_when_prepare_is_killed_with_sigkill(tmp_path):
    process, output, workers = _start_prepare_with_workers(tmp_path, count=8)
    try:
        process.kill()  # kill -9: no handler runs in the parent
        process.wait(timeout=30)
        deadline = time.monotonic() + 30
        while _alive(workers) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert _alive(workers) == [], "orphaned workers kept running"
    finally:
        for pid in _alive(workers):
            os.kill(pid, signal.SIGKILL)
    assert _leftovers(output) == []


# ------------------------------------------------------------------------------------------------- prepare


def test_prepare_with_workers_survives_non_utf8_names_and_keeps_ids_apart(corpus, tmp_path, capsys):
    """A Latin-1 file name (read), a DICOM series with one (refused in one line), two same-named files of two
    sites (two ids), with two workers: the run completes and accounts for every case."""
    import shutil

    source = tmp_path / "source"
    shutil.copytree(corpus / "src_same_stem", source)
    shutil.copy(corpus / mc.MANIFEST["ct_latin1_name"].path, source / mc.MANIFEST["ct_latin1_name"].path)
    code, out, err = _cli(["prepare", "--dataset", "ctspine1k", "--source", source, "--output", tmp_path / "prep",
                           "--workers", "2"], capsys)
    assert code == 0 and "3 done" in out and "0 failed" in out, (out, err)
    cases = sorted(p.name for p in (tmp_path / "prep" / "cases").iterdir())
    assert cases == ["ct_café", "siteA_imgs_case001", "siteB_imgs_case001"], cases
    lidc = tmp_path / "lidc"
    shutil.copytree(corpus / "ct_dicom_latin1_name", lidc / "LIDC-IDRI-0001" / "study" / "series")
    code, out, err = _cli(["prepare", "--dataset", "lidc-idri", "--source", lidc, "--output", tmp_path / "prep2",
                           "--workers", "2"], capsys)
    assert code == 1 and "1 failed" in out, (out, err)
    failed = (tmp_path / "prep2" / "failed.txt").read_text(encoding="utf-8")
    assert "not valid UTF-8" in failed and "A003\\xe9.dcm" in failed, failed


def test_the_interrupt_message_promises_only_what_the_command_has(monkeypatch, tmp_path, capsys):
    from DCTNetLib.data import prepare

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(prepare, "prepare_dataset", interrupted)
    code, _, err = _cli(["prepare", "--dataset", "ctspine1k", "--source", tmp_path, "--output", tmp_path / "o"],
                        capsys)
    assert code == 130
    assert err.strip() == ("dctnet prepare: interrupted; files written so far are valid (re-run the same command to "
                           "continue: finished cases are skipped).")
    with pytest.raises(SystemExit) as info:  # so the message must not tell prepare users to add --resume
        cli.main(["prepare", "--dataset", "ctspine1k", "--source", str(tmp_path), "--output", str(tmp_path / "o"),
                  "--resume"])
    assert info.value.code == 2


def test_export_refuses_to_write_over_its_input_even_with_overwrite(tmp_path, capsys):
    checkpoint = tmp_path / "gan.pt"
    checkpoint.write_bytes(b"a checkpoint that must survive")
    code, _, err = _cli(["export", "--gan", checkpoint, "--output", tmp_path / "." / "gan.pt", "--overwrite"], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1 and "is the input" in err, err
    assert checkpoint.read_bytes() == b"a checkpoint that must survive"
    code, _, err = _cli(["export", "--gan", checkpoint, "--output", tmp_path / ("x" * 260 + ".pt")], capsys)
    assert code == 2 and "too long" in err, err


def test_a_fifo_given_as_a_training_checkpoint_is_named_and_never_opened(tmp_path):
    import os

    from DCTNetLib.errors import WeightsError
    from DCTNetLib.checkpoints.checkpoint import load_checkpoint

    fifo = tmp_path / "latest.pt"
    os.mkfifo(fifo)
    with pytest.raises(WeightsError, match="FIFO"):
        load_checkpoint(fifo, kind="gan")  # returns at once: opening a FIFO for reading would block
    with pytest.raises(WeightsError, match="not found"):
        load_checkpoint(tmp_path / "missing.pt")


# Issue 21's bombs go through the same child. Before, they took 5.9 GB (NIfTI header of 512² × 1500 in 1.4 KB),
# 8.3 GB (4096² × 24 float64), 6 GB (NRRD data file /dev/zero), 2.3 GB (DICOM Rows 2048 over 512² data), 4 GB (a
# compressed tensor) or a 4096³ npy header's 256 GiB.


def test_issue21_memory_bombs_are_refused_before_allocating(corpus, tmp_path):
    npy_bomb = tmp_path / "ct_unit.npy"
    header = np.lib.format.header_data_from_array_1_0(np.zeros((1, 1, 1), np.float32))
    with open(npy_bomb, "wb") as handle:  # a header claiming 4096³ float32 (256 GiB) over no data
        np.lib.format.write_array_header_1_0(handle, {**header, "shape": (4096, 4096, 4096)})
    bombs = {"ct": ["ct_nifti_short_bomb.nii", "ct_nifti_float64_bomb.nii", "ct_nrrd_dev_zero.nhdr",
                    "ct_dicom_rows_bomb"], "torch": ["w_zip_bomb.pt"]}
    pairs = [f"{kind}={corpus / name}" for kind, names in bombs.items() for name in names] + [f"npy={npy_bomb}"]
    result = _child(BOMB_CHILD, str(LIMIT_MIB), *pairs)
    assert result.returncode == 0, result.stderr[-2000:]
    out = json.loads(result.stdout.strip().splitlines()[-1])
    assert out.pop("small_allocation") and out.pop("big_allocation") == "MemoryError", out  # the cap is real
    expected = {"ct_nifti_short_bomb.nii": "truncated", "ct_nifti_float64_bomb.nii": "too large to read",
                "ct_nrrd_dev_zero.nhdr": "outside the header's folder", "ct_dicom_rows_bomb": "declares a 2048",
                "w_zip_bomb.pt": "unpack to", "ct_unit.npy": "claims shape (4096, 4096, 4096)"}
    for path, message in out.items():
        assert expected[Path(path).name] in message and Path(path).name in message, (path, message)
    assert result.stderr.strip() == "", result.stderr


# ------------------------------------------------------------------------------------------------ issue 21, messages
def test_help_and_info_print_under_an_ascii_terminal():
    """`dctnet --help` and `dctnet info` ended in a UnicodeEncodeError under PYTHONIOENCODING=ascii (³, ×, —)."""
    for argv in (["--help"], ["info"]):
        result = _child("import sys; from DCTNetLib.cli import main; sys.exit(main())", *argv,
                        env={"PYTHONIOENCODING": "ascii"})
        assert result.returncode == 0 and "Traceback" not in result.stderr, result.stderr[-1500:]
        assert result.stdout.isascii() and result.stdout.strip()
        if argv == ["--help"]:
            assert "128\\xb3 CT" in result.stdout  # the ³ ASCII lacks, escaped


def test_an_undecodable_jpeg2000_image_is_one_line_without_codec_chatter(corpus, tmp_path):
    """A radiograph (or a CT slice) whose JPEG 2000 data is garbage: pydicom logged an ERROR with a traceback and
    GDCM's codec printed its lines (5 to 14) on descriptor 2 before the refusal. Now stderr holds the refusal alone;
    the control shows GDCM printing for the same file when nothing catches it."""
    good_lat = ["--lat", str(corpus / "good_lat.png")]
    for name, inputs in (("rg_j2k_garbage.dcm", ["--pa", str(corpus / "rg_j2k_garbage.dcm"), *good_lat]),
                         ("ct_dicom_j2k_garbage", ["--ct", str(corpus / "ct_dicom_j2k_garbage")])):
        result = _child("import sys; from DCTNetLib.cli import main; sys.exit(main())", "reconstruct", *inputs,
                        "--output", str(tmp_path / "ct.nii.gz"), "--device", "cpu")
        lines = result.stderr.strip().splitlines()
        assert result.returncode == 2 and len(lines) == 1, result.stderr[-3000:]
        assert name in lines[0] and "decode" in lines[0], lines[0]
    assert list(tmp_path.iterdir()) == []
    control = _child("""
        import sys, SimpleITK as sitk
        try:
            sitk.ReadImage(sys.argv[1])
        except RuntimeError:
            pass
    """, str(corpus / "rg_j2k_garbage.dcm"))
    assert len(control.stderr.strip().splitlines()) >= 5, control.stderr  # the codec's chatter, uncaught


LONG_PATH = "/".join(["d" * 200] * 21)  # 4,220 bytes of 200-byte folder names: over PATH_MAX (4,096)
LONG_NAME = "n" * 300  # one name over NAME_MAX (255)


@pytest.mark.parametrize("too_long", [LONG_PATH, LONG_NAME], ids=["path_over_4096", "name_over_255"])
def test_an_output_path_the_system_cannot_take_is_one_line_before_any_work(corpus, tmp_path, capsys, monkeypatch,
                                                                         too_long):
    """An output path over 4,096 bytes (or holding a name over 255) ended every command in an ENAMETOOLONG
    traceback from the first `stat` of it. Now each command refuses it in one line, exit 2, before it loads a
    model or reads its data, and creates nothing."""
    from DCTNetLib import inference
    from DCTNetLib.io.atomic import check_writable_dir
    from DCTNetLib.io.ct import CTVolume, write_ct

    def no_model(*args, **kwargs):
        raise AssertionError("a model was loaded for a refused output")

    monkeypatch.setattr(inference.Reconstructor, "load", classmethod(no_model))
    out = tmp_path / too_long
    good = ["--pa", corpus / "good_pa.png", "--lat", corpus / "good_lat.png", "--device", "cpu"]
    commands = [["reconstruct", *good, "--output", out / "ct.nii.gz"],
                ["reconstruct", *good, "--output", tmp_path / "ct.nii.gz", "--dicom", out],
                ["train", "--data", tmp_path / "no_data", "--output", out, "--preset", "tiny"],
                ["prepare", "--dataset", "ctspine1k", "--source", corpus, "--output", out],
                ["plot", tmp_path / "no_run", "--output", f"{out}.png"],
                ["evaluate", "--data", tmp_path / "no_data", "--checkpoint", corpus / "w_text.pt", "--output", out]]
    for argv in commands:
        code, _, err = _cli(argv, capsys)
        lines = err.strip().splitlines()
        assert code == 2 and len(lines) == 1 and "too long" in lines[0], (argv[0], code, err[-1500:])
        assert len(lines[0]) < 300, lines[0]  # the path is shortened in the message, not printed whole
    for call in (lambda: write_ct(CTVolume(mc.synthetic_ct_hu(), spacing=(2.0, 1.5, 1.5)), out / "ct.nii.gz"),
                 lambda: check_writable_dir(out)):
        with pytest.raises(OutputError, match="too long"):
            call()
    assert list(tmp_path.iterdir()) == []


def test_an_existing_folder_as_output_is_refused_before_anything_is_computed(corpus, tmp_path, capsys):
    output = tmp_path / "ct.nii.gz"
    output.mkdir()
    code, _, err = _cli(["reconstruct", "--pa", corpus / "good_pa.png", "--lat", corpus / "good_lat.png",
                         "--output", output, "--overwrite", "--device", "cpu"], capsys)
    assert code == 2 and "is a folder" in err and "ct.nii.gz" in err and len(err.strip().splitlines()) == 1, err
    assert list(output.iterdir()) == []


def test_the_missing_weights_hint_names_the_option_of_the_command_that_needs_them():
    from DCTNetLib.io.imagenet_weights import ARCHS

    assert "--vgg-weights" in ARCHS["vgg16"].not_found_message()  # `dctnet train`'s option (perceptual loss)
    assert "--imagenet-weights" in ARCHS["alexnet"].not_found_message()  # `dctnet evaluate`'s (LPIPS)
