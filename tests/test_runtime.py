"""Tests for ``brats_seg.runtime``: choosing a backend, and OpenVINO networks converted once from the
sha256-checked learner, giving torch's outputs, and read back later without unpickling anything."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from brats_seg import inference, model, pipeline, runtime
from brats_seg.errors import ModelError
from brats_seg.files import load_study

pytest.importorskip("openvino")


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty cache folder, and no model loaded in this process yet."""
    monkeypatch.setenv("BRATS_SEG_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(model, "_CACHE", {})
    return tmp_path / "cache"


def test_auto_is_openvino_on_the_cpu_and_torch_on_a_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(runtime.BACKEND_ENV, raising=False)
    assert runtime.resolve_backend(None, "cpu") == "openvino"
    assert runtime.resolve_backend("auto", "cpu") == "openvino"
    assert runtime.resolve_backend("auto", "cuda") == "torch"
    assert runtime.resolve_backend("torch", "cpu") == "torch"
    monkeypatch.setenv(runtime.BACKEND_ENV, "torch")
    assert runtime.resolve_backend(None, "cpu") == "torch"


def test_bad_backends_are_refused_with_where_they_came_from(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ValueError, match=r"backend: expected one of auto, torch, openvino, found 'onnx'"):
        runtime.resolve_backend("onnx", "cpu")
    monkeypatch.setenv(runtime.BACKEND_ENV, "tensorrt")
    with pytest.raises(ValueError, match=r"\$BRATS_SEG_BACKEND: expected one of .*found 'tensorrt'"):
        runtime.resolve_backend(None, "cpu")
    with pytest.raises(ValueError, match=r"OpenVINO runs on the CPU; found device cuda"):
        runtime.resolve_backend("openvino", "cuda")


def test_openvino_network_gives_torch_outputs(cache: Path, tiny_model_dir: Path) -> None:
    """Same logits within float rounding, one window or several (MONAI's sliding window)."""
    torch_model = model.load_model(tiny_model_dir, device="cpu", backend="torch")
    ov_model = model.load_model(tiny_model_dir, device="cpu", backend="openvino")
    assert ov_model.backend == "openvino" and isinstance(ov_model.networks[0], runtime.OpenVinoNetwork)
    roi = torch_model.card.roi_size
    for shape in ([r - 3 for r in roi], [2 * r + 5 for r in roi]):  # one window; several
        x = torch.randn(4, *shape, generator=torch.Generator().manual_seed(0))
        kwargs = {"roi_size": roi, "overlap": 0.5, "activation": "none", "device": "cpu"}
        expected = inference.predict(x, torch_model.networks, **kwargs)
        found = inference.predict(x, ov_model.networks, **kwargs)
        torch.testing.assert_close(found, expected, rtol=1e-3, atol=1e-3)


def test_segmentation_is_the_same_on_either_backend(cache: Path, tiny_model_dir: Path, tiny_study) -> None:
    study = load_study(tiny_study(name="Tiny_777", shape=(40, 36, 30), seed=7)["T1"].parent)
    by_torch = pipeline.segment(study, model.load_model(tiny_model_dir, device="cpu", backend="torch"))
    by_ov = pipeline.segment(study, model.load_model(tiny_model_dir, device="cpu", backend="openvino"))
    assert by_ov.settings["backend"] == "openvino" and by_torch.settings["backend"] == "torch"
    differ = np.count_nonzero(by_ov.labels.array != by_torch.labels.array)
    assert differ <= by_torch.labels.array.size // 10_000, differ


def test_converted_once_then_read_without_unpickling(
    cache: Path, tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = model.load_model(tiny_model_dir, device="cpu", backend="openvino")
    sha256 = first.card.sha256[first.card.files[0]]
    assert runtime.ir_path(sha256).is_file() and runtime.ir_path(sha256).parent.parent == cache
    assert runtime.ir_path(sha256).with_suffix(".bin").stat().st_size > 4 * 1000  # float32 weights

    def no_unpickling(*args, **kwargs):
        raise AssertionError("the learner was unpickled although its converted network is cached")

    monkeypatch.setattr(model, "load_learner_checked", no_unpickling)
    monkeypatch.setattr(model, "_CACHE", {})
    again = model.load_model(tiny_model_dir, device="cpu", backend="openvino")
    assert again is not first and again.networks[0].xml == runtime.ir_path(sha256)


def test_a_learner_that_changed_is_refused_even_with_its_network_cached(
    cache: Path, tiny_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "model"
    shutil.copytree(tiny_model_dir, folder)
    model.load_model(folder, device="cpu", backend="openvino")  # converted and cached
    card = json.loads((folder / "model.json").read_text())
    learner = folder / card["files"][0]
    learner.write_bytes(learner.read_bytes() + b"\0")
    monkeypatch.setattr(model, "_CACHE", {})
    with pytest.raises(ModelError, match=rf"refusing to unpickle {learner}: expected sha256 "):
        model.load_model(folder, device="cpu", backend="openvino")


def test_a_fresh_predict_with_a_cached_network_imports_neither_fastai_nor_monai(
    cache: Path, tiny_model_dir: Path, tiny_study, tmp_path: Path
) -> None:
    """The seconds of a fresh process go to work, not to imports: fastai is only for unpickling, MONAI
    only for volumes that need several windows and for scoring against a ground truth."""
    folder = tiny_study(name="Tiny_778", shape=(24, 24, 20), seed=8, seg=False)["T1"].parent
    model.load_model(tiny_model_dir, device="cpu", backend="openvino")  # fills the cache
    script = (
        "import sys; from brats_seg.cli import main; "
        f"code = main(['predict', {str(folder)!r}, '--output', {str(tmp_path / 'out')!r}, "
        f"'--model', {str(tiny_model_dir)!r}, '--no-progress']); "
        "print(code, sorted({m.split('.')[0] for m in sys.modules} & {'fastai', 'monai'}))"
    )
    env = {**__import__("os").environ, "BRATS_SEG_CACHE": str(cache)}
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=300
    )
    assert done.stdout.strip().splitlines()[-1] == "0 []", done.stdout + done.stderr
    written = next((tmp_path / "out").glob("*_report.json"))
    assert json.loads(written.read_text())["settings"]["backend"] == "openvino"
