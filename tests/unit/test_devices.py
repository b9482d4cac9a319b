"""The device a worker chooses: CUDA only when present (or demanded, then a clear error without it)."""

from __future__ import annotations

import pytest
import torch

from ml.training import devices
from ml.training.devices import DeviceUnavailable, choose_device, describe, valid_preference

pytestmark = pytest.mark.unit


def test_a_cuda_less_worker_never_asks_for_cuda(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)

    def no_cuda(*args, **kwargs):
        raise AssertionError("a CUDA API was called on a worker without CUDA")

    for name in ("device_count", "current_device", "get_device_name", "set_device"):
        monkeypatch.setattr(torch.cuda, name, no_cuda)
    assert choose_device("auto") == torch.device("cpu")
    assert choose_device(None, threads=1) == torch.device("cpu") and torch.get_num_threads() == 1
    assert choose_device("cpu") == torch.device("cpu")
    assert describe("cpu").startswith("cpu (")
    with pytest.raises(DeviceUnavailable, match="no CUDA device"):
        choose_device("cuda")
    with pytest.raises(ValueError, match="device must be one of"):
        choose_device("tpu")


def test_a_gpu_worker_picks_cuda_and_checks_the_index(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert choose_device("auto") == torch.device("cuda")
    assert choose_device("cuda:1") == torch.device("cuda:1")
    assert choose_device("cpu") == torch.device("cpu")  # an explicit CPU round stays on the CPU
    with pytest.raises(DeviceUnavailable, match="sees 2 GPU"):
        choose_device("cuda:2")
    assert [valid_preference(v) for v in ("auto", "cuda:0", "cuda:x", 3)] == [True, True, False, False]
    assert devices.PREFERENCES == ("auto", "cpu", "cuda")


def test_round_config_validates_the_device():
    pytest.importorskip("django")
    import django
    from django.conf import settings

    if not settings.configured:  # pragma: no cover - pytest-django configures it
        django.setup()
    from forgery_site.errors import InvalidInput
    from rounds.config import validate_config

    assert validate_config({})["device"] == "auto"
    assert validate_config({"device": "cuda:1"})["device"] == "cuda:1"
    for bad in ("tpu", "cuda:", "CUDA", 0, None):
        with pytest.raises(InvalidInput) as caught:
            validate_config({"device": bad})
        assert "device" in caught.value.errors
