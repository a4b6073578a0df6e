"""Training precision per device (brats_seg.training.devices)."""

from __future__ import annotations

import pytest
import torch

from brats_seg.errors import StudyError
from brats_seg.training import devices
from brats_seg.training.config import TrainConfig, check_config
from brats_seg.training.devices import resolve_precision


@pytest.mark.parametrize(
    ("precision", "device", "bf16_supported", "expected"),  # bf16_supported: compute capability 9.0 or 7.0
    [
        ("auto", "cpu", True, "fp32"),
        ("fp32", "cpu", True, "fp32"),
        # bfloat16 has float32's range: float16 overflowed at 96-voxel patches
        ("auto", "cuda", True, "bf16"),
        ("auto", "cuda", False, "fp16"),
        ("fp16", "cuda", True, "fp16"),
        ("fp32", "cuda", True, "fp32"),
    ],
)
def test_precision_auto_prefers_bfloat16_on_a_gpu(
    precision: str, device: str, bf16_supported: bool, expected: str, monkeypatch
) -> None:
    capability = (9, 0) if bf16_supported else (7, 0)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda *a, **k: capability)
    assert resolve_precision(precision, torch.device(device)) == expected


@pytest.mark.parametrize("native", [True, False])
def test_bfloat16_on_the_cpu_only_where_it_is_native(native: bool, monkeypatch) -> None:
    monkeypatch.setattr(devices, "cpu_bf16_supported", lambda: native)
    if native:
        assert resolve_precision("bf16", torch.device("cpu")) == "bf16"
    else:
        with pytest.raises(
            StudyError, match=r"--precision bf16: this CPU has no native bfloat16 .*use fp32 or auto"
        ):
            resolve_precision("bf16", torch.device("cpu"))
    assert resolve_precision("auto", torch.device("cpu")) == "fp32"  # the recipe of the bundled model


def test_unknown_precision_is_refused() -> None:
    expected = r"--precision: expected one of \('auto', 'bf16', 'fp16', 'fp32'\), found 'half'"
    with pytest.raises(StudyError, match=expected):
        resolve_precision("half", torch.device("cpu"))
    with pytest.raises(StudyError, match="--precision: expected one of .*, found 'half'"):
        check_config(TrainConfig(precision="half"))
