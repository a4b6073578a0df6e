"""Where the networks run: PyTorch, or OpenVINO on the CPU.

On this project's 2-core CPU, OpenVINO runs the shipped UNet about twice as fast as PyTorch with the same
outputs within float rounding (``benchmarks/bench_speed.py`` measures both). A network is converted
once from the sha256-checked learner and saved as OpenVINO IR (an XML graph and a binary of float32
weights: no pickle, nothing in it runs code) under the cache folder, named by the learner's sha256 and
OpenVINO's version; later starts check the learner's sha256 against the card and read the IR, so they
neither unpickle the learner nor import fastai or MONAI. The exported learner stays the model's source of
truth: a learner with another sha256 gets another IR.
"""

from __future__ import annotations

import ctypes
import importlib.util
import os
import tempfile
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .cache import default_cache_dir

if TYPE_CHECKING:  # both load in seconds: imported where used, so the CLI's parser stays light
    import openvino as ov
    import torch

#: Environment variable naming the backend when none is given (``auto``, ``torch`` or ``openvino``).
BACKEND_ENV = "BRATS_SEG_BACKEND"
#: The backends a caller may ask for; ``auto`` is OpenVINO on the CPU when installed, else PyTorch.
BACKENDS = ("auto", "torch", "openvino")


def openvino_installed() -> bool:
    """Whether the ``openvino`` package can be imported (without importing it)."""
    return importlib.util.find_spec("openvino") is not None


def resolve_backend(backend: str | None, device: str | torch.device) -> str:
    """The backend that will run the networks: ``"torch"`` or ``"openvino"``.

    Args:
        backend: ``auto``, ``torch``, ``openvino``, or None for ``$BRATS_SEG_BACKEND`` (default ``auto``).
        device: Where the networks run; OpenVINO runs only on the CPU.

    Raises:
        ValueError: for an unknown backend, OpenVINO asked for on a GPU, or OpenVINO not installed; the
            message names where the backend came from.
    """
    import torch

    source = "backend"
    if backend is None:
        backend = os.environ.get(BACKEND_ENV, "").strip() or "auto"
        source = f"${BACKEND_ENV}" if os.environ.get(BACKEND_ENV, "").strip() else source
    if backend not in BACKENDS:
        raise ValueError(f"{source}: expected one of {', '.join(BACKENDS)}, found {backend!r}")
    on_cpu = torch.device(device).type == "cpu"
    if backend == "auto":
        return "openvino" if on_cpu and openvino_installed() else "torch"
    if backend == "openvino" and not on_cpu:
        raise ValueError(f"{source}: OpenVINO runs on the CPU; found device {torch.device(device)}")
    if backend == "openvino" and not openvino_installed():
        raise ValueError(f"{source}: expected the openvino package to be installed, found none")
    return backend


def ir_path(sha256: str) -> Path:
    """Where the IR converted from the learner with this sha256 lives (per OpenVINO version)."""
    import openvino as ov

    return default_cache_dir() / f"openvino-{ov.__version__.split('-')[0]}" / f"{sha256}.xml"


def convert(net: torch.nn.Module, sha256: str, *, in_channels: int, roi_size: Sequence[int]) -> Path:
    """Convert a torch network to OpenVINO IR and save it (atomically) under :func:`ir_path`.

    Args:
        net: The network, in eval mode on the CPU.
        sha256: The sha256 of the learner it came from (the card's).
        in_channels: Input channels.
        roi_size: A window size the network takes (the trace's example; the IR keeps every size open).

    Returns:
        The IR's XML path.
    """
    import openvino as ov
    import torch

    path = ir_path(sha256)
    path.parent.mkdir(parents=True, exist_ok=True)
    example = torch.zeros(1, in_channels, *roi_size)
    with torch.inference_mode(False), torch.no_grad(), warnings.catch_warnings():
        # the trace turns instance norm's shape checks into constants: true of every window it takes
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        converted = ov.convert_model(net.float().cpu().eval(), example_input=example)
    converted.reshape([-1, in_channels, -1, -1, -1])
    with tempfile.TemporaryDirectory(dir=path.parent) as tmp:
        staged = Path(tmp) / path.name
        ov.save_model(converted, staged, compress_to_fp16=False)  # float32 weights, as the learner's
        os.replace(staged.with_suffix(".bin"), path.with_suffix(".bin"))
        os.replace(staged, path)
    return path


class OpenVinoNetwork:
    """One network compiled by OpenVINO for the CPU, called like the torch module it came from.

    It is compiled once per thread count (about 0.12 s) for one window of any size at a time: a batch of
    windows runs window by window, so each compiled network keeps the buffers of one window (about 100 MB
    at 96^3; a batch of two would take 130 MB more per network, for 10 % more speed), and windows of
    another size reuse it (a network compiled for one size is 3 % faster, but would keep 100 MB more per
    size). It takes and returns torch tensors ``(N, C, X, Y, Z)``.

    Args:
        xml: The IR (from :func:`convert`).
    """

    def __init__(self, xml: Path) -> None:
        import openvino as ov

        self.xml = Path(xml)
        self._core = ov.Core()
        self._model = self._core.read_model(self.xml)
        self._compiled: dict[int, Any] = {}

    def compiled(self, threads: int) -> ov.CompiledModel:
        """The network compiled for one window at a time with ``threads`` CPU threads (kept per count)."""
        if threads not in self._compiled:
            model = self._model.clone()
            channels = model.inputs[0].get_partial_shape()[1]
            model.reshape([1, channels, -1, -1, -1])
            config = {
                "INFERENCE_NUM_THREADS": int(threads),
                "INFERENCE_PRECISION_HINT": "f32",
                "PERFORMANCE_HINT": "LATENCY",
            }
            self._compiled = {threads: self._core.compile_model(model, "CPU", config)}  # one at a time
        return self._compiled[threads]

    def __call__(self, batch: torch.Tensor) -> torch.Tensor:
        """Logits for a batch of windows ``(N, C, X, Y, Z)``, on the CPU."""
        import torch

        compiled = self.compiled(torch.get_num_threads())
        inputs = np.ascontiguousarray(batch.detach().cpu().numpy(), dtype=np.float32)
        return torch.from_numpy(np.concatenate([compiled(window[None])[0].copy() for window in inputs]))

    def release_memory(self) -> None:
        """Give the buffers of the last window back to the system (OpenVINO allocates them again at the next
        call, at no measurable cost): a dashboard kernel between predictions keeps 370 MB less."""
        for compiled in self._compiled.values():
            compiled.release_memory()
        trim_heap()

    def __repr__(self) -> str:
        return f"OpenVinoNetwork({self.xml.name})"


def trim_heap() -> None:
    """Return freed heap memory to the system (glibc's ``malloc_trim``; elsewhere nothing happens)."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def openvino_network(
    sha256: str, *, net: torch.nn.Module | None = None, in_channels: int, roi_size: Sequence[int]
) -> OpenVinoNetwork | None:
    """The OpenVINO network of the learner with this sha256: from the cache, else converted from ``net``.

    Returns:
        The network, or None when the cache has none and no ``net`` is given to convert.
    """
    path = ir_path(sha256)
    if not (path.is_file() and path.with_suffix(".bin").is_file()):
        if net is None:
            return None
        path = convert(net, sha256, in_channels=in_channels, roi_size=roi_size)
    return OpenVinoNetwork(path)
