"""Augmentations of training patches (brats_seg.training.augment)."""

from __future__ import annotations

import pytest
import torch

from brats_seg.cli import main
from brats_seg.training.augment import BrainBiasField, augmentations


@pytest.mark.parametrize("intensity", ["mild", "strong", "strong-bias", "none"])
def test_augmentations_keep_shapes_labels_and_finite_values(intensity: str) -> None:
    tfms = augmentations(intensity=intensity)
    tfms.set_random_state(seed=0)
    image = torch.randn(4, 24, 24, 24)
    label = torch.zeros(3, 24, 24, 24)
    label[:, 8:16, 8:16, 8:16] = 1
    changed = 0
    for _ in range(8):
        out = tfms({"image": image.clone(), "label": label.clone()})
        img = torch.as_tensor(out["image"])
        assert img.shape == image.shape and torch.isfinite(img).all()
        assert torch.as_tensor(out["label"]).shape == label.shape
        changed += int(not torch.allclose(img, image))
    assert changed > 0


def test_strong_intensity_augmentation_changes_channels_independently() -> None:
    tfms = augmentations(flip=False, zoom=False, affine=False, intensity="strong")
    tfms.set_random_state(seed=1)
    image = torch.randn(1, 16, 16, 16).repeat(4, 1, 1, 1)  # four identical channels
    differs = 0
    for _ in range(10):
        img = torch.as_tensor(tfms({"image": image.clone(), "label": torch.zeros(3, 16, 16, 16)})["image"])
        differs += int(not torch.allclose(img[0], img[1]))
    assert differs > 0, "per-channel scaling should make identical channels differ"
    # "mild" scales and shifts every channel together.
    mild = augmentations(flip=False, zoom=False, affine=False, intensity="mild")
    mild.set_random_state(seed=1)
    for _ in range(5):
        img = torch.as_tensor(mild({"image": image.clone(), "label": torch.zeros(3, 16, 16, 16)})["image"])
        assert torch.allclose(img[0], img[3])


def test_bias_field_is_smooth_shared_by_the_channels_and_keeps_the_background() -> None:
    """The coil bias field multiplies every channel by the same smooth field, as if before z-scoring,
    leaves the background at 0, and is reproducible from a seed (MONAI's Compose seeds it)."""
    image = torch.zeros(4, 24, 24, 24)
    image[:, 4:20, 4:20, 4:20] = torch.randn(4, 16, 16, 16)
    image[:, 4:20, 4:20, 4:20][image[:, 4:20, 4:20, 4:20] == 0] = 0.5  # every brain voxel non-zero
    bias = BrainBiasField("image", prob=1.0, sigma=0.3, shift=3.0).set_random_state(seed=0)
    out = bias({"image": image.clone(), "label": torch.ones(3, 24, 24, 24)})
    img = out["image"]
    assert torch.equal(out["label"], torch.ones(3, 24, 24, 24)), "labels must not change"
    brain = image.abs().sum(0) > 0
    assert torch.equal(img[:, ~brain], torch.zeros(4, int((~brain).sum()))), "the background stays 0"
    field = (img[:, brain] + 3.0) / (image[:, brain] + 3.0)
    assert torch.allclose(field, field[0:1].expand_as(field), atol=1e-4), "one field for all four channels"
    assert 0.4 < float(field.min()) < float(field.max()) < 2.5 and float(field.max() - field.min()) > 0.05
    f = bias.field((24, 24, 24))
    steps = max(float(f.diff(dim=d).abs().max()) for d in range(3))
    slowly = steps < float(f.max() - f.min()) / 5
    assert slowly, "the field varies slowly across the patch, not voxel to voxel"
    again = BrainBiasField("image", prob=1.0, sigma=0.3).set_random_state(seed=0)({"image": image.clone()})[
        "image"
    ]
    assert torch.equal(again, img)
    assert torch.equal(BrainBiasField("image", prob=0.0)({"image": image})["image"], image)
    with pytest.raises(ValueError, match="expected 0 <= prob <= 1"):
        BrainBiasField("image", prob=1.5)
    # "strong-bias" is "strong" with the field first among the intensity transforms
    names = [type(t).__name__ for t in augmentations(intensity="strong-bias").transforms]
    strong = [type(t).__name__ for t in augmentations(intensity="strong").transforms]
    assert names == strong[:5] + ["BrainBiasField"] + strong[5:]


def test_unknown_intensity_augmentation_is_refused(capsys) -> None:
    with pytest.raises(
        ValueError, match=r"expected one of \('mild', 'strong', 'strong-bias', 'none'\), found 'wild'"
    ):
        augmentations(intensity="wild")
    with pytest.raises(SystemExit):
        main(["train", "data", "--output", "out", "--intensity-augment", "wild"])
    assert "invalid choice: 'wild'" in capsys.readouterr().err
