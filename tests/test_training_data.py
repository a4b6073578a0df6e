"""Training cases and patch datasets (brats_seg.training.data)."""

from __future__ import annotations

import torch

from brats_seg.training.data import PatchDataset, crop_patch, make_case


def test_patch_dataset_shapes_and_tumour_bias() -> None:
    image = torch.randn(4, 40, 40, 40)
    target = torch.zeros(3, 40, 40, 40)
    target[:, 5:10, 5:10, 5:10] = 1
    case = make_case("c", image, target)
    ds = PatchDataset([case], patch_size=(16, 16, 16), length=20, pos_fraction=1.0, augment=False, seed=0)
    hits = 0
    for i in range(len(ds)):
        img, tgt = ds[i]
        assert img.shape == (4, 16, 16, 16) and tgt.shape == (3, 16, 16, 16)
        hits += int(tgt.sum() > 0)
    assert hits == 20  # every centre drawn from the tumour
    assert len(ds.new_empty()) == 0


def test_patch_dataset_reseed_starts_a_new_reproducible_stream() -> None:
    image = torch.randn(4, 24, 24, 24)
    target = torch.zeros(3, 24, 24, 24)
    target[:, 8:14, 8:14, 8:14] = 1
    case = make_case("c", image, target)

    def first_patches(ds: PatchDataset) -> list[torch.Tensor]:
        return [ds[i][0] for i in range(3)]

    a = first_patches(PatchDataset([case], patch_size=(8, 8, 8), seed=0))
    ds = PatchDataset([case], patch_size=(8, 8, 8), seed=0)
    ds.reseed(12345)
    b = first_patches(ds)
    again = PatchDataset([case], patch_size=(8, 8, 8), seed=0)
    again.reseed(12345)
    assert not all(torch.equal(x, y) for x, y in zip(a, b, strict=True))
    assert all(torch.equal(x, y) for x, y in zip(b, first_patches(again), strict=True))


def test_crop_patch_pads_outside_the_volume() -> None:
    image = torch.ones(4, 10, 10, 10)
    case = make_case("c", image, torch.zeros(3, 10, 10, 10))
    img, _ = crop_patch(case, (0, 0, 0), (16, 16, 16))
    assert img.shape == (4, 16, 16, 16)
    assert float(img.sum()) == 4 * 10 * 10 * 10  # every voxel of the volume, the rest zero padding


def test_patch_dataset_workers_draw_different_patches() -> None:
    """Forked workers start with copies of one random state; each must reseed or they repeat each other."""
    image = torch.randn(4, 40, 40, 40)
    case = make_case("c", image, torch.zeros(3, 40, 40, 40))
    ds = PatchDataset([case], patch_size=(8, 8, 8), length=8, augment=False, seed=0)
    loader = torch.utils.data.DataLoader(ds, batch_size=4, num_workers=2)
    first, second = (batch[0] for batch in loader)  # batch 0 from worker 0, batch 1 from worker 1
    assert not torch.equal(first, second)
