"""The faster non-network steps of ``segment`` (issue 23) give what the slower ones gave, bit for bit.

Each test holds the earlier implementation (as of main at 63c284d) as a reference and compares the
current one with it on generated arrays: every storage orientation, Fortran- and C-ordered images,
several dtypes, edge-touching brains, invalid label values.
"""

from __future__ import annotations

from itertools import permutations, product

import nibabel as nib
import numpy as np
import pytest
import torch
from helpers import brats_affine

from brats_seg import pipeline, preprocess, quality
from brats_seg.card import ModelCard
from brats_seg.postprocess import VALID_LABELS, apply_postprocess, check_labels, regions_to_labels
from brats_seg.report import volumes
from brats_seg.types import MODALITIES, LabelMap, Study, bounding_box, brain_mask, nonzero_mask

ORIENTATIONS = [
    np.array([[perm[i], flips[i]] for i in range(3)], dtype=float)
    for perm in permutations(range(3))
    for flips in product((1, -1), repeat=3)
]


def blob_mask(
    rng: np.random.Generator, shape: tuple[int, int, int], *, touch_edge: bool = False
) -> np.ndarray:
    """A random blob of voxels inside ``shape`` (reaching the grid's edge when ``touch_edge``)."""
    mask = np.zeros(shape, dtype=bool)
    lo = [0 if touch_edge and a == 0 else int(rng.integers(1, n // 3)) for a, n in enumerate(shape)]
    hi = [int(rng.integers(2 * n // 3, n)) for n in shape]
    inner = rng.random([h - low for low, h in zip(lo, hi, strict=True)]) < 0.4
    mask[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]] = inner
    return mask


def random_study(seed: int, ornt: np.ndarray, *, order: str = "F", dtype=np.float32) -> Study:
    """Four sequences on a small grid stored in orientation ``ornt``, brain-shaped non-zero region."""
    rng = np.random.default_rng(seed)
    base_shape = (21, 18, 15)
    mask = blob_mask(rng, base_shape, touch_edge=seed % 2 == 0)
    images = {}
    for m in MODALITIES:
        values = (rng.normal(100, 30, base_shape) * mask).astype(dtype)
        values[rng.random(base_shape) < 0.05] = 0  # dark voxels inside the brain
        stored = nib.orientations.apply_orientation(values, ornt)
        images[m] = np.asfortranarray(stored) if order == "F" else np.ascontiguousarray(stored)
    affine = brats_affine(base_shape) @ nib.orientations.inv_ornt_aff(ornt, base_shape)
    return Study(name=f"s{seed}", images=images, affine=affine, header=nib.Nifti1Header())


def card(**kwargs) -> ModelCard:
    values = {
        "name": "dummy",
        "files": [],
        "sha256": {},
        "channels": ["FLAIR", "T1", "T1CE", "T2"],
        "output": {"type": "regions_sigmoid", "regions": ["TC", "WT", "ET"]},
        "spacing": [2.0, 2.0, 2.0],
        "roi_size": [8, 8, 8],
        "crop_margin": 3,
    }
    return ModelCard(**{**values, **kwargs})


def same(a: np.ndarray, b: np.ndarray) -> bool:
    return a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()


# --- the references: the earlier implementations


def old_brain_mask(study: Study) -> np.ndarray:
    mask = np.zeros(study.shape, dtype=bool)
    for image in study.images.values():
        mask |= image != 0
    return mask


def old_brain_box(mask: np.ndarray, *, margin: int = 8) -> tuple[tuple[int, int], ...]:
    box = []
    for axis in range(3):
        other = tuple(a for a in range(3) if a != axis)
        idx = np.flatnonzero(mask.any(axis=other))
        box.append((max(int(idx[0]) - margin, 0), min(int(idx[-1]) + 1 + margin, mask.shape[axis])))
    return tuple(box)


def old_prepare(study: Study, card: ModelCard) -> preprocess.Prepared:
    image = preprocess.stack_channels(study, card.channels)
    ornt = preprocess.orientation_transform(study.affine, card.orientation)
    image = preprocess.reorient(image, ornt)
    spacing = preprocess.oriented_spacing(study, ornt)
    mask = (image != 0).any(axis=0)
    box = old_brain_box(mask, margin=card.crop_margin)
    sl = tuple(slice(a, b) for a, b in box)
    cropped = image[(slice(None), *sl)]
    norm = card.normalisation
    cropped = preprocess.normalise(
        cropped, mask[sl], clip_percentiles=tuple(norm.get("clip_percentiles", (0.5, 99.5)))
    )
    tensor = torch.from_numpy(cropped)
    tensor = preprocess.resample(tensor, preprocess.target_shape(tensor.shape[1:], spacing, card.spacing))
    return preprocess.Prepared(
        tensor=tensor.contiguous(),
        ornt=ornt,
        oriented_shape=tuple(image.shape[1:]),
        box=box,
        cropped_shape=tuple(cropped.shape[1:]),
    )


def old_restore(probs: torch.Tensor, prepared: preprocess.Prepared, *, background=None) -> np.ndarray:
    probs = preprocess.resample(probs.float().cpu(), prepared.cropped_shape)
    channels = probs.shape[0]
    fill = np.zeros(channels, dtype=np.float32) if background is None else np.asarray(background, np.float32)
    full = np.empty((channels, *prepared.oriented_shape), dtype=np.float32)
    full[:] = fill[:, None, None, None]
    sl = tuple(slice(a, b) for a, b in prepared.box)
    full[(slice(None), *sl)] = probs.numpy()
    return preprocess.unreorient(full, prepared.ornt)


def old_check_labels(labels: np.ndarray, *, name: str = "label map") -> None:
    a = np.asarray(labels)
    if a.dtype == bool:
        return
    bad = ~np.isin(a, VALID_LABELS)
    n_bad = int(np.count_nonzero(bad))
    if n_bad == 0:
        return
    values = np.unique(a[bad])
    listed = ", ".join(f"{v:g}" for v in values[:10].tolist())
    more = f" and {values.size - 10} more" if values.size > 10 else ""
    raise ValueError(
        f"{name}: expected only BraTS label values {{0, 1, 2, 4}}, "
        f"found unexpected value(s) {listed}{more} in {n_bad} voxel(s)"
    )


def old_sequence_warning(study: Study, modality: str, mask: np.ndarray) -> list[str]:
    """What the earlier ``_sequence_warnings`` decided, from the public functions it used."""
    image = study.images[modality]
    inside = image[mask]
    if inside.size and np.all(inside == inside[0]):
        return [f"one value {inside[0]:g}"]
    uncovered = quality.uncovered_fraction(image, mask)
    if uncovered <= quality.MAX_UNCOVERED_FRACTION:
        return []
    blank = quality.blank_slices(image, mask)
    return [f"{uncovered:.0%} ({quality.describe_blank_slices(blank, mask, study.affine)})"]


def old_volume_range(probs, card, *, like, brain, postprocess_settings=None, thresholds=(0.7, 0.3)):
    """The earlier ``volume_range``: decoded on the whole grid; also returns the label maps."""
    decoded = []
    for t in thresholds:
        labels = regions_to_labels(probs, order=card.output["regions"], threshold=float(t))
        labels[~brain] = 0
        if postprocess_settings:
            labels = apply_postprocess(labels, voxel_volume_mm3=like.voxel_volume_mm3, **postprocess_settings)
        decoded.append(labels)
    out = {"labels": {}, "regions": {}}
    for labels in decoded:
        vols = volumes(LabelMap(labels, like.affine, like.header))
        for section in ("labels", "regions"):
            for name, entry in vols[section].items():
                out[section].setdefault(name, []).append(entry["mL"])
    return out, decoded


# --- brain mask and box


@pytest.mark.parametrize("order", ["F", "C"])
@pytest.mark.parametrize("dtype", [np.float32, np.int16, np.float64])
def test_brain_mask_is_the_earlier_one(order: str, dtype) -> None:
    for seed in range(4):
        study = random_study(seed, ORIENTATIONS[seed * 5], order=order, dtype=dtype)
        found = brain_mask(study)
        assert found.dtype == bool and np.array_equal(found, old_brain_mask(study))
        assert np.array_equal(nonzero_mask(list(study.images.values())), found)


@pytest.mark.parametrize("margin", [0, 2, 8, 40])
def test_brain_box_is_the_earlier_one(margin: int) -> None:
    rng = np.random.default_rng(margin)
    for touch in (False, True):
        for order in ("C", "F"):
            mask = blob_mask(rng, (17, 23, 11), touch_edge=touch)
            mask = np.asfortranarray(mask) if order == "F" else mask
            assert preprocess.brain_box(mask, margin=margin) == old_brain_box(mask, margin=margin)
            tight = bounding_box(mask)
            assert tight == tuple(slice(a, b) for a, b in old_brain_box(mask, margin=0))
    assert bounding_box(np.zeros((4, 5, 6), dtype=bool)) is None


@pytest.mark.parametrize("ornt", ORIENTATIONS)
def test_a_box_moves_with_the_reorientation(ornt: np.ndarray) -> None:
    """Cropping then reorienting holds what reorienting then cropping holds, margins clamped or not."""
    rng = np.random.default_rng(0)
    shape = (13, 9, 11)
    array = rng.normal(size=(2, *shape)).astype(np.float32)
    for margin in (0, 1, 4, 20):
        mask = blob_mask(rng, shape, touch_edge=margin == 1)
        box = preprocess.brain_box(mask, margin=margin)
        moved = preprocess.reorient_box(box, ornt, shape)
        assert moved == old_brain_box(preprocess.reorient(mask, ornt), margin=margin)
        crop = array[(slice(None), *(slice(a, b) for a, b in box))]
        whole = preprocess.reorient(array, ornt)[(slice(None), *(slice(a, b) for a, b in moved))]
        assert same(preprocess.reorient(crop, ornt), np.ascontiguousarray(whole))
    assert preprocess.reorient_shape(shape, ornt) == preprocess.reorient(array, ornt).shape[1:]


# --- prepare and restore


@pytest.mark.parametrize("ornt", ORIENTATIONS[::3])
@pytest.mark.parametrize("order", ["F", "C"])
def test_prepare_and_restore_are_the_earlier_ones(ornt: np.ndarray, order: str) -> None:
    for seed, dtype in ((1, np.float32), (2, np.int16), (3, np.float64)):
        study = random_study(seed, ornt, order=order, dtype=dtype)
        for c in (card(), card(spacing=[1.0, 1.0, 1.0], crop_margin=0), card(crop_margin=30)):
            new, old = preprocess.prepare(study, c), old_prepare(study, c)
            assert (new.box, new.oriented_shape, new.cropped_shape) == (
                old.box,
                old.oriented_shape,
                old.cropped_shape,
            )
            assert np.array_equal(new.ornt, old.ornt)
            assert same(new.tensor.numpy(), old.tensor.numpy()) and new.tensor.is_contiguous()
            probs = torch.rand((3, *new.tensor.shape[1:]), generator=torch.Generator().manual_seed(seed))
            for background in (None, np.array([1.0, 0.0, -0.0], np.float32)):
                back = preprocess.restore(probs, new, background=background)
                assert same(back, old_restore(probs, old, background=background)) and back.flags.c_contiguous


# --- label checks


def outcome(check, array: np.ndarray) -> str:
    try:
        check(array, name="x")
    except ValueError as exc:
        return str(exc)
    return "ok"


@pytest.mark.parametrize("dtype", [np.uint8, np.int8, np.uint16, np.int16, np.int32, np.int64, np.uint64])
def test_check_labels_accepts_and_refuses_what_it_did(dtype) -> None:
    rng = np.random.default_rng(0)
    pools = [(0, 1, 2, 4), (0, 1, 2), (0,), (0, 1, 2, 3, 4), (0, 4, 5), (1, 2, 4, 9, 200), (0, 2, 4, 3)]
    if np.issubdtype(dtype, np.signedinteger):
        pools += [(0, 1, -1), (-3, 0, 4), (4, 2, -128)]
    for pool in pools:
        a = rng.choice(np.array(pool), size=(6, 5, 4)).astype(dtype)
        assert outcome(check_labels, a) == outcome(old_check_labels, a)
    many = np.arange(0, 40, dtype=dtype)
    assert outcome(check_labels, many) == outcome(old_check_labels, many) != "ok"
    for empty in (np.zeros((0,), dtype), np.zeros((3, 0, 2), dtype)):
        assert outcome(check_labels, empty) == "ok"


def test_check_labels_on_floats_and_scalars_is_unchanged() -> None:
    for a in (
        np.array([0.0, 1.0, 4.0]),
        np.array([0.0, 1.5]),
        np.array([np.nan, 2.0]),
        np.array(3),
        np.array(4),
    ):
        assert outcome(check_labels, a) == outcome(old_check_labels, a)


# --- quality checks


@pytest.mark.parametrize("order", ["F", "C"])
def test_quality_checks_decide_as_before(order: str) -> None:
    """Blank slices, uncovered fraction and one-valued sequences, found within the brain's box."""
    for seed in range(6):
        study = random_study(seed, ORIENTATIONS[seed * 7], order=order)
        mask = old_brain_mask(study)
        x, y, z = (np.flatnonzero(mask.any(axis=a)) for a in ((1, 2), (0, 2), (0, 1)))
        flair = study.images["FLAIR"]
        flair[x[0] : x[len(x) // 2]] = 0  # FLAIR covers half of the brain
        t2 = study.images["T2"]
        t2[mask] = np.float32(7.5) if seed % 2 else 0.0  # one value over the brain (or none)
        if seed in (3, 5):  # one value but in one voxel: the last one, or one in the middle
            t2[tuple(np.argwhere(mask)[-1 if seed == 3 else int(mask.sum()) // 2])] = 1.0
        if seed == 4:
            study.images["T1"][mask & (np.indices(mask.shape)[2] == z[0])] = np.nan
        mask = old_brain_mask(study)
        expected = [w for m in MODALITIES for w in old_sequence_warning(study, m, mask)]
        found = quality.check_study(study)
        assert found == quality.check_study(study, mask=brain_mask(study))
        sequence = [w for w in found if "sequence" in w]
        assert len(sequence) == len(expected)
        for warning, old in zip(sequence, expected, strict=True):
            assert (old.split(" (")[0] if "%" in old else old.removeprefix("one value ")) in warning
            if "%" in old:
                assert old.split("(", 1)[1].rstrip(")") in warning


def test_the_brain_fraction_is_the_mean_of_the_mask() -> None:
    rng = np.random.default_rng(0)
    for n in (1, 7, 1000, 240 * 240 * 155):
        mask = rng.random(n) < rng.random()
        assert int(np.count_nonzero(mask)) / mask.size == float(mask.mean())


# --- decoding in the brain's box


@pytest.mark.parametrize(
    "rules",
    [
        None,
        {"min_component_mm3": 0.0, "min_component_fraction": 0.0, "et_min_mm3": 0.0},
        {"min_component_mm3": 6.0, "min_component_fraction": 0.3, "et_min_mm3": 40.0},
    ],
)
def test_volume_range_decoded_in_the_box_is_the_earlier_one(rules) -> None:
    rng = np.random.default_rng(1)
    like = LabelMap(np.zeros((20, 22, 18), np.uint8), np.diag([1.0, 1.5, 2.0, 1.0]), nib.Nifti1Header())
    for seed in range(4):
        brain = blob_mask(rng, like.shape, touch_edge=seed % 2 == 0)
        brain = np.asfortranarray(brain) if seed >= 2 else brain
        probs = rng.random((3, *like.shape), dtype=np.float32) ** 3
        c = card()
        found = pipeline.volume_range(probs, c, like=like, brain=brain, postprocess_settings=rules)
        expected, _ = old_volume_range(probs, c, like=like, brain=brain, postprocess_settings=rules)
        assert found["labels"] == expected["labels"] and found["regions"] == expected["regions"]
    empty = np.zeros(like.shape, dtype=bool)
    found = pipeline.volume_range(probs, card(), like=like, brain=empty, postprocess_settings=rules)
    assert found["regions"]["WT"] == [0.0, 0.0]
