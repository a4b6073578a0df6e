"""``brats_seg.windows`` slides windows exactly as ``monai.inferers.sliding_window_inference`` does."""

from __future__ import annotations

import pytest
import torch
from monai.inferers import sliding_window_inference
from test_inference import WINDOW_CASES, context_net

from brats_seg import windows


@pytest.mark.parametrize(("shape", "roi", "overlap", "batch"), WINDOW_CASES)
@pytest.mark.parametrize("mode", ["gaussian", "constant"])
def test_outputs_equal_monai_sliding_window(shape, roi, overlap, batch, mode) -> None:
    net = context_net(seed=4)
    x = torch.randn((1, 4, *shape), generator=torch.Generator().manual_seed(6))
    settings = {"roi_size": roi, "sw_batch_size": batch, "overlap": overlap, "mode": mode}
    with torch.inference_mode():
        ours = windows.sliding_window(x, net, **settings)
        monai = sliding_window_inference(x, predictor=net, sw_device="cpu", device="cpu", **settings)
    assert ours.shape == monai.shape == (1, 3, *shape)
    torch.testing.assert_close(ours, monai, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize(
    ("size", "roi", "overlap"), [(96, 96, 0.5), (101, 96, 0.5), (200, 96, 0.25), (37, 8, 0.75)]
)
def test_window_starts_are_where_monai_starts_its_windows(size, roi, overlap) -> None:
    seen: list[int] = []

    def record(batch: torch.Tensor, where: list) -> torch.Tensor:
        seen.extend(int(w[2].start) for w in where)
        return batch

    image = torch.zeros(1, 1, size, 2, 2)
    window = {"roi_size": (roi, 2, 2), "sw_batch_size": 1, "overlap": overlap}
    sliding_window_inference(image, predictor=record, with_coord=True, **window)
    assert windows.window_starts(size, roi, overlap) == seen


def test_pad_to_window_pads_the_smaller_half_first_and_crops_back() -> None:
    x = torch.arange(2 * 3 * 5 * 4, dtype=torch.float32).reshape(1, 2, 3, 5, 4)
    padded, crop = windows.pad_to_window(x, (6, 5, 7))
    assert padded.shape == (1, 2, 6, 5, 7)
    assert crop == (slice(None), slice(None), slice(1, 4), slice(0, 5), slice(1, 5))
    torch.testing.assert_close(padded[crop], x)
    assert padded.sum() == x.sum()


def test_an_unknown_blending_mode_is_refused() -> None:
    with pytest.raises(ValueError, match=r"expected mode 'gaussian' or 'constant', found 'hann'"):
        windows.importance_map((8, 8, 8), "hann")
