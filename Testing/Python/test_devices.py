"""One device rule for inference and training (DCTNetLib.devices), with the missing-GPU policy explicit."""

from __future__ import annotations

import pytest
import torch

from DCTNetLib.devices import select_device
from DCTNetLib.errors import InputError


@pytest.fixture
def no_gpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)


@pytest.fixture
def gpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # torch.device("cuda", n) needs no GPU


def test_without_a_gpu_auto_is_the_cpu_and_cuda_follows_the_policy(no_gpu):
    for policy in ("cpu", "raise"):
        assert select_device("auto", missing_cuda=policy) == torch.device("cpu")
        assert select_device(torch.device("cpu"), missing_cuda=policy) == torch.device("cpu")
    with pytest.warns(RuntimeWarning, match="CUDA was requested"):
        assert select_device("cuda:1", missing_cuda="cpu") == torch.device("cpu")
    with pytest.raises(InputError, match="no CUDA GPU"):
        select_device("cuda", missing_cuda="raise", local_rank=0)


def test_with_a_gpu_the_local_rank_picks_it_unless_the_index_is_given(gpu):
    assert select_device("auto", missing_cuda="raise", local_rank=1) == torch.device("cuda", 1)
    assert select_device("cuda", missing_cuda="raise", local_rank=1) == torch.device("cuda", 1)
    assert select_device("cuda", missing_cuda="cpu") == torch.device("cuda")
    assert select_device("cuda:2", missing_cuda="raise", local_rank=1) == torch.device("cuda", 2)


def test_unknown_devices_and_policies_are_refused(no_gpu):
    with pytest.raises(InputError, match="device must be"):
        select_device("gpu", missing_cuda="cpu")
    with pytest.raises(ValueError, match="missing_cuda"):
        select_device("cpu", missing_cuda="fallback")


def test_reconstruction_falls_back_and_training_refuses(no_gpu, tmp_path):
    """The two policies as the package applies them: a reconstruction runs on the CPU, a training run stops."""
    from conftest import make_tiny_bundle

    from DCTNetLib.inference import Reconstructor
    from DCTNetLib.training.config import CDMTrainConfig
    from DCTNetLib.training.loop import Trainer

    with pytest.warns(RuntimeWarning, match="CUDA was requested"):
        model = Reconstructor(make_tiny_bundle(with_cdm=False), device="cuda")
    assert model.device == torch.device("cpu")
    with pytest.raises(InputError, match="no CUDA GPU"):
        Trainer(CDMTrainConfig(device="cuda"), tmp_path, train_set=[], val_set=None)
