"""Correcting labels by hand: strokes of known radius, undo/redo byte for byte, erase, provenance."""

import math
from pathlib import Path

import numpy as np
import pytest

from brats_seg.editing import LabelEditor, brush_mask, correction_record, uncertain_slices


def test_a_disc_covers_pi_r_squared_over_the_voxel_area():
    spacing = (0.9, 1.2, 3.0)
    mask = brush_mask((80, 80, 20), spacing=spacing, axis=2, index=10, points=[(40, 40)], radius_mm=6.0)
    assert mask[:, :, 10].sum() == mask.sum()  # only the slice painted
    expected = math.pi * 6.0**2 / (0.9 * 1.2)
    assert abs(mask.sum() - expected) / expected < 0.05, (mask.sum(), expected)


def test_the_disc_is_spacing_aware_along_each_axis():
    mask = brush_mask(
        (60, 60, 60), spacing=(1.0, 2.0, 1.0), axis=2, index=30, points=[(30, 30)], radius_mm=6.0
    )
    rows, cols = np.nonzero(mask[:, :, 30])
    assert (
        rows.max() - rows.min() == 12 and cols.max() - cols.min() == 6
    )  # 6 mm = 6 voxels of 1 mm, 3 of 2 mm


def test_a_ball_reaches_the_neighbouring_slices():
    mask = brush_mask(
        (40, 40, 40), spacing=(1, 1, 1), axis=0, index=20, points=[(20, 20)], radius_mm=4.0, ball=True
    )
    assert mask[16:25].any(axis=(1, 2)).all() and not mask[15].any() and not mask[25].any()
    assert abs(mask.sum() - 4 / 3 * math.pi * 64) / (4 / 3 * math.pi * 64) < 0.1


def test_a_fast_drag_leaves_no_gap():
    mask = brush_mask(
        (100, 100, 5), spacing=(1, 1, 1), axis=2, index=2, points=[(10, 50), (90, 50)], radius_mm=2.0
    )
    assert mask[10:91, 50, 2].all()


def test_a_tiny_radius_still_paints_the_voxel_under_the_pointer():
    mask = brush_mask((10, 10, 10), spacing=(1, 1, 1), axis=1, index=3, points=[(4.2, 6.7)], radius_mm=0.1)
    assert mask.sum() == 1 and mask[4, 3, 7]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"radius_mm": 0}, "brush radius: expected a positive number of mm, found 0"),
        ({"radius_mm": float("nan")}, "brush radius: expected a positive number of mm"),
        ({"index": 10}, "slice: expected axis 0–2 and an index in 0–9, found axis 2, index 10"),
        ({"axis": 3}, "slice: expected axis 0–2"),
    ],
)
def test_bad_strokes_say_what_was_expected(kwargs, message):
    args = {"spacing": (1, 1, 1), "axis": 2, "index": 5, "points": [(5, 5)], "radius_mm": 2.0} | kwargs
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        brush_mask((10, 10, 10), **args)


def _labels():
    labels = np.zeros((30, 30, 10), dtype=np.uint8)
    labels[5:25, 5:25, :] = 2
    labels[10:20, 10:20, :] = 1
    labels[13:17, 13:17, :] = 4
    return labels


def test_undo_and_redo_restore_the_labels_byte_for_byte():
    editor = LabelEditor(_labels(), spacing=(1, 1, 1))
    start = editor.labels.tobytes()
    first = editor.paint(axis=2, index=4, points=[(2, 2), (27, 27)], radius_mm=2, label=4)
    after_first = editor.labels.tobytes()
    editor.paint(axis=0, index=15, points=[(15, 5)], radius_mm=3, tool="erase")
    after_second = editor.labels.tobytes()
    assert first.size > 0 and after_first != start and after_second != after_first
    editor.undo()
    assert editor.labels.tobytes() == after_first
    editor.undo()
    assert editor.labels.tobytes() == start and not editor.can_undo and editor.undo() is None
    editor.redo()
    editor.redo()
    assert editor.labels.tobytes() == after_second and not editor.can_redo


def test_a_new_stroke_after_undo_drops_the_redo():
    editor = LabelEditor(_labels(), spacing=(1, 1, 1))
    editor.paint(axis=2, index=1, points=[(1, 1)], radius_mm=1, label=1)
    editor.undo()
    editor.paint(axis=2, index=1, points=[(28, 28)], radius_mm=1, label=1)
    assert not editor.can_redo and editor.redo() is None


def test_erasing_one_label_leaves_the_others():
    labels = _labels()
    editor = LabelEditor(labels, spacing=(1, 1, 1))
    editor.paint(axis=2, index=5, points=[(15, 15)], radius_mm=20, tool="erase", only_label=1)
    now = editor.labels[:, :, 5]
    assert not (now == 1).any()
    assert (now == 4).sum() == (labels[:, :, 5] == 4).sum() and (now == 2).sum() == (
        labels[:, :, 5] == 2
    ).sum()
    assert (editor.labels[:, :, 4] == labels[:, :, 4]).all()


def test_reset_is_a_stroke_that_can_be_undone():
    editor = LabelEditor(_labels(), spacing=(1, 1, 1))
    editor.paint(axis=2, index=3, points=[(2, 2)], radius_mm=2, label=2)
    edited = editor.labels.copy()
    editor.reset()
    assert (editor.labels == editor.model_labels).all() and editor.changed_voxels() == 0
    editor.undo()
    assert (editor.labels == edited).all()


def test_the_edits_count_voxels_by_the_label_they_now_hold():
    editor = LabelEditor(_labels(), spacing=(1, 1, 1))
    painted = editor.paint(axis=2, index=0, points=[(1, 1)], radius_mm=1, label=4)  # on background
    erased = editor.paint(axis=2, index=9, points=[(6, 6)], radius_mm=1, tool="erase")  # on oedema
    counts = editor.edits()
    assert counts == {
        "NCR": 0,
        "ED": 0,
        "ET": painted.size,
        "background": erased.size,
        "total": painted.size + erased.size,
    }
    record = correction_record(editor, model_name="m")
    assert record["changed_voxels"] == counts["total"] and record["model"] == "m"
    assert "person" in record["corrected_by"]


def test_painting_a_label_onto_itself_records_nothing():
    editor = LabelEditor(_labels(), spacing=(1, 1, 1))
    stroke = editor.paint(axis=2, index=5, points=[(15, 15)], radius_mm=1, label=4)
    assert stroke.size == 0 and not editor.can_undo


def test_unknown_tools_and_labels_are_refused():
    editor = LabelEditor(_labels(), spacing=(1, 1, 1))
    with pytest.raises(ValueError, match="tool: expected one of brush, erase, found 'fill'"):
        editor.paint(axis=2, index=1, points=[(1, 1)], radius_mm=1, tool="fill")
    with pytest.raises(ValueError, match=r"label: expected one of \[1, 2, 4\] \(NCR, ED, ET\), found 3"):
        editor.paint(axis=2, index=1, points=[(1, 1)], radius_mm=1, label=3)


def test_uncertain_slices_come_most_first():
    uncertain = np.zeros((10, 10, 6), dtype=bool)
    uncertain[:3, :3, 4] = True
    uncertain[:2, :2, 1] = True
    assert uncertain_slices(uncertain, axis=2) == [4, 1]
    assert uncertain_slices(uncertain, axis=2, most=1) == [4]


def test_save_for_training_writes_a_brats_case_that_loads_with_the_edit(tiny_study_dir, tmp_path):
    from brats_seg.editing import save_for_training
    from brats_seg.files import load_study

    study = load_study(tiny_study_dir)
    editor = LabelEditor(np.zeros(study.shape, np.uint8), spacing=study.spacing)
    stroke = editor.paint(axis=2, index=study.shape[2] // 2, points=[(10, 10)], radius_mm=4, label=1)
    case = save_for_training(study, editor.labels, tmp_path / "corrections")
    names = sorted(p.name for p in case.iterdir())
    assert names == [f"{case.name}_{s}.nii.gz" for s in ("flair", "seg", "t1", "t1ce", "t2")]
    back = load_study(case)
    assert np.allclose(back.affine, study.affine) and back.shape == study.shape
    assert (back.truth == editor.labels).all() and (back.truth == 1).sum() == stroke.size
    assert all(np.array_equal(back.images[m], study.images[m]) for m in study.images)


def test_save_for_training_refuses_labels_off_the_grid(tiny_study_dir, tmp_path):
    from brats_seg.editing import save_for_training
    from brats_seg.files import load_study

    study = load_study(tiny_study_dir)
    with pytest.raises(ValueError, match=r"expected labels of the study's shape"):
        save_for_training(study, np.zeros((2, 2, 2), np.uint8), tmp_path)
    with pytest.raises(ValueError, match=r"expected labels 0, 1, 2, 4, found \[0, 3\]"):
        save_for_training(
            study, np.full(study.shape, 3, np.uint8) * (np.arange(study.shape[2]) > 2), tmp_path
        )


def test_the_correction_loop_runs_end_to_end(tiny_data_dir, tiny_model_dir, tmp_path):
    """Review -> correct -> save -> fine-tune from a bundle -> evaluate and compare, as the README says:
    the fold's member fine-tunes on its training cases plus the corrected ones, in a folder of links."""
    import json
    import subprocess
    import sys

    from conftest import TINY_TRAIN_ARGS

    from brats_seg import pipeline
    from brats_seg.cli import main
    from brats_seg.editing import save_for_training
    from brats_seg.files import load_study
    from brats_seg.model import load_model

    model = load_model(tiny_model_dir, device="cpu")
    held_out = json.loads((tiny_model_dir / "splits.json").read_text())["folds"][0]
    corrections, training = tmp_path / "corrections", tmp_path / "training"
    corrected = [p.name for p in sorted(tiny_data_dir.iterdir()) if p.name not in held_out]
    for name in corrected:  # a person corrects the model's labels of two studies and saves them
        study = load_study(tiny_data_dir / name)
        editor = LabelEditor(pipeline.segment(study, model).labels.array, spacing=study.spacing)
        editor.paint(axis=2, index=study.shape[2] // 2, points=[(16, 16)], radius_mm=6, label=2)
        assert editor.changed_voxels() > 0
        save_for_training(study, editor.labels, corrections)
    training.mkdir()
    for case in [*(tiny_data_dir / n for n in held_out), *sorted(corrections.iterdir())]:
        (training / case.name).symlink_to(case.resolve(), target_is_directory=True)
    bundle, tuned = tmp_path / "bundle", tmp_path / "tuned"
    assert main(["bundle", str(tiny_model_dir), "--output", str(bundle)]) == 0
    args = list(TINY_TRAIN_ARGS)
    args[args.index("--epochs") + 1] = "1"
    splits = ["--splits", str(tiny_model_dir / "splits.json"), "--init-from", str(bundle)]
    assert main(["train", str(training), "--output", str(tuned / "fold0"), *args, *splits]) == 0
    assert main(["bundle", str(tuned / "fold0"), "--output", str(tuned / "model")]) == 0
    for model_dir, out in ((bundle, tmp_path / "before"), (tuned / "model", tmp_path / "after")):
        cv = ["--cross-validation", "--output", str(out), "--no-progress"]
        assert main(["evaluate", str(tiny_data_dir), "--model", str(model_dir), *cv]) == 0
        assert len((out / "scores.csv").read_text().strip().splitlines()) == 1 + len(held_out)
    root = Path(__file__).resolve().parents[1]
    compare = [
        sys.executable,
        str(root / "benchmarks" / "compare_scores.py"),
        str(tmp_path / "before"),
        str(tmp_path / "after"),
    ]
    table = subprocess.run(compare, capture_output=True, text=True, check=True).stdout
    assert "Paired change against before" in table and "| after |" in table


def test_a_drag_of_many_strokes_undoes_as_one():
    editor = LabelEditor(_labels(), spacing=(1, 1, 1))
    start_bytes = editor.labels.tobytes()
    start = editor.begin_drag()
    for x in range(2, 28, 3):  # pointer moves, painting over its own earlier discs
        editor.paint(axis=2, index=5, points=[(x, 2), (x + 3, 2)], radius_mm=2, label=4)
    editor.paint(axis=2, index=5, points=[(2, 2)], radius_mm=2, tool="erase")
    joined = editor.end_drag(start)
    after = editor.labels.tobytes()
    assert joined is not None and joined.size == np.count_nonzero(editor.labels != _labels())
    editor.undo()
    assert editor.labels.tobytes() == start_bytes and not editor.can_undo
    editor.redo()
    assert editor.labels.tobytes() == after
    assert editor.end_drag(editor.begin_drag()) is None
