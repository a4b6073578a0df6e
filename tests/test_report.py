"""Tests for brats_seg.report: volumes in mm3 and mL from the voxel spacing."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest

from brats_seg.report import volumes, volumes_table
from brats_seg.types import LabelMap


def _labelmap(array: np.ndarray, spacing=(1.0, 1.0, 1.0)) -> LabelMap:
    header = nib.Nifti1Header()
    header.set_data_shape(array.shape)
    header.set_zooms(spacing)
    return LabelMap(array, np.diag([*spacing, 1.0]), header)


def _entry(voxels: int, mm3: float) -> dict:
    return {"voxels": voxels, "mm3": pytest.approx(mm3), "mL": pytest.approx(mm3 / 1000)}


def test_et_cube_with_anisotropic_voxels():
    a = np.zeros((20, 20, 20), dtype=np.uint8)
    a[5:15, 5:15, 5:15] = 4  # 1000 voxels of 1 x 1 x 2 mm = 2000 mm3 = 2.0 mL
    v = volumes(_labelmap(a, (1.0, 1.0, 2.0)))
    assert list(v) == ["labels", "regions"]
    assert list(v["labels"]) == ["NCR", "ED", "ET"]
    assert list(v["regions"]) == ["ET", "TC", "WT"]
    assert v["labels"]["ET"] == _entry(1000, 2000.0)
    for region in ("ET", "TC", "WT"):
        assert v["regions"][region] == _entry(1000, 2000.0)
        assert v["regions"][region]["mL"] == pytest.approx(2.0)
    assert v["labels"]["NCR"] == _entry(0, 0.0)
    assert v["labels"]["ED"] == _entry(0, 0.0)


def test_shell_of_edema_and_necrotic_core():
    a = np.zeros((20, 20, 20), dtype=np.uint8)
    a[4:16, 4:16, 4:16] = 2  # 12^3 = 1728 voxels of whole tumour
    a[5:15, 5:15, 5:15] = 4  # 10^3 = 1000 voxels inside
    a[8:12, 8:12, 8:12] = 1  # 4^3 = 64 of them necrotic
    v = volumes(_labelmap(a, (1.0, 1.0, 2.0)))
    assert v["labels"]["ED"] == _entry(728, 1456.0)
    assert v["labels"]["NCR"] == _entry(64, 128.0)
    assert v["labels"]["ET"] == _entry(936, 1872.0)
    assert v["regions"]["ET"] == _entry(936, 1872.0)
    assert v["regions"]["TC"] == _entry(1000, 2000.0)
    assert v["regions"]["WT"] == _entry(1728, 3456.0)
    assert v["regions"]["WT"]["mL"] == pytest.approx(3.456)


def test_volumes_follow_spacing_not_voxel_counts():
    a = np.zeros((12, 12, 12), dtype=np.uint8)
    a[1:11, 1:11, 1:11] = 4
    assert volumes(_labelmap(a))["regions"]["WT"]["mL"] == pytest.approx(1.0)
    assert volumes(_labelmap(a, (0.5, 0.5, 0.5)))["regions"]["WT"]["mL"] == pytest.approx(0.125)


def test_volumes_of_empty_map_are_zero():
    v = volumes(_labelmap(np.zeros((4, 4, 4), dtype=np.uint8)))
    assert all(e["voxels"] == 0 and e["mL"] == 0.0 for section in v.values() for e in section.values())


def test_volumes_reject_invalid_labels():
    a = np.zeros((4, 4, 4), dtype=np.uint8)
    a[0, 0, :2] = 3
    with pytest.raises(ValueError, match=r"unexpected value\(s\) 3 in 2 voxel"):
        volumes(_labelmap(a))


def test_volumes_table_rows():
    a = np.zeros((20, 20, 20), dtype=np.uint8)
    a[4:16, 4:16, 4:16] = 2
    a[5:15, 5:15, 5:15] = 4
    a[8:12, 8:12, 8:12] = 1
    rows = volumes_table(volumes(_labelmap(a, (1.0, 1.0, 2.0))))
    assert [r[0] for r in rows] == ["NCR", "ED", "ET", "TC", "WT"]
    assert [r[1] for r in rows] == [
        "necrotic / non-enhancing core",
        "peritumoral edema",
        "enhancing tumour",
        "tumour core",
        "whole tumour",
    ]
    assert [r[2] for r in rows] == pytest.approx([0.128, 1.456, 1.872, 2.0, 3.456])
    assert all(isinstance(r[2], float) for r in rows)
