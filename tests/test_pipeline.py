"""Tests for ``brats_seg.pipeline.segment``: one study through the model, in any storage orientation."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from helpers import brats_affine, tiny_volumes, write_nifti
from nibabel.orientations import apply_orientation, inv_ornt_aff
from torch import nn

from brats_seg import files, pipeline, preprocess
from brats_seg.card import ModelCard
from brats_seg.model import Model, load_model
from brats_seg.types import MODALITIES, Study

SHAPE = (32, 32, 24)
SPACING = (1.0, 1.5, 2.0)  # anisotropic, so a permutation that forgets the spacing shows

#: How the same anatomy is stored: nibabel orientation transforms from the BraTS (LPS) layout.
STORAGE = {
    "LPS (as BraTS)": [[0, 1], [1, 1], [2, 1]],
    "RAS (x and y flipped)": [[0, -1], [1, -1], [2, 1]],
    "LPI (z flipped)": [[0, 1], [1, 1], [2, -1]],
    "PSL (permuted)": [[2, 1], [0, 1], [1, 1]],
    "IRA (permuted and flipped)": [[1, -1], [2, -1], [0, -1]],
    "SAL (permuted and flipped)": [[2, 1], [1, -1], [0, 1]],
}


def write_stored_study(folder: Path, ornt: np.ndarray) -> tuple[dict[str, Path], np.ndarray]:
    """Write the tiny anatomy stored as ``apply_orientation(data, ornt)`` with the matching affine."""
    images, labels = tiny_volumes(SHAPE, seed=6)
    affine = brats_affine(SHAPE, SPACING) @ inv_ornt_aff(ornt, SHAPE)
    folder.mkdir(parents=True)
    paths = {
        m: write_nifti(folder / f"Stored_{m.lower()}.nii.gz", apply_orientation(images[m], ornt), affine)
        for m in MODALITIES
    }
    return paths, labels


@pytest.fixture(scope="module")
def tiny_model(tiny_model_dir: Path) -> Model:
    return load_model(tiny_model_dir, device="cpu")


@pytest.fixture(scope="module")
def reference(tiny_model: Model, tmp_path_factory: pytest.TempPathFactory) -> np.ndarray:
    """Labels of the anatomy stored in the BraTS orientation."""
    folder = tmp_path_factory.mktemp("reference") / "Stored"
    write_stored_study(folder, np.array(STORAGE["LPS (as BraTS)"], dtype=float))
    labels = pipeline.segment(files.load_study(folder), tiny_model).labels.array
    assert len(np.unique(labels)) >= 2, (
        "the tiny model should label some voxels, else the comparison is empty"
    )
    return labels


@pytest.mark.parametrize("storage", list(STORAGE))
def test_same_anatomy_in_any_orientation_gets_the_same_labels(
    storage: str, tiny_model: Model, reference: np.ndarray, tmp_path: Path
) -> None:
    ornt = np.array(STORAGE[storage], dtype=float)
    write_stored_study(tmp_path / "Stored", ornt)
    study = files.load_study(tmp_path / "Stored")
    seg = pipeline.segment(study, tiny_model)
    # the output lies on the input's grid, with its geometry ...
    assert seg.labels.shape == study.shape
    np.testing.assert_array_equal(seg.labels.affine, study.affine)
    assert seg.labels.header.binaryblock == study.header.binaryblock
    assert seg.labels.spacing == study.spacing
    assert seg.labels.array.dtype == np.uint8
    # ... and labels the same anatomy the same way
    np.testing.assert_array_equal(seg.labels.array, apply_orientation(reference, ornt))


def test_label_map_is_not_tied_to_the_study(tiny_model: Model, tiny_study_dir: Path) -> None:
    study = files.load_study(tiny_study_dir)
    seg = pipeline.segment(study, tiny_model)
    seg.labels.affine[0, 3] += 100
    seg.labels.header.set_sform(np.eye(4))
    assert study.affine[0, 3] != seg.labels.affine[0, 3]
    assert not np.allclose(study.header.get_sform(), np.eye(4))


def test_settings_come_from_the_card_unless_given(tiny_model: Model, tiny_study_dir: Path) -> None:
    study = files.load_study(tiny_study_dir)
    card = tiny_model.card
    seen: list[float] = []
    seg = pipeline.segment(study, tiny_model, progress=seen.append, device="cpu")
    assert seg.settings["roi_size"] == card.roi_size and seg.settings["overlap"] == card.overlap
    assert seg.settings["sw_batch_size"] == card.sw_batch_size and seg.settings["mode"] == card.mode
    assert seg.settings["tta_flips"] == card.tta_flips and seg.settings["ensemble"] == 1
    assert seg.settings["device"] == "cpu"
    assert set(seg.timings) >= {"prepare", "predict", "postprocess", "total"}
    assert seen and seen[-1] == 1.0 and seen == sorted(seen)
    seg2 = pipeline.segment(
        study, tiny_model, roi_size=[8, 8, 8], overlap=0.25, sw_batch_size=3, tta_flips=True, mode="constant"
    )
    assert seg2.settings["roi_size"] == [8, 8, 8] and seg2.settings["overlap"] == 0.25
    assert (
        seg2.settings["sw_batch_size"] == 3
        and seg2.settings["tta_flips"] is True
        and seg2.settings["mode"] == "constant"
    )
    assert seg2.labels.shape == study.shape


class ConstantNet(nn.Module):
    """Outputs the same logits everywhere (``value`` on channel ``hot``, ``-value`` elsewhere)."""

    def __init__(self, channels: int, hot: int | None, value: float = 6.0) -> None:
        super().__init__()
        self.channels, self.hot, self.value = channels, hot, value

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.full((x.shape[0], self.channels, *x.shape[2:]), -self.value)
        if self.hot is None:
            out[:] = self.value
        else:
            out[:, self.hot] = self.value
        return out


def padded_study() -> tuple[Study, np.ndarray]:
    """A small brain inside a larger zero volume; returns the study and the brain voxels in its box."""
    images, _ = tiny_volumes((16, 16, 12), seed=8)
    shape = (30, 28, 20)
    sl = (slice(7, 23), slice(4, 20), slice(5, 17))
    full = {}
    for m in MODALITIES:
        full[m] = np.zeros(shape, dtype=np.float32)
        full[m][sl] = images[m]
    brain = np.any([full[m] != 0 for m in MODALITIES], axis=0)
    box = np.zeros(shape, dtype=bool)
    idx = np.argwhere(brain)
    box[tuple(slice(lo, hi + 1) for lo, hi in zip(idx.min(0), idx.max(0), strict=True))] = True
    affine = brats_affine(shape)
    header = nib.Nifti1Image(full["T1"], affine).header
    # the pipeline also clears voxels where every sequence is zero
    return Study(name="Padded", images=full, affine=affine, header=header), box & brain


def dummy_model(output: dict, net: nn.Module, tmp_path: Path) -> Model:
    card = ModelCard(
        name="dummy",
        files=[],
        sha256={},
        channels=list(MODALITIES),
        output=output,
        spacing=[1.0, 1.0, 1.0],
        roi_size=[8, 8, 8],
        crop_margin=0,
        sw_batch_size=4,
    )
    return Model(card=card, networks=[net], directory=tmp_path)


def test_classes_softmax_fills_outside_the_crop_with_background(tmp_path: Path) -> None:
    study, box = padded_study()
    assert not box.all()
    output = {"type": "classes_softmax", "classes": [0, 2, 1, 4]}
    model = dummy_model(output, ConstantNet(4, hot=2), tmp_path)  # channel 2 is label 1 (NCR)
    labels = pipeline.segment(study, model, device="cpu").labels.array
    assert np.all(labels[box] == 1) and np.all(labels[~box] == 0)


def test_regions_sigmoid_is_background_outside_the_crop(tmp_path: Path) -> None:
    study, box = padded_study()
    output = {"type": "regions_sigmoid", "regions": ["TC", "WT", "ET"], "threshold": 0.5}
    model = dummy_model(output, ConstantNet(3, hot=None), tmp_path)  # every region on
    labels = pipeline.segment(study, model, device="cpu").labels.array
    assert np.all(labels[box] == 4) and np.all(labels[~box] == 0)


def test_prepared_input_is_what_the_network_sees(tmp_path: Path) -> None:
    study, _ = padded_study()
    seen: list[torch.Tensor] = []

    class Recorder(ConstantNet):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            seen.append(x.clone())
            return super().forward(x)

    output = {"type": "regions_sigmoid", "regions": ["TC", "WT", "ET"]}
    model = dummy_model(output, Recorder(3, hot=0), tmp_path)
    model.card.roi_size = [64, 64, 64]  # one window holding the whole (padded) input
    pipeline.segment(study, model, device="cpu")
    prepared = preprocess.prepare(study, model.card)
    window = seen[0][0]
    # MONAI pads an input smaller than the window evenly on both sides
    x, y, z = ((64 - n) // 2 for n in prepared.tensor.shape[1:])
    inner = window[
        :,
        x : x + prepared.tensor.shape[1],
        y : y + prepared.tensor.shape[2],
        z : z + prepared.tensor.shape[3],
    ]
    np.testing.assert_allclose(inner.numpy(), prepared.tensor.numpy(), atol=1e-6)
    assert float(window.abs().sum()) == pytest.approx(
        float(prepared.tensor.abs().sum()), rel=1e-5
    )  # zeros around


def test_no_tumour_outside_the_brain(tiny_model_dir, tiny_study_dir) -> None:
    """Voxels where all four sequences are zero are background, whatever the network says."""
    from brats_seg import files
    from brats_seg.model import load_model
    from brats_seg.pipeline import segment
    from brats_seg.types import brain_mask

    study = files.load_study(tiny_study_dir)
    seg = segment(study, load_model(tiny_model_dir, device="cpu"))
    outside = ~brain_mask(study)
    assert outside.any()
    assert not seg.labels.array[outside].any()


def test_card_postprocess_rules_apply_and_can_be_turned_off(
    tiny_model: Model, reference: np.ndarray, tmp_path: Path
) -> None:
    from dataclasses import replace

    from scipy import ndimage

    folder = tmp_path / "Stored"
    write_stored_study(folder, np.array(STORAGE["LPS (as BraTS)"], dtype=float))
    study = files.load_study(folder)
    strict = replace(tiny_model.card, postprocess={"min_component_fraction": 1.0, "et_min_mm3": 1e9})
    model = Model(card=strict, networks=tiny_model.networks, directory=tiny_model.directory)

    seg = pipeline.segment(study, model)
    labels = seg.labels.array
    assert seg.settings["postprocess"] == {
        "min_component_mm3": 0.0,
        "min_component_fraction": 1.0,
        "et_min_mm3": 1e9,
    }
    assert ndimage.label(labels > 0, structure=np.ones((3, 3, 3)))[1] == 1, (
        "only the largest component is kept"
    )
    assert not np.any(labels == 4), "ET below et_min_mm3 becomes NCR"
    assert np.all(reference[labels > 0] > 0), "post-processing only removes tumour, never adds it"
    assert np.any(reference == 4), "the reference should hold ET, else the ET rule is untested"

    raw = pipeline.segment(study, model, postprocess=False)
    np.testing.assert_array_equal(raw.labels.array, reference)
    assert "postprocess" not in raw.settings


# --- volume range ------------------------------------------------------------------------------------


def _sigmoid_card(**output) -> ModelCard:
    return ModelCard(
        name="dummy",
        files=[],
        sha256={},
        channels=list(MODALITIES),
        output={"type": "regions_sigmoid", "regions": ["TC", "WT", "ET"], **output},
        spacing=[1.0, 1.0, 1.0],
        roi_size=[8, 8, 8],
    )


def _graded_whole_tumour() -> np.ndarray:
    """Region probabilities (TC, WT, ET) on 12 x 12 x 12 voxels: WT cubes of 8 voxels at 0.9, 0.5, 0.35."""
    probs = np.zeros((3, 12, 12, 12), dtype=np.float32)
    probs[1, 1:3, 1:3, 1:3] = 0.9
    probs[1, 5:7, 5:7, 5:7] = 0.5
    probs[1, 9:11, 9:11, 9:11] = 0.35
    return probs


def test_volume_range_decodes_the_labels_at_each_threshold() -> None:
    from brats_seg.types import LabelMap

    like = LabelMap(np.zeros((12, 12, 12), np.uint8), np.diag([1.0, 1.0, 2.0, 1.0]), nib.Nifti1Header())
    brain = np.ones((12, 12, 12), bool)
    ranges = pipeline.volume_range(
        _graded_whole_tumour(), _sigmoid_card(threshold=0.5), like=like, brain=brain
    )
    assert ranges["thresholds"] == [0.7, 0.3] and ranges["card_threshold"] == 0.5
    assert ranges["regions"]["WT"] == pytest.approx([0.016, 0.048])  # 8 or 24 voxels of 2 mm3
    assert ranges["labels"]["ED"] == pytest.approx([0.016, 0.048]) and ranges["regions"]["TC"] == [0.0, 0.0]
    # nothing outside the brain, at any threshold
    brain[9:, 9:, 9:] = False
    assert pipeline.volume_range(_graded_whole_tumour(), _sigmoid_card(), like=like, brain=brain)["regions"][
        "WT"
    ] == pytest.approx([0.016, 0.032])
    # the card's post-processing applies as to the labels: parts under 20 mm3 go, the largest stays
    with_rules = pipeline.volume_range(
        _graded_whole_tumour(),
        _sigmoid_card(),
        like=like,
        brain=np.ones((12, 12, 12), bool),
        postprocess_settings={"min_component_mm3": 20.0},
        thresholds=(0.8, 0.4, 0.2),
    )
    assert with_rules["regions"]["WT"] == pytest.approx([0.016, 0.016, 0.016])


@pytest.mark.parametrize(
    ("card", "thresholds", "match"),
    [
        (_sigmoid_card(), (0.0, 0.5), r"expected thresholds in \(0, 1\), found \[0.0, 0.5\]"),
        (_sigmoid_card(), (), r"expected thresholds in \(0, 1\), found \[\]"),
        (
            ModelCard(
                name="d",
                files=[],
                sha256={},
                channels=list(MODALITIES),
                output={"type": "classes_softmax", "classes": [0, 1, 2, 4]},
                spacing=[1.0, 1.0, 1.0],
                roi_size=[8, 8, 8],
            ),
            (0.7, 0.3),
            "expected a card with region sigmoids, found output type 'classes_softmax'",
        ),
    ],
)
def test_volume_range_refuses_what_it_cannot_measure(card: ModelCard, thresholds, match: str) -> None:
    from brats_seg.types import LabelMap

    like = LabelMap(np.zeros((12, 12, 12), np.uint8), np.eye(4), nib.Nifti1Header())
    with pytest.raises(ValueError, match=match):
        pipeline.volume_range(
            _graded_whole_tumour(), card, like=like, brain=np.ones((12, 12, 12), bool), thresholds=thresholds
        )


def test_segment_brackets_the_region_volumes_and_reports_the_range(
    tiny_model: Model, tiny_study_dir: Path
) -> None:
    from brats_seg import report

    study = files.load_study(tiny_study_dir)
    seg = pipeline.segment(study, tiny_model)
    vols = report.volumes(seg.labels)
    ranges = seg.volume_range
    assert ranges is not None and ranges["thresholds"] == list(pipeline.VOLUME_RANGE_THRESHOLDS)
    for region in ("ET", "TC", "WT"):
        strict, loose = ranges["regions"][region]
        assert (
            strict <= vols["regions"][region]["mL"] + 1e-9 <= loose + 2e-9
        )  # a region only grows as the cut falls
    assert ranges["regions"]["WT"][0] < ranges["regions"]["WT"][1], (
        "the tiny model should be uncertain somewhere"
    )
    rep = seg.study_report(study, tiny_model)
    assert (
        rep["volume_range"]["regions"] == ranges["regions"]
        and "not a calibrated interval" in rep["volume_range"]["meaning"]
    )
    # where the label depends on the threshold: at least the voxels the whole tumour gains from 0.7 to 0.3
    uncertain = seg.uncertain
    assert uncertain.dtype == bool and uncertain.shape == study.shape
    voxel_ml = seg.labels.voxel_volume_mm3 / 1000
    assert uncertain.sum() * voxel_ml + 1e-9 >= ranges["regions"]["WT"][1] - ranges["regions"]["WT"][0] > 0
    plain = pipeline.segment(study, tiny_model, volume_thresholds=None)
    assert plain.volume_range is None and plain.uncertain is None
    # thresholds that do not bracket the card's (0.5) would not be a range around its labels: none is made
    assert pipeline.segment(study, tiny_model, volume_thresholds=(0.9, 0.6)).volume_range is None
