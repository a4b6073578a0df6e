"""Tests for ``brats_seg.inference``: MONAI sliding windows, progress, ensembles, flips, activations."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from brats_seg import inference


class CountingNet(nn.Module):
    """Wraps a network and counts the windows (batch items) MONAI passes through it."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net
        self.windows = 0
        self.calls = 0
        self.window_shapes: set[tuple[int, ...]] = set()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.windows += x.shape[0]
        self.calls += 1
        self.window_shapes.add(tuple(x.shape[2:]))
        return self.net(x)


def pointwise_net(in_channels: int = 4, out_channels: int = 3, seed: int = 0) -> nn.Module:
    """A 1x1x1 convolution: each voxel's output depends only on that voxel (flip-equivariant)."""
    torch.manual_seed(seed)
    return nn.Conv3d(in_channels, out_channels, kernel_size=1).eval()


def context_net(seed: int = 0) -> nn.Module:
    """A 3x3x3 convolution: outputs depend on the neighbourhood, so windows and padding matter."""
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv3d(4, 3, kernel_size=3, padding=1), nn.Tanh()).eval()


def volume(shape: tuple[int, int, int], seed: int = 0) -> torch.Tensor:
    return torch.randn((4, *shape), generator=torch.Generator().manual_seed(seed))


WINDOW_CASES = [
    # (image shape, roi, overlap, sw_batch_size)
    ((16, 16, 12), (16, 16, 16), 0.5, 2),  # smaller than the window along z: padded, one window
    ((16, 16, 16), (16, 16, 16), 0.5, 1),  # exactly one window
    ((40, 33, 17), (16, 16, 16), 0.5, 3),
    ((40, 33, 17), (16, 16, 16), 0.25, 2),
    ((40, 33, 17), (16, 16, 16), 0.0, 1),
    ((23, 30, 9), (8, 12, 4), 0.75, 4),
    ((50, 20, 20), (16, 8, 20), 0.6, 2),
    ((7, 7, 7), (16, 16, 16), 0.5, 1),
]


@pytest.mark.parametrize(("shape", "roi", "overlap", "batch"), WINDOW_CASES)
def test_count_windows_equals_the_windows_monai_visits(shape, roi, overlap, batch) -> None:
    net = CountingNet(pointwise_net())
    inference.predict(volume(shape), net, roi_size=roi, overlap=overlap, sw_batch_size=batch, device="cpu")
    assert net.windows == inference.count_windows(shape, roi, overlap)
    assert net.window_shapes == {tuple(roi)}


def test_progress_is_monotonic_and_ends_at_one() -> None:
    shape, roi, overlap = (40, 33, 17), (16, 16, 16), 0.5
    nets = [CountingNet(pointwise_net(seed=0)), CountingNet(pointwise_net(seed=1))]
    seen: list[float] = []
    inference.predict(
        volume(shape),
        nets,
        roi_size=roi,
        overlap=overlap,
        sw_batch_size=3,
        tta_flips=True,
        device="cpu",
        progress=seen.append,
    )
    assert seen == sorted(seen)
    assert all(0.0 <= f <= 1.0 for f in seen)
    assert seen[-1] == 1.0
    windows = inference.count_windows(shape, roi, overlap) * len(nets) * len(inference.FLIPS)
    assert sum(n.windows for n in nets) == windows
    # one report per batch of windows, then the final 1.0; the counted fraction itself reaches 1
    assert len(seen) == sum(n.calls for n in nets) + 1
    assert seen[-2] == pytest.approx(1.0)


def test_ensemble_of_two_identical_networks_equals_one() -> None:
    x = volume((20, 18, 14), seed=3)
    kwargs = {"roi_size": (16, 16, 16), "overlap": 0.5, "device": "cpu"}
    one = inference.predict(x, context_net(seed=7), **kwargs)
    two = inference.predict(x, [context_net(seed=7), context_net(seed=7)], **kwargs)
    torch.testing.assert_close(two, one, rtol=0, atol=1e-6)
    different = inference.predict(x, [context_net(seed=7), context_net(seed=8)], **kwargs)
    assert not torch.allclose(different, one, atol=1e-3)  # a real ensemble does average something


def test_tta_flips_on_a_flip_equivariant_net_changes_nothing() -> None:
    x = volume((21, 18, 13), seed=4)
    net = pointwise_net(seed=2)
    kwargs = {"roi_size": (16, 16, 8), "overlap": 0.5, "device": "cpu"}
    plain = inference.predict(x, net, tta_flips=False, **kwargs)
    flipped = inference.predict(x, net, tta_flips=True, **kwargs)
    torch.testing.assert_close(flipped, plain, rtol=0, atol=1e-5)


def test_tta_flips_average_the_flipped_predictions() -> None:
    x = volume((16, 16, 16), seed=5)
    net = context_net(seed=3)
    kwargs = {"roi_size": (16, 16, 16), "overlap": 0.5, "device": "cpu"}  # one window: no blending
    expected = torch.zeros(3, 16, 16, 16)
    with torch.no_grad():
        for dims in inference.FLIPS:
            inp = torch.flip(x[None], dims) if dims else x[None]
            out = torch.sigmoid(net(inp))
            expected += (torch.flip(out, dims) if dims else out)[0]
    torch.testing.assert_close(
        inference.predict(x, net, tta_flips=True, **kwargs), expected / 4, rtol=0, atol=1e-5
    )


@pytest.mark.parametrize("shape", [(16, 16, 12), (31, 17, 9), (5, 40, 16)])
@pytest.mark.parametrize("batched", [False, True])
def test_output_shape_is_the_input_spatial_shape(shape, batched) -> None:
    x = volume(shape)
    out = inference.predict(
        x[None] if batched else x, pointwise_net(out_channels=4), roi_size=(16, 16, 16), device="cpu"
    )
    assert tuple(out.shape) == (4, *shape)
    assert out.dtype == torch.float32 and out.device.type == "cpu"


def test_activations() -> None:
    x = volume((20, 20, 12)) * 10
    net = pointwise_net(out_channels=4, seed=1)
    kwargs = {"roi_size": (16, 16, 16), "overlap": 0.5, "device": "cpu"}
    sig = inference.predict(x, net, activation="sigmoid", **kwargs)
    assert float(sig.min()) >= 0.0 and float(sig.max()) <= 1.0
    soft = inference.predict(x, net, activation="softmax", **kwargs)
    assert float(soft.min()) >= 0.0 and float(soft.max()) <= 1.0
    torch.testing.assert_close(soft.sum(0), torch.ones(20, 20, 12), rtol=0, atol=1e-5)
    logits = inference.predict(x, net, activation="none", **kwargs)
    with torch.no_grad():
        direct = net(x[None])[0]
    # a pointwise net gives the same value in every window: blending returns the logits themselves
    torch.testing.assert_close(logits, direct, rtol=0, atol=1e-4)
    torch.testing.assert_close(sig, torch.sigmoid(direct), rtol=0, atol=1e-5)
    assert float(logits.min()) < 0.0 or float(logits.max()) > 1.0  # really unbounded


def test_predict_refuses_bad_arguments() -> None:
    with pytest.raises(ValueError, match="at least one network"):
        inference.predict(volume((8, 8, 8)), [], roi_size=(8, 8, 8), device="cpu")
    two = torch.stack([volume((8, 8, 8)), volume((8, 8, 8))])
    with pytest.raises(
        ValueError,
        match=r"expected a volume of shape \(C, X, Y, Z\) or \(1, C, X, Y, Z\), found \(2, 4, 8, 8, 8\)",
    ):
        inference.predict(two, pointwise_net(), roi_size=(8, 8, 8), device="cpu")
    with pytest.raises(ValueError, match=r"found \(8, 8, 8\)"):
        inference.predict(volume((8, 8, 8))[0], pointwise_net(), roi_size=(8, 8, 8), device="cpu")
    with pytest.raises(ValueError, match="expected activation 'sigmoid', 'softmax' or 'none', found 'relu'"):
        inference.predict(
            volume((8, 8, 8)), pointwise_net(), roi_size=(8, 8, 8), activation="relu", device="cpu"
        )


def test_predict_accepts_float64_input() -> None:
    x = volume((10, 10, 10))
    net = pointwise_net()
    single = inference.predict(x, net, roi_size=(8, 8, 8), device="cpu")
    double = inference.predict(x.double(), net, roi_size=(8, 8, 8), device="cpu")
    assert double.dtype == torch.float32
    torch.testing.assert_close(double, single)


def test_predict_leaves_the_input_untouched() -> None:
    x = volume((12, 12, 12))
    before = x.clone()
    inference.predict(x, pointwise_net(), roi_size=(8, 8, 8), tta_flips=True, device="cpu")
    assert torch.equal(x, before)


def test_configure_threads_reads_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    before = torch.get_num_threads()
    try:
        monkeypatch.delenv(inference.THREADS_ENV, raising=False)
        assert inference.configure_threads() == before  # unset: torch's default is left alone
        monkeypatch.setenv(inference.THREADS_ENV, "2")
        assert inference.configure_threads() == 2 and torch.get_num_threads() == 2
        assert inference.configure_threads(1) == 1 and torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)


@pytest.mark.parametrize("value", ["0", "-1", "two", "1.5"])
def test_configure_threads_refuses_bad_values(value: str, monkeypatch: pytest.MonkeyPatch) -> None:
    before = torch.get_num_threads()
    monkeypatch.setenv(inference.THREADS_ENV, value)
    with pytest.raises(ValueError, match=r"\$BRATS_SEG_TORCH_THREADS: expected a positive integer, found "):
        inference.configure_threads()
    assert torch.get_num_threads() == before
    with pytest.raises(ValueError, match="threads: expected a positive integer, found 0"):
        inference.configure_threads(0)


def test_predict_takes_any_callable_network() -> None:
    """OpenVINO networks are plain callables from windows to logits, not torch modules."""
    net = context_net(seed=1)
    x = volume((20, 18, 17), seed=2)
    window = {"roi_size": (16, 16, 16), "overlap": 0.5, "device": "cpu"}
    with torch.inference_mode():
        as_module = inference.predict(x, net, **window)
        as_callable = inference.predict(x, [lambda batch: net(batch)], **window)
    torch.testing.assert_close(as_module, as_callable)
