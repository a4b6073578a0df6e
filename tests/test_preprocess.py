"""Tests for ``brats_seg.preprocess``: reorientation, brain crop, z-scoring, resampling and restore."""

from __future__ import annotations

from functools import lru_cache
from itertools import permutations, product

import nibabel as nib
import numpy as np
import pytest
import torch
from helpers import brats_affine, tiny_volumes
from nibabel.orientations import apply_orientation, inv_ornt_aff

from brats_seg import preprocess
from brats_seg.card import ModelCard
from brats_seg.errors import StudyError
from brats_seg.types import MODALITIES, Study

#: Every axis permutation with every combination of flips: the 48 ways to store a 3-D volume.
ORIENTATIONS: list[np.ndarray] = [
    np.array([[perm[i], flips[i]] for i in range(3)], dtype=float)
    for perm in permutations(range(3))
    for flips in product((1, -1), repeat=3)
]
BASE_SHAPE = (32, 32, 24)
BASE_SPACING = (1.0, 1.5, 2.0)


def stored_affine(base_affine: np.ndarray, ornt: np.ndarray, base_shape: tuple[int, ...]) -> np.ndarray:
    """The affine of the base volume stored as ``apply_orientation(base, ornt)`` (same anatomy)."""
    return base_affine @ inv_ornt_aff(ornt, base_shape)


def orientation_id(ornt: np.ndarray) -> str:
    affine = stored_affine(brats_affine(BASE_SHAPE), ornt, BASE_SHAPE)
    return "".join(nib.aff2axcodes(affine))


def make_card(**kwargs) -> ModelCard:
    settings = {
        "name": "test-card",
        "files": [],
        "sha256": {},
        "channels": ["FLAIR", "T1", "T1CE", "T2"],
        "output": {"type": "regions_sigmoid", "regions": ["TC", "WT", "ET"], "threshold": 0.5},
        "spacing": [2.0, 2.0, 2.0],
        "roi_size": [16, 16, 16],
        "crop_margin": 2,
    }
    settings.update(kwargs)
    return ModelCard(**settings)


def make_study(images: dict[str, np.ndarray], affine: np.ndarray, name: str = "Synthetic") -> Study:
    """A study with a NIfTI header made from ``affine`` (so its zooms follow the affine)."""
    header = nib.Nifti1Image(np.zeros(next(iter(images.values())).shape, np.float32), affine).header
    return Study(name=name, images=dict(images), affine=affine, header=header)


@lru_cache(maxsize=4)
def cached_volumes(shape: tuple[int, int, int], seed: int) -> dict[str, np.ndarray]:
    images, _ = tiny_volumes(shape, seed=seed)
    for image in images.values():
        image.flags.writeable = False
    return images


def stored_study(ornt: np.ndarray, *, spacing=BASE_SPACING, shape=BASE_SHAPE) -> tuple[Study, Study]:
    """The tiny anatomy in the BraTS (LPS) orientation and the same anatomy stored with ``ornt``."""
    images = cached_volumes(shape, 4)
    base_affine = brats_affine(shape, spacing)
    base = make_study({m: images[m].astype(np.float32) for m in MODALITIES}, base_affine, "Base")
    stored = make_study(
        {m: apply_orientation(images[m], ornt).astype(np.float32) for m in MODALITIES},
        stored_affine(base_affine, ornt, shape),
        "Stored",
    )
    return base, stored


def padded_study(pad: int = 6, spacing=(1.0, 1.0, 1.0)) -> tuple[Study, np.ndarray]:
    """A tiny study placed inside a larger zero volume, so the brain box is smaller than the grid."""
    images, _ = tiny_volumes((20, 20, 16), seed=5)
    shape = (20 + 2 * pad, 20 + 3 * pad, 16 + pad)
    sl = (slice(pad, pad + 20), slice(2 * pad, 2 * pad + 20), slice(pad, pad + 16))
    full = {}
    for m in MODALITIES:
        arr = np.zeros(shape, dtype=np.float32)
        arr[sl] = images[m]
        full[m] = arr
    brain = np.any([full[m] != 0 for m in MODALITIES], axis=0)
    return make_study(full, brats_affine(shape, spacing)), brain


# --------------------------------------------------------------------------------------------------
# Orientation
# --------------------------------------------------------------------------------------------------


def test_there_are_48_distinct_orientations() -> None:
    assert len({orientation_id(o) for o in ORIENTATIONS}) == 48


@pytest.mark.parametrize("ornt", ORIENTATIONS, ids=[orientation_id(o) for o in ORIENTATIONS])
def test_reorient_round_trip_for_every_orientation(ornt: np.ndarray) -> None:
    rng = np.random.default_rng(0)
    base = rng.normal(size=(2, 5, 6, 7)).astype(np.float32)
    base_affine = brats_affine((5, 6, 7), BASE_SPACING)
    stored = np.stack([apply_orientation(c, ornt) for c in base])
    affine = stored_affine(base_affine, ornt, (5, 6, 7))
    for axcodes in ("LPS", "RAS", "SAR"):
        transform = preprocess.orientation_transform(affine, axcodes)
        oriented = preprocess.reorient(stored, transform)
        # reorient then unreorient is the identity, for 4-D (channels first) and 3-D arrays
        np.testing.assert_array_equal(preprocess.unreorient(oriented, transform), stored)
        np.testing.assert_array_equal(preprocess.unreorient(oriented[0], transform), stored[0])
        np.testing.assert_array_equal(preprocess.reorient(stored[1], transform), oriented[1])
        # the reoriented grid has the requested axis codes ...
        new_affine = affine @ inv_ornt_aff(transform, stored.shape[1:])
        assert "".join(nib.aff2axcodes(new_affine)) == axcodes
        # ... and every voxel keeps its world position: value at world point w is unchanged
        to_stored = np.linalg.inv(affine) @ new_affine
        idx = np.indices(oriented.shape[1:]).reshape(3, -1)
        src = np.rint(to_stored[:3, :3] @ idx + to_stored[:3, 3:]).astype(int)
        np.testing.assert_array_equal(oriented[:, idx[0], idx[1], idx[2]], stored[:, src[0], src[1], src[2]])
    # back in the BraTS orientation the array is the original one
    np.testing.assert_array_equal(
        preprocess.reorient(stored, preprocess.orientation_transform(affine, "LPS")), base
    )


@pytest.mark.parametrize("ornt", ORIENTATIONS, ids=[orientation_id(o) for o in ORIENTATIONS])
def test_prepare_does_not_depend_on_how_the_study_is_stored(ornt: np.ndarray) -> None:
    card = make_card()
    base, stored = stored_study(ornt)
    expected = preprocess.prepare(base, card)
    found = preprocess.prepare(stored, card)
    assert found.box == expected.box
    assert found.oriented_shape == expected.oriented_shape == BASE_SHAPE
    np.testing.assert_allclose(found.tensor.numpy(), expected.tensor.numpy(), rtol=0, atol=1e-5)
    # restoring puts each value back on the stored grid
    probs = torch.rand((3, *found.tensor.shape[1:]), generator=torch.Generator().manual_seed(0))
    back_stored = preprocess.restore(probs, found)
    back_base = preprocess.restore(probs, expected)
    assert back_stored.shape == (3, *stored.shape)
    np.testing.assert_allclose(
        back_stored, np.stack([apply_orientation(c, ornt) for c in back_base]), atol=1e-6
    )


# --------------------------------------------------------------------------------------------------
# prepare / restore
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("study_spacing", "card_spacing"),
    [
        ((1.0, 1.0, 1.0), [2.0, 2.0, 2.0]),
        ((1.0, 1.0, 2.0), [2.0, 2.0, 2.0]),
        ((1.0, 1.0, 1.0), [1.0, 1.0, 1.0]),
    ],
)
def test_prepare_restore_round_trip_returns_the_study_shape(study_spacing, card_spacing) -> None:
    study, _ = padded_study(spacing=study_spacing)
    prepared = preprocess.prepare(study, make_card(spacing=card_spacing))
    assert prepared.tensor.dtype == torch.float32 and prepared.tensor.shape[0] == 4
    crop_mm = np.array(prepared.cropped_shape) * np.array(study_spacing)
    net_mm = np.array(prepared.tensor.shape[1:]) * np.array(card_spacing)
    assert np.all(np.abs(net_mm - crop_mm) <= np.array(card_spacing) / 2)  # same physical extent
    restored = preprocess.restore(torch.rand(3, *prepared.tensor.shape[1:]), prepared)
    assert restored.shape == (3, *study.shape) and restored.dtype == np.float32


def test_prepare_stacks_channels_in_card_order() -> None:
    study, brain = padded_study()
    card = make_card(spacing=[1.0, 1.0, 1.0], crop_margin=0)
    prepared = preprocess.prepare(study, card)
    restored = preprocess.restore(prepared.tensor, prepared)
    for i, modality in enumerate(card.channels):
        single = preprocess.normalise(study.images[modality][None], brain)[0]
        np.testing.assert_allclose(restored[i], single, atol=1e-5)


def test_crop_box_contains_the_brain() -> None:
    study, brain = padded_study()
    prepared = preprocess.prepare(study, make_card(spacing=[1.0, 1.0, 1.0], crop_margin=3))
    inside = np.zeros(study.shape, dtype=bool)
    inside[tuple(slice(a, b) for a, b in prepared.box)] = True
    assert inside[brain].all()
    assert not inside.all()  # the crop is smaller than the padded volume
    # restore fills only the crop: ones inside, the background value outside
    ones = preprocess.restore(
        torch.ones(1, *prepared.tensor.shape[1:]), prepared, background=np.array([0.25])
    )
    assert np.all(ones[0][inside] == 1.0) and np.all(ones[0][~inside] == 0.25)


def test_brain_box_margin_and_clipping() -> None:
    mask = np.zeros((20, 20, 20), dtype=bool)
    mask[5:9, 1:4, 12:19] = True
    box = preprocess.brain_box(mask, margin=3)
    idx = np.argwhere(mask)
    for axis, (start, stop) in enumerate(box):
        lo, hi = idx[:, axis].min(), idx[:, axis].max() + 1
        assert start <= lo and stop >= hi  # contains the mask
        assert start == max(lo - 3, 0) and stop == min(hi + 3, 20)  # grown by the margin, clipped
    with pytest.raises(StudyError, match="all four sequences are zero everywhere"):
        preprocess.brain_box(np.zeros((4, 4, 4), dtype=bool))


# --------------------------------------------------------------------------------------------------
# normalise
# --------------------------------------------------------------------------------------------------


def test_normalise_zero_mean_unit_std_inside_mask_zero_outside() -> None:
    rng = np.random.default_rng(1)
    image = np.stack(
        [rng.normal(loc, scale, size=(16, 16, 16)) for loc, scale in [(500, 40), (-3, 0.1), (1e4, 900)]]
    )
    mask = rng.random((16, 16, 16)) > 0.4
    out = preprocess.normalise(image.astype(np.float32), mask)
    assert out.dtype == np.float32
    for c in range(3):
        assert abs(float(out[c][mask].mean())) < 1e-4
        assert float(out[c][mask].std()) == pytest.approx(1.0, abs=1e-4)
        assert np.all(out[c][~mask] == 0)


def test_normalise_constant_channel_gives_zeros() -> None:
    image = np.full((1, 6, 6, 6), 7.0, dtype=np.float32)
    out = preprocess.normalise(image, np.ones((6, 6, 6), dtype=bool))
    assert np.all(np.isfinite(out)) and np.all(out == 0)


def test_normalise_is_robust_to_huge_outliers() -> None:
    rng = np.random.default_rng(2)
    brain = rng.normal(500, 25, size=(2, 24, 24, 24)).astype(np.float32)
    mask = np.ones((24, 24, 24), dtype=bool)
    spikes = rng.random((24, 24, 24)) < 0.001  # 0.1 % of voxels at the int16 maximum, as in one BraTS case
    image = brain.copy()
    image[0][spikes] = 32767
    out = preprocess.normalise(image, mask)
    clean = preprocess.normalise(brain, mask)
    # the ordinary voxels of the spiked channel keep their contrast: nearly the clean z-scores
    assert float(out[0][~spikes].std()) > 0.9
    assert np.corrcoef(out[0][~spikes], clean[0][~spikes])[0, 1] > 0.999
    assert float(np.abs(out[0]).max()) < 6  # the spikes are clipped, not 1000 sigma away
    # without clipping the spikes would squash every ordinary voxel towards one value
    unclipped = preprocess.normalise(image, mask, clip_percentiles=(0, 100))
    assert float(unclipped[0][~spikes].std()) < 0.1
    np.testing.assert_allclose(out[1], clean[1], atol=1e-5)  # the other channel is untouched


# --------------------------------------------------------------------------------------------------
# resampling
# --------------------------------------------------------------------------------------------------


def test_target_shape_keeps_the_physical_extent() -> None:
    for shape, spacing, target in [
        ((240, 240, 155), (1, 1, 1), (2, 2, 2)),
        ((31, 17, 9), (0.9, 1.3, 5.0), (2, 2, 2)),
    ]:
        new = preprocess.target_shape(shape, spacing, target)
        extent = np.array(shape) * np.array(spacing)
        assert np.all(np.abs(np.array(new) * np.array(target) - extent) <= np.array(target) / 2)
        assert preprocess.target_shape(shape, spacing, spacing) == shape


def test_resample_to_2mm_and_back_keeps_a_linear_ramp() -> None:
    shape = (24, 20, 16)
    ramp = torch.from_numpy(np.indices(shape).astype(np.float32))  # 3 channels: x, y and z ramps
    down = preprocess.resample(ramp, preprocess.target_shape(shape, (1, 1, 1), (2, 2, 2)))
    assert tuple(down.shape[1:]) == (12, 10, 8)
    back = preprocess.resample(down, shape)
    assert tuple(back.shape) == (3, *shape)
    interior = (slice(None), slice(2, -2), slice(2, -2), slice(2, -2))
    np.testing.assert_allclose(
        back[interior].numpy(), ramp[interior].numpy(), rtol=0, atol=1e-4
    )  # trilinear is exact on a ramp
    assert preprocess.resample(ramp, shape) is ramp  # no-op at the same shape


def test_resample_to_2mm_and_back_keeps_a_ball() -> None:
    shape = (30, 30, 20)
    ball = ((np.indices(shape) - np.array([15, 13, 10])[:, None, None, None]) ** 2).sum(0) <= 7**2
    tensor = torch.from_numpy(ball[None].astype(np.float32))
    back = preprocess.resample(preprocess.resample(tensor, (15, 15, 10)), shape)[0].numpy() >= 0.5
    dice = 2 * np.logical_and(back, ball).sum() / (back.sum() + ball.sum())
    assert dice > 0.95


def test_prepare_at_2mm_of_an_anisotropic_study() -> None:
    study, _ = padded_study(spacing=(1.0, 1.0, 2.0))
    prepared = preprocess.prepare(study, make_card(spacing=[2.0, 2.0, 2.0], crop_margin=1))
    x, y, z = prepared.cropped_shape
    assert tuple(prepared.tensor.shape[1:]) == preprocess.target_shape((x, y, z), (1.0, 1.0, 2.0), (2, 2, 2))
    assert prepared.tensor.shape[3] == z  # already 2 mm along z: no resampling there
