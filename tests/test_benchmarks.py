"""The benchmark scripts that decide what goes into the model card, on tiny generated cases."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from types import ModuleType

import nibabel as nib
import numpy as np
import pytest
from helpers import write_tiny_study

ROOT = Path(__file__).resolve().parents[1]


def _load_script(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def island_predictions(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    """Four cases in two folds whose 'predictions' are the truth plus a small false island of oedema."""
    root = tmp_path_factory.mktemp("tune")
    data, preds = root / "data", root / "preds"
    preds.mkdir()
    names = [f"Tiny_00{i}" for i in range(1, 5)]
    for i, name in enumerate(names):
        paths = write_tiny_study(data / name, name, seed=i)
        img = nib.load(paths["SEG"])
        labels = np.asarray(img.dataobj).astype(np.uint8)
        labels[:3, :3, :3] = 2
        nib.save(nib.Nifti1Image(labels, img.affine), preds / f"{name}_seg.nii.gz")
    splits = root / "splits.json"
    splits.write_text(json.dumps({"k": 2, "folds": [names[:2], names[2:]]}))
    return data, preds, splits


def test_tune_postprocess_nested_choice_removes_false_islands(island_predictions, capsys) -> None:
    data, preds, splits = island_predictions
    _load_script("tune_postprocess").main([str(preds), "--data", str(data), "--splits", str(splits)])
    out = capsys.readouterr().out
    assert out.startswith("4 cases: Tiny_001, Tiny_002, Tiny_003, Tiny_004")
    nested = out.split("nested choice (each fold")[1]
    raw = [line for line in nested.splitlines() if line.startswith("no post-processing")][0]
    chosen = [line for line in nested.splitlines() if line.startswith("nested choice")][0]
    assert float(raw.split("|")[1].split()[0]) < 1.0, "the island must cost WT Dice before post-processing"
    assert chosen.split("|")[1].split() == ["1.000", "1.000", "1.000"]
    assert "verdict: the nested choice ranks above no post-processing: use the overall pick" in nested
    # the gentlest setting that removes the island wins on the other fold (ties go to grid order)
    assert "fold 0: min_component_mm3=0 min_component_fraction=0.1 et_min_mm3=0" in nested
    assert "fold 1: min_component_mm3=0 min_component_fraction=0.1 et_min_mm3=0" in nested


def test_post_processing_is_used_only_if_its_nested_choice_ranks_above_none() -> None:
    tune = _load_script("tune_postprocess")

    def summary(dice: float, hd95: float) -> dict[str, dict[str, float]]:
        return {
            f"{m}_{r}": {"mean": v} for r in ("WT", "TC", "ET") for m, v in (("dice", dice), ("hd95", hd95))
        }

    assert tune.nested_verdict(summary(0.80, 10.0), summary(0.80, 12.0)) is None  # fewer far-off islands
    # the stage-3 model's figures: the nested choice lowers WT Dice and raises WT HD95
    nested = {
        **summary(0.0, 0.0),
        "dice_WT": {"mean": 0.836},
        "dice_TC": {"mean": 0.770},
        "dice_ET": {"mean": 0.713},
        "hd95_WT": {"mean": 11.31},
        "hd95_TC": {"mean": 12.08},
        "hd95_ET": {"mean": 10.14},
    }
    none = {**nested, "dice_WT": {"mean": 0.839}, "hd95_WT": {"mean": 10.01}, "hd95_TC": {"mean": 12.46}}
    assert tune.nested_verdict(nested, none) == (
        "the nested choice ranks 0.6612, not above no post-processing (0.6653): "
        "on cases it was not tuned on, post-processing does not help; bundle without it"
    )
    assert tune.nested_verdict(none, none) is not None  # a tie is not a gain


def test_tune_postprocess_records_nested_scores_only_in_a_card_with_the_overall_pick(
    island_predictions, tiny_model_dir: Path, tmp_path: Path, capsys
) -> None:
    from brats_seg.card import ModelCard, scores_line

    data, preds, splits = island_predictions
    card_path = tmp_path / "model.json"
    card = ModelCard.load(tiny_model_dir / "model.json")
    card.save(card_path)  # no post-processing: not what tuning picks on these cases
    tune = _load_script("tune_postprocess")
    args = [str(preds), "--data", str(data), "--splits", str(splits), "--record", str(card_path)]
    made = {"model": card.name, "cross_validation": True, "postprocessing": True, "tta": False}
    (preds / "summary.json").write_text(json.dumps(made))
    with pytest.raises(
        SystemExit,
        match=r"--record needs predictions made by .* --no-postprocess .*"
        r"they were made with .*'postprocessing': True",
    ):
        tune.main(args)
    (preds / "summary.json").write_text(json.dumps({**made, "postprocessing": False, "tta": None}))
    with pytest.raises(SystemExit, match=r"tta true or false\); they were made with .*'tta': None"):
        tune.main(args)
    (preds / "summary.json").write_text(json.dumps({**made, "postprocessing": False}))
    with pytest.raises(
        SystemExit,
        match=r"its postprocess \{\} is not the setting picked on all 4 cases "
        r"\(\{'min_component_mm3': 0.0, 'min_component_fraction': 0.1, 'et_min_mm3': 0.0\}; on a tie",
    ):
        tune.main(args)
    assert "scores" not in ModelCard.load(card_path).extra or not ModelCard.load(card_path).extra["scores"]
    card.postprocess = {"min_component_fraction": 0.1}
    card.save(card_path)
    capsys.readouterr()
    tune.main(args)
    assert f"recorded as scores.cross_validation_nested in {card_path}" in capsys.readouterr().out
    record = ModelCard.load(card_path).extra["scores"]["cross_validation_nested"]
    assert record["n"] == 4 and record["metrics"]["dice_WT"]["mean"] == 1.0
    assert (
        record["command"].startswith("python benchmarks/tune_postprocess.py ")
        and "--record" in record["command"]
    )
    assert scores_line(ModelCard.load(card_path)).endswith("(nested cross-validation)")
    with pytest.raises(SystemExit, match="--record: expected --splits as well"):
        tune.main([str(preds), "--data", str(data), "--record", str(card_path)])

    # predictions made with test-time flips are recorded beside, under their own key
    (preds / "summary.json").write_text(json.dumps({**made, "postprocessing": False, "tta": True}))
    capsys.readouterr()
    tune.main(args)
    assert f"recorded as scores.cross_validation_nested_tta in {card_path}" in capsys.readouterr().out
    scores = ModelCard.load(card_path).extra["scores"]
    assert sorted(scores) == ["cross_validation_nested", "cross_validation_nested_tta"]


def test_tune_postprocess_refuses_splits_that_miss_a_case(island_predictions, tmp_path: Path) -> None:
    data, preds, splits = island_predictions
    partial = tmp_path / "splits.json"
    folds = json.loads(splits.read_text())["folds"]
    partial.write_text(json.dumps({"k": 2, "folds": [folds[0], folds[1][:1]]}))
    with pytest.raises(SystemExit, match="no fold holds Tiny_004"):
        _load_script("tune_postprocess").main([str(preds), "--data", str(data), "--splits", str(partial)])


def _row(wt: float) -> dict[str, float]:
    return {"dice_WT": wt, "dice_TC": wt, "dice_ET": wt, "hd95_WT": 0.0, "hd95_TC": 0.0, "hd95_ET": 0.0}


def test_nested_choice_gives_each_fold_the_pick_of_the_other_folds() -> None:
    """Fold A's cases favour setting X, fold B's favour Y: A must get Y and B must get X (a choice made on
    all cases, or on each fold's own cases, would not)."""
    tune = _load_script("tune_postprocess")
    x, y = (0.0, 0.0, 0.0), (1000.0, 0.0, 0.0)
    table = {
        x: {"a1": _row(0.9), "a2": _row(0.9), "b1": _row(0.5)},
        y: {"a1": _row(0.6), "a2": _row(0.6), "b1": _row(0.8)},
    }
    rows, chosen = tune.nested_choice(table, [["a1", "a2"], ["b1"]])
    assert chosen == [y, x]
    assert [r["dice_WT"] for r in rows] == [0.6, 0.6, 0.5]
    assert tune.best_setting(table, ["a1", "a2", "b1"]) == x
    with pytest.raises(ValueError, match="at least 2 folds, found 1"):
        tune.nested_choice(table, [["a1", "a2", "b1"], []])


def test_tune_postprocess_needs_two_folds_and_some_predictions(island_predictions, tmp_path: Path) -> None:
    data, preds, splits = island_predictions
    one_fold = tmp_path / "one"
    one_fold.mkdir()
    for name in json.loads(splits.read_text())["folds"][1]:
        (one_fold / f"{name}_seg.nii.gz").write_bytes((preds / f"{name}_seg.nii.gz").read_bytes())
    with pytest.raises(SystemExit, match=r"cover 1 fold\(s\); a nested choice needs at least 2"):
        _load_script("tune_postprocess").main([str(one_fold), "--data", str(data), "--splits", str(splits)])
    with pytest.raises(SystemExit, match="found none"):
        _load_script("tune_postprocess").main([str(tmp_path / "nothing"), "--data", str(data)])


@pytest.fixture(scope="module")
def tiny_fold_bundle(
    tiny_data_dir: Path, tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    """Three tiny fold runs on the tiny model's splits, bundled: every tiny case is held out by one member."""
    from conftest import TINY_TRAIN_ARGS

    from brats_seg.cli import main

    root = tmp_path_factory.mktemp("folds")
    runs = [tiny_model_dir]
    for fold in (1, 2):
        out = root / f"fold{fold}"
        args = ["train", str(tiny_data_dir), "--output", str(out), *TINY_TRAIN_ARGS]
        args[args.index("--fold") + 1] = str(fold)
        assert main([*args, "--splits", str(tiny_model_dir / "splits.json")]) == 0
        runs.append(out)
    assert (
        main(["bundle", *map(str, runs), "--output", str(root / "model"), "--min-component-fraction", "0.5"])
        == 0
    )
    return root / "model"


def test_cached_decoding_reproduces_evaluate_and_nests_the_threshold_choice(
    tiny_data_dir: Path, tiny_model_dir: Path, tiny_fold_bundle: Path, tmp_path: Path, capsys
) -> None:
    """The offline decoding (cached probabilities, thresholds, flips, the card's post-processing) must score
    a case as `brats-seg evaluate --cross-validation` does, with and without flips, else its comparisons
    would say nothing about the shipped pipeline."""
    import csv

    from brats_seg.cli import main

    cache = tmp_path / "cache"
    probabilities = _load_script("cv_probabilities")
    assert (
        probabilities.main([str(tiny_data_dir), "--model", str(tiny_fold_bundle), "--output", str(cache)])
        == 0
    )
    index = json.loads((cache / "index.json").read_text())
    assert index["cases"] == ["Tiny-003", "Tiny_001", "Tiny_002"] and index["flips"] == [
        "none",
        "x",
        "y",
        "z",
    ]
    maps = np.load(cache / "Tiny_001.npz")
    assert sorted(maps.files) == ["0_none", "0_x", "0_y", "0_z"] and maps["0_none"].dtype == np.float16
    assert not np.array_equal(maps["0_none"], maps["0_x"])  # the flipped pass is a different prediction

    expected = {}
    for flag in ("--no-tta", "--tta"):
        evaluated = tmp_path / f"eval{flag}"
        assert (
            main(
                [
                    "evaluate",
                    str(tiny_data_dir),
                    "--model",
                    str(tiny_fold_bundle),
                    "--cross-validation",
                    flag,
                    "--output",
                    str(evaluated),
                    "--no-progress",
                ]
            )
            == 0
        )
        expected[flag] = {r["case"]: r for r in csv.DictReader((evaluated / "scores.csv").open())}
    capsys.readouterr()
    table = tmp_path / "decoding.csv"
    decode = _load_script("tune_decoding")
    assert (
        decode.main(
            [
                str(cache),
                "--data",
                str(tiny_data_dir),
                "--splits",
                str(tiny_model_dir / "splits.json"),
                "--flip-sets",
                "none",
                "none,x,y,z",
                "--thresholds",
                "0.4",
                "0.5",
                "--workers",
                "1",
                "--csv",
                str(table),
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "post-processing {'min_component_fraction': 0.5}" in out
    rows = list(csv.DictReader(table.open()))
    for decoding, flag in (("bundles 0, flips none", "--no-tta"), ("bundles 0, flips none+x+y+z", "--tta")):
        plain = {
            r["case"]: r
            for r in rows
            if r["decoding"] == decoding and (r["t_tc"], r["t_wt"], r["t_et"]) == ("0.5", "0.5", "0.5")
        }
        assert sorted(plain) == sorted(expected[flag])
        for case, row in plain.items():  # float16 probabilities: equal up to a voxel at the threshold
            for key in ("dice_WT", "dice_TC", "dice_ET"):
                assert float(row[key]) == pytest.approx(float(expected[flag][case][key]), abs=1e-3), (
                    decoding,
                    case,
                    key,
                )
            assert float(row["hd95_WT"]) == pytest.approx(float(expected[flag][case]["hd95_WT"]), abs=0.5), (
                decoding,
                case,
            )
    assert "bundles 0, flips none: nested" in out and "bundles 0, flips none+x+y+z: nested" in out
    assert out.count("per fold (TC, WT, ET):") == 2
    moves = 1 + 3 * 1  # all at 0.5, then each region alone at 0.4
    assert len(rows) >= 3 * 2 * moves

    # a cache is never silently mixed or incomplete
    with pytest.raises(SystemExit):
        probabilities.main(
            [str(tiny_data_dir), "--model", str(tiny_fold_bundle), "--output", str(cache), "--flips", "none"]
        )
    assert (
        "holds probabilities made with other settings flips: found ['none', 'x', 'y', 'z'], expected ['none']"
        in (capsys.readouterr().err)
    )
    with pytest.raises(SystemExit):
        decode.main([str(cache), "--data", str(tiny_data_dir), "--bundles", "1", "--workers", "1"])
    assert "expected bundle indices 0..0 and flips from ['none', 'x', 'y', 'z']" in capsys.readouterr().err
    (cache / "Tiny_002.npz").unlink()
    with pytest.raises(SystemExit):
        decode.main([str(cache), "--data", str(tiny_data_dir), "--workers", "1"])
    assert "expected <case>.npz for every case in index.json, missing Tiny_002" in capsys.readouterr().err


def test_per_region_thresholds_match_regions_to_labels_and_ties_go_to_one_half() -> None:
    from brats_seg.postprocess import regions_to_labels

    decode = _load_script("tune_decoding")
    probs = np.random.default_rng(0).random((3, 6, 6, 6)).astype(np.float32)
    for t in (0.3, 0.5):
        assert np.array_equal(
            regions_to_labels(probs, order=decode.REGIONS, threshold=(t, t, t)),
            regions_to_labels(probs, threshold=t),
        )
    moves = decode.single_moves([0.4, 0.5, 0.6])
    assert moves[0] == (0.5, 0.5, 0.5) and len(moves) == 7 and (0.5, 0.4, 0.5) in moves
    row = {f"{m}_{r}": 0.0 for m in ("dice", "hd95") for r in ("TC", "WT", "ET")}
    table = {m: {"a": dict(row)} for m in moves}
    table[(0.5, 0.4, 0.5)]["a"]["dice_WT"] = 0.1  # WT is better at 0.4; TC and ET tie everywhere
    assert decode.choose(table, ["a"], [0.4, 0.5, 0.6]) == (0.5, 0.4, 0.5)


def test_error_breakdown_counts_missed_added_and_island_voxels(island_predictions, capsys) -> None:
    """The island fixture's predictions are the truth plus a 27-voxel oedema island in a corner."""
    data, preds, _ = island_predictions
    breakdown = _load_script("error_breakdown")
    assert breakdown.main([str(preds), "--data", str(data)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("WT: case | Dice | truth | false positive")
    row = out[1].split(" | ")
    assert row[0] == "Tiny_001" and row[3] == "27" and row[4] == "0" and row[6] == "1" and row[7] == "27"
    assert out[-1].startswith(
        "0 of 4 cases miss more WT voxels than they add; "
        "in all, 0 missed and 108 added (108 of them in islands)"
    )

    truth = np.zeros((8, 8, 8), dtype=np.uint8)
    truth[2:6, 2:6, 2:6] = 2
    truth[3:5, 3:5, 3:5] = 4
    predicted = np.zeros_like(truth)
    predicted[3:5, 3:5, 3:5] = 1  # tumour core where enhancing tumour is: WT misses the oedema shell
    b = breakdown.breakdown("x", predicted, truth, region="WT")
    assert (b.truth, b.false_positive, b.false_negative, b.parts, b.islands) == (64, 0, 56, 1, 0)
    assert b.dice == pytest.approx(2 * 8 / (2 * 8 + 56))
    et = breakdown.breakdown("x", predicted, truth, region="ET")
    assert (et.truth, et.false_negative, et.parts) == (8, 8, 0) and et.dice == 0.0
    assert breakdown.main([str(data), "--data", str(data)]) == 2


def _scores_folder(folder: Path, rows: dict[str, tuple[float, float, float, float]]) -> Path:
    """An evaluate-like folder whose scores.csv holds (WT, TC, ET Dice, WT HD95) per case."""
    folder.mkdir()
    lines = ["case,dice_ET,hd95_ET,dice_TC,hd95_TC,dice_WT,hd95_WT,seconds"]
    lines += [f"{c},{et},3.0,{tc},4.0,{wt},{hd},1.5" for c, (wt, tc, et, hd) in rows.items()]
    (folder / "scores.csv").write_text("\n".join(lines) + "\n")
    return folder


def test_compare_scores_pairs_cases_and_gives_the_interval_of_the_mean_change(tmp_path: Path, capsys) -> None:
    compare = _load_script("compare_scores")
    base = _scores_folder(
        tmp_path / "base",
        {
            "a": (0.80, 0.7, 0.6, 10.0),
            "b": (0.90, 0.8, 0.7, 4.0),
            "c": (0.50, 0.4, 0.3, 30.0),
            "only_base": (0.1, 0.1, 0.1, 90.0),
        },
    )
    better = _scores_folder(
        tmp_path / "better",
        {"a": (0.82, 0.7, 0.6, 9.0), "b": (0.92, 0.8, 0.6, 4.0), "c": (0.52, 0.4, 0.3, 20.0)},
    )
    wt = compare.paired_change(compare.read_scores(base), compare.read_scores(better), "dice_WT")
    assert wt["n"] == 3 and wt["mean"] == pytest.approx(0.02)  # "only_base" is not paired
    assert wt["ci_low"] == pytest.approx(0.02) and wt["ci_high"] == pytest.approx(
        0.02
    )  # every case moved alike
    assert (wt["up"], wt["down"]) == (3, 0)
    et = compare.paired_change(compare.read_scores(base), compare.read_scores(better), "dice_ET")
    assert et["mean"] == pytest.approx(-0.1 / 3) and (et["up"], et["down"]) == (0, 1)
    assert et["ci_low"] == pytest.approx(-0.1) and et["ci_high"] == pytest.approx(0.0)

    assert compare.main([str(base), str(better)]) == 0
    out = capsys.readouterr().out
    assert "Paired change against base" in out
    assert "| better | 3 | +0.0200 [+0.0200, +0.0200]; 3/0 |" in out
    assert "| hd95_WT |" in out and "; 0/2 |" in out and "-3.6667 [" in out  # WT HD95: 10→9, 4→4, 30→20 mm
    assert "| only_base | 0.10/0.10/0.10 | – |" in out

    # a NaN score is left out of the pairs, not spread into the mean
    nan = compare.paired_change(
        {"a": {"hd95_WT": float("nan")}, "b": {"hd95_WT": 4.0}},
        {"a": {"hd95_WT": 3.0}, "b": {"hd95_WT": 5.0}},
        "hd95_WT",
    )
    assert nan["n"] == 1 and nan["mean"] == 1.0
    with pytest.raises(ValueError, match="no case in common between the two evaluations"):
        compare.paired_change({"x": {"dice_WT": 1.0}}, {"y": {"dice_WT": 1.0}}, "dice_WT")


def test_bench_speed_times_each_stage_and_compares_the_backends(
    tiny_model_dir: Path, tiny_study, capsys
) -> None:
    """One row per (variant, threads) with the stage medians, memory, GFLOP/s and the labels' Dice."""
    bench = _load_script("bench_speed")
    case = tiny_study(name="Tiny_900", shape=(40, 36, 30), seed=9)["T1"].parent
    bench.main(
        ["--cases", str(case), "--model", str(tiny_model_dir), "--variants", "torch-quick", "openvino-quick"]
        + ["--threads", "1", "--runs", "2", "--cli-runs", "0"]
    )
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| Tiny_900 |")]
    assert [row.split(" | ")[1] for row in rows] == ["torch-quick", "openvino-quick"]
    cells = rows[1].strip("| ").split(" | ")
    assert float(cells[7].strip("*")) > 0  # the whole prediction's median seconds
    assert all(float(d) >= 0.99 for d in cells[-2].split("/")), cells[-2]  # OpenVINO's labels against torch's
    assert cells[-1] != "-"  # the tiny study has a ground truth
