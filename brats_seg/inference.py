"""Sliding-window inference with MONAI, in MONAI's vocabulary.

``predict`` runs MONAI's sliding window (``sliding_window_inference``) under ``torch.inference_mode()`` on the
GPU when there is one, averages an ensemble of networks, optionally averages test-time flips, and
reports progress (fraction done) through a callback. The windows slide as MONAI's do, in
:mod:`brats_seg.windows`, without importing MONAI (seconds of a fresh process).
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Sequence

import torch

from .windows import sliding_window, window_starts

ProgressCallback = Callable[[float], None]
#: A network: from a batch of windows (N, C, X, Y, Z) to logits (N, K, X, Y, Z).
Predictor = Callable[[torch.Tensor], torch.Tensor]

#: Environment variable with the number of CPU threads torch may use for inference.
THREADS_ENV = "BRATS_SEG_TORCH_THREADS"


def configure_threads(threads: int | None = None) -> int:
    """Set how many CPU threads torch uses, and return the number in force.

    Several dashboard kernels on one small server (Binder, Heroku) each default to every core and
    then slow each other down; set ``BRATS_SEG_TORCH_THREADS=1`` there.

    Args:
        threads: Threads to use; None reads ``$BRATS_SEG_TORCH_THREADS`` and, when that is unset or
            empty, leaves torch's default (one per core) unchanged.

    Raises:
        ValueError: when the number (or the variable) is not a positive integer; the message names it.
    """
    source = "threads"
    if threads is None:
        raw = os.environ.get(THREADS_ENV, "").strip()
        if not raw:
            return torch.get_num_threads()
        source = f"${THREADS_ENV}"
        try:
            threads = int(raw)
        except ValueError:
            raise ValueError(f"{source}: expected a positive integer, found {raw!r}") from None
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise ValueError(f"{source}: expected a positive integer, found {threads!r}")
    torch.set_num_threads(threads)
    return threads


def count_windows(shape: Sequence[int], roi_size: Sequence[int], overlap: float) -> int:
    """Number of windows MONAI's sliding window visits for one image of ``shape``."""
    return math.prod(
        len(window_starts(max(size, roi), roi, overlap)) for size, roi in zip(shape, roi_size, strict=True)
    )


FLIPS: tuple[tuple[int, ...], ...] = ((), (2,), (3,), (4,))

#: Activation name -> what turns a batch of logits (N, K, X, Y, Z) into probabilities.
ACTIVATIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "sigmoid": torch.sigmoid,
    "softmax": lambda logits: torch.softmax(logits, dim=1),
    "none": lambda logits: logits,
}


class WindowProgress:
    """Counts the windows the networks have run and reports the fraction done.

    Args:
        total: Windows to run in all (every network, flip and image).
        callback: Called with the fraction done (0..1) after each batch of windows (None: not called).
    """

    def __init__(self, total: int, callback: ProgressCallback | None) -> None:
        self.total = total
        self.callback = callback
        self.done = 0

    def tracked(self, net: Predictor) -> Predictor:
        """``net`` as a predictor that counts the windows of each batch it runs."""

        def run(batch: torch.Tensor) -> torch.Tensor:
            out = net(batch)
            self.done += batch.shape[0]
            if self.callback is not None:
                self.callback(min(self.done / self.total, 1.0))
            return out

        return run


def _run_windows(
    inp: torch.Tensor, net: Callable[[torch.Tensor], torch.Tensor], window: dict, device: torch.device
) -> torch.Tensor:
    """Logits of one volume (1, C, X, Y, Z) over its sliding windows, on the CPU."""
    return sliding_window(inp.to(device), net, **window)


def _as_batch(volume: torch.Tensor, nets: list[Predictor], activation: str) -> torch.Tensor:
    """The volume as a float32 batch (1, C, X, Y, Z), once the arguments of :func:`predict` are checked."""
    if not nets:
        raise ValueError("predict needs at least one network")
    if volume.ndim not in (4, 5) or (volume.ndim == 5 and volume.shape[0] != 1):
        raise ValueError(
            "predict: expected a volume of shape (C, X, Y, Z) or (1, C, X, Y, Z), "
            f"found {tuple(volume.shape)}"
        )
    if activation not in ACTIVATIONS:
        raise ValueError(f"predict: expected activation 'sigmoid', 'softmax' or 'none', found {activation!r}")
    return (volume if volume.ndim == 5 else volume[None]).float()


def predict(
    volume: torch.Tensor,
    networks: Predictor | Sequence[Predictor],
    *,
    roi_size: Sequence[int] = (128, 128, 128),
    sw_batch_size: int = 1,
    overlap: float = 0.5,
    mode: str = "gaussian",
    activation: str = "sigmoid",
    tta_flips: bool = False,
    device: str | torch.device | None = None,
    progress: ProgressCallback | None = None,
) -> torch.Tensor:
    """Probabilities for one volume.

    Args:
        volume: Input (C, X, Y, Z) or (1, C, X, Y, Z); cast to float32.
        networks: One network or several (an ensemble; probabilities are averaged): torch modules, or
            callables from a batch of windows to logits (:class:`brats_seg.runtime.OpenVinoNetwork`).
        roi_size: Window size in voxels.
        sw_batch_size: Windows per forward pass.
        overlap: Fraction of overlap between windows.
        mode: Blending of overlapping windows, ``"gaussian"`` or ``"constant"``.
        activation: ``"sigmoid"`` (region outputs), ``"softmax"`` (class outputs) or ``"none"``.
        tta_flips: Also predict on the volume flipped along each spatial axis and average.
        device: Default CUDA when available, else CPU.
        progress: Called with the fraction done (0..1) after each batch of windows.

    Returns:
        Float32 probabilities (K, X, Y, Z) on the CPU.

    Raises:
        ValueError: for no network, a volume that is not one 4-D image, or an unknown activation.
    """
    nets = list(networks) if isinstance(networks, Sequence) else [networks]
    x = _as_batch(volume, nets, activation)
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    flips = FLIPS if tta_flips else ((),)
    total = count_windows(x.shape[2:], roi_size, overlap) * len(nets) * len(flips) * x.shape[0]
    counter = WindowProgress(total, progress)
    window = {"roi_size": tuple(roi_size), "sw_batch_size": sw_batch_size, "overlap": overlap, "mode": mode}
    acc = None
    with torch.inference_mode(), torch.autocast(device_type=device.type, enabled=device.type == "cuda"):
        for net in nets:
            if isinstance(net, torch.nn.Module):
                net.to(device).eval()
            for dims in flips:
                inp = torch.flip(x, dims) if dims else x
                logits = _run_windows(inp, counter.tracked(net), window, device)
                probs = ACTIVATIONS[activation](logits.float())
                if dims:
                    probs = torch.flip(probs, dims)
                acc = probs if acc is None else acc + probs
            getattr(net, "release_memory", lambda: None)()  # an OpenVINO network's window buffers
    if progress is not None:
        progress(1.0)
    return (acc / (len(nets) * len(flips)))[0].float().cpu()
