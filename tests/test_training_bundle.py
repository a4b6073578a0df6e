"""Bundles of fold models, weight averages, and their cross-validation (brats_seg.training.bundle)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from test_training_recipe import train_fold

from brats_seg.card import ModelCard
from brats_seg.cli import main
from brats_seg.model import load_model
from brats_seg.training.bundle import bundle


def test_seed_ensemble_on_the_same_split_bundles_and_records_scores(
    tiny_data_dir: Path, tiny_model_dir: Path, tmp_path: Path
) -> None:
    """A second run on the first run's folds (other seed, strong intensity augmentation), bundled into
    one model folder: both learners are loaded and averaged, and evaluate records its held-out scores
    in the bundled card."""
    from conftest import TINY_TRAIN_ARGS

    second = tmp_path / "seed1"
    args = ["train", str(tiny_data_dir), "--output", str(second), *TINY_TRAIN_ARGS]
    args[args.index("--fold") + 1] = "0"
    assert (
        main(
            [
                *args,
                "--seed",
                "1",
                "--splits",
                str(tiny_model_dir / "splits.json"),
                "--intensity-augment",
                "strong",
            ]
        )
        == 0
    )
    first_held = ModelCard.load(tiny_model_dir / "model.json").extra["training"]["held_out_cases"]
    assert ModelCard.load(tiny_model_dir / "model.json").extra["training"]["intensity_augment"] == "mild"
    assert ModelCard.load(second / "model.json").extra["training"]["intensity_augment"] == "strong"
    assert ModelCard.load(second / "model.json").extra["training"]["held_out_cases"] == first_held

    bundled = tmp_path / "model"
    assert main(["bundle", str(tiny_model_dir), str(second), "--output", str(bundled)]) == 0
    card = ModelCard.load(bundled / "model.json")
    assert card.files == ["run.pkl", "seed1.pkl"] and card.extra["held_out_cases"] == first_held
    model = load_model(bundled, device="cpu")
    assert len(model.networks) == 2

    out = tmp_path / "eval"
    code = main(
        [
            "evaluate",
            str(tiny_data_dir),
            "--output",
            str(out),
            "--model",
            str(bundled),
            "--cases",
            f"@{bundled / 'model.json'}",
            "--record-as",
            "held_out",
            "--no-progress",
        ]
    )
    assert code == 0
    scores = ModelCard.load(bundled / "model.json").extra["scores"]["held_out"]
    summary = json.loads((out / "summary.json").read_text())
    assert scores["cases"] == first_held == summary["cases"]
    assert scores["metrics"]["dice_WT"]["mean"] == pytest.approx(
        summary["summary"]["dice_WT"]["mean"], abs=1e-4
    )
    assert scores["command"].startswith("brats-seg evaluate") and "--record-as held_out" in scores["command"]
    # the pickles are untouched by recording scores
    assert load_model(bundled, device="cpu") is model
    for name in card.files:
        from brats_seg.model import sha256_of

        assert sha256_of(bundled / name) == card.sha256[name]


def _run_at_other_spacing(tiny_model_dir: Path, other: Path) -> Path:
    """A copy of the tiny run whose card says it reads inputs at 1 mm (the run's is 2 mm)."""
    import shutil

    shutil.copytree(tiny_model_dir, other)
    d = json.loads((other / "model.json").read_text())
    d["spacing"] = [1.0, 1.0, 1.0]
    (other / "model.json").write_text(json.dumps(d))
    return other


def test_bundle_refuses_runs_that_read_inputs_differently(tiny_model_dir: Path, tmp_path: Path) -> None:
    other = _run_at_other_spacing(tiny_model_dir, tmp_path / "other")
    assert main(["bundle", str(tiny_model_dir), str(other), "--output", str(tmp_path / "m")]) == 2
    with pytest.raises(Exception, match=r"its spacing \[1.0, 1.0, 1.0\] differs"):
        bundle([tiny_model_dir, other], tmp_path / "m2")


def test_bundle_writes_post_processing_settings_into_the_card(
    tiny_model_dir: Path, tmp_path: Path, capsys
) -> None:
    out = tmp_path / "m"
    assert (
        main(
            [
                "bundle",
                str(tiny_model_dir),
                "--output",
                str(out),
                "--min-component-mm3",
                "500",
                "--et-min-mm3",
                "200",
            ]
        )
        == 0
    )
    card = ModelCard.load(out / "model.json")
    assert card.postprocess == {"min_component_mm3": 500.0, "et_min_mm3": 200.0}
    assert load_model(out, device="cpu").card.postprocess == card.postprocess
    assert main(["bundle", str(tiny_model_dir), "--output", str(tmp_path / "n")]) == 0
    assert ModelCard.load(tmp_path / "n" / "model.json").postprocess == {}


def test_bundle_can_store_float16_weights(tiny_model_dir: Path, tmp_path: Path) -> None:
    """--weights-dtype float16 re-exports each learner with half-size weights; the run is untouched,
    the card says so, and the network's output barely moves."""
    from brats_seg.model import load_learner_checked, sha256_of

    run_card = ModelCard.load(tiny_model_dir / "model.json")
    out = tmp_path / "m16"
    assert main(["bundle", str(tiny_model_dir), "--output", str(out), "--weights-dtype", "float16"]) == 0
    card = ModelCard.load(out / "model.json")
    assert card.files == ["run.pkl"] and sha256_of(out / "run.pkl") == card.sha256["run.pkl"]
    assert card.extra["members"][0]["training"]["weights_dtype"] == "float16"
    assert card.extra["members"][0]["training"]["converted_from"] == {
        "file": str(tiny_model_dir / "model.pkl"),
        "sha256": run_card.sha256["model.pkl"],
    }
    assert run_card.extra["training"]["weights_dtype"] == "float32"
    unchanged = sha256_of(tiny_model_dir / "model.pkl") == run_card.sha256["model.pkl"]
    assert unchanged, "the run's learner must not change"
    learn = load_learner_checked(out / "run.pkl", card.sha256["run.pkl"])
    assert {p.dtype for p in learn.model.parameters()} == {torch.float16}
    assert (out / "run.pkl").stat().st_size < 0.75 * (tiny_model_dir / "model.pkl").stat().st_size

    x = torch.randn(1, 4, 16, 16, 16, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        full = torch.sigmoid(load_model(tiny_model_dir, device="cpu").networks[0](x))
        half = torch.sigmoid(load_model(out, device="cpu").networks[0](x))
    assert float((full - half).abs().max()) < 1e-2


def test_bundle_refuses_an_unknown_weights_dtype_and_a_tampered_run(
    tiny_model_dir: Path, tmp_path: Path, capsys
) -> None:
    import shutil

    from brats_seg.errors import ModelError

    with pytest.raises(SystemExit):
        main(["bundle", str(tiny_model_dir), "--output", str(tmp_path / "m"), "--weights-dtype", "int8"])
    assert "invalid choice: 'int8'" in capsys.readouterr().err
    with pytest.raises(ModelError, match="expected weights_dtype in"):
        bundle([tiny_model_dir], tmp_path / "m", weights_dtype="bfloat8")
    # a changed or missing learner in any run is refused before anything is written
    tampered = tmp_path / "tampered"
    shutil.copytree(tiny_model_dir, tampered)
    with open(tampered / "model.pkl", "ab") as f:
        f.write(b"x")
    missing = tmp_path / "missing"
    shutil.copytree(tiny_model_dir, missing)
    (missing / "model.pkl").unlink()
    for bad, message in ((tampered, "model.pkl to have sha256"), (missing, "model.pkl is missing")):
        for dtype in ([], ["--weights-dtype", "float16"]):
            out = tmp_path / f"out_{bad.name}_{len(dtype)}"
            assert main(["bundle", str(tiny_model_dir), str(bad), "--output", str(out), *dtype]) == 2
            err = capsys.readouterr().err
            assert f"cannot bundle {bad}" in err and message in err and "Traceback" not in err
            assert not out.exists()
    with pytest.raises(ModelError, match="with the same folder name"):
        bundle([tiny_model_dir, tiny_model_dir], tmp_path / "twice")


@pytest.mark.parametrize(
    ("option", "message"),
    [
        (["--min-component-mm3", "-1"], "expected a number >= 0, found -1"),
        (["--et-min-mm3", "lots"], "expected a number >= 0, found 'lots'"),
        (["--min-component-fraction", "2"], r"expected a fraction in \[0, 1\], found 2"),
    ],
)
def test_bundle_refuses_bad_post_processing_settings(
    option: list[str], message: str, tiny_model_dir: Path, tmp_path: Path, capsys
) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["bundle", str(tiny_model_dir), "--output", str(tmp_path / "m"), *option])
    assert exc.value.code == 2
    assert re.search(message, capsys.readouterr().err)


def test_average_writes_the_mean_of_one_folds_runs_as_a_run(
    tiny_data_dir: Path, tiny_model_dir: Path, tmp_path: Path, capsys
) -> None:
    """brats-seg average: the float32 mean of the weights of runs that hold out the same cases (a bundle
    contributes its member of that fold), exported as a run folder that loads, predicts and bundles."""
    from conftest import TINY_TRAIN_ARGS

    from brats_seg.model import load_learner_checked, sha256_of

    splits = tiny_model_dir / "splits.json"
    second = tmp_path / "seed1"
    args = [
        "train",
        str(tiny_data_dir),
        "--output",
        str(second),
        *TINY_TRAIN_ARGS,
        "--splits",
        str(splits),
        "--seed",
        "1",
        "--init-from",
        str(tiny_model_dir),
        "--lr",
        "3e-2",
        "--export-dtype",
        "float16",
    ]
    assert main(args) == 0
    fold1 = train_fold(tiny_data_dir, tiny_model_dir, tmp_path / "fold1", 1)
    bundled = tmp_path / "model"
    assert (
        main(["bundle", str(fold1), str(second), "--output", str(bundled)]) == 0
    )  # members of folds 1 and 0

    soup = tmp_path / "soup"
    capsys.readouterr()
    assert main(["average", str(tiny_model_dir), str(bundled), "--output", str(soup)]) == 0
    assert f"wrote {soup / 'model.pkl'}: the mean of 2 learners" in capsys.readouterr().out
    card = ModelCard.load(soup / "model.json")
    first = ModelCard.load(tiny_model_dir / "model.json")
    assert card.files == ["model.pkl"] and card.sha256["model.pkl"] == sha256_of(soup / "model.pkl")
    training = card.extra["training"]
    assert training["held_out_cases"] == first.extra["training"]["held_out_cases"]
    assert [s["file"] for s in training["averaged_from"]] == [
        str(tiny_model_dir / "model.pkl"),
        str(bundled / "seed1.pkl"),
    ]
    assert training["averaged_from"][1]["sha256"] == ModelCard.load(second / "model.json").sha256["model.pkl"]
    assert training["weights_dtype"] == "float32" and card.extra["scores"] == {}

    a = load_model(tiny_model_dir, device="cpu").networks[0].state_dict()
    b = load_model(second, device="cpu").networks[0].state_dict()
    mean = load_learner_checked(soup / "model.pkl", card.sha256["model.pkl"]).model.state_dict()
    weights = [k for k in a if a[k].is_floating_point()]
    assert any(not torch.allclose(a[k], b[k]) for k in weights), "the fine-tune must have moved the weights"
    for k in weights:
        assert torch.allclose(mean[k], (a[k] + b[k].float()) / 2, atol=1e-6), k
    assert main(["bundle", str(soup), "--output", str(tmp_path / "souped")]) == 0
    assert len(load_model(tmp_path / "souped", device="cpu").networks) == 1


def test_average_refuses_other_folds_bundles_first_and_tampered_learners(
    tiny_data_dir: Path, tiny_model_dir: Path, tmp_path: Path, capsys
) -> None:
    import shutil

    fold1 = train_fold(tiny_data_dir, tiny_model_dir, tmp_path / "fold1", 1)
    capsys.readouterr()
    assert main(["average", str(tiny_model_dir), str(fold1), "--output", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err
    assert f"cannot average {fold1}: it holds out [" in err
    assert "only runs of the same fold can be averaged" in err
    assert not (tmp_path / "x" / "model.pkl").exists()

    assert main(["average", str(tiny_model_dir), "--output", str(tmp_path / "x")]) == 2
    assert "expected at least two model folders, found 1" in capsys.readouterr().err

    bundled = tmp_path / "model"
    assert main(["bundle", str(tiny_model_dir), "--output", str(bundled)]) == 0
    assert main(["average", str(bundled), str(tiny_model_dir), "--output", str(tmp_path / "x")]) == 2
    assert "expected a run folder first (one learner), found a bundle" in capsys.readouterr().err

    tampered = tmp_path / "tampered"
    shutil.copytree(tiny_model_dir, tampered)
    with open(tampered / "model.pkl", "ab") as f:
        f.write(b"x")
    assert main(["average", str(tiny_model_dir), str(tampered), "--output", str(tmp_path / "x")]) == 2
    assert "refusing to unpickle" in capsys.readouterr().err

    leaky = tmp_path / "leaky"
    shutil.copytree(tiny_model_dir, leaky)
    d = json.loads((leaky / "model.json").read_text())
    held = d["training"]["held_out_cases"]
    d["training"]["train_cases"] = [*d["training"]["train_cases"], held[0]]
    (leaky / "model.json").write_text(json.dumps(d))
    assert main(["average", str(tiny_model_dir), str(leaky), "--output", str(tmp_path / "x")]) == 2
    expected = f"cannot average {leaky}: it was trained on ['{held[0]}'], which {tiny_model_dir} holds out"
    assert expected in capsys.readouterr().err

    other = _run_at_other_spacing(tiny_model_dir, tmp_path / "other")
    assert main(["average", str(tiny_model_dir), str(other), "--output", str(tmp_path / "x")]) == 2
    assert f"cannot average {other}: its spacing [1.0, 1.0, 1.0] differs" in capsys.readouterr().err


def test_cross_validation_scores_each_case_with_the_members_that_held_it_out(
    tiny_data_dir: Path, tiny_model_dir: Path, tmp_path: Path, capsys
) -> None:

    splits = tiny_model_dir / "splits.json"
    second = train_fold(tiny_data_dir, tiny_model_dir, tmp_path / "fold1", 1)
    bundled = tmp_path / "model"
    assert main(["bundle", str(tiny_model_dir), str(second), "--output", str(bundled)]) == 0
    folds = json.loads(splits.read_text())["folds"]
    out = tmp_path / "cv"
    capsys.readouterr()
    assert (
        main(
            [
                "evaluate",
                str(tiny_data_dir),
                "--output",
                str(out),
                "--model",
                str(bundled),
                "--cross-validation",
                "--record-as",
                "cross_validation",
                "--no-progress",
            ]
        )
        == 0
    )
    summary = json.loads((out / "summary.json").read_text())
    assert summary["cross_validation"] is True
    # how they were made, for tune_postprocess
    assert summary["postprocessing"] is True and summary["tta"] is False
    assert sorted(summary["cases"]) == sorted(folds[0] + folds[1])  # fold 2 was never held out by a member
    scores = ModelCard.load(bundled / "model.json").extra["scores"]["cross_validation"]
    assert scores["n"] == 2 and "--cross-validation" in scores["command"]

    # each case's prediction is the one its own fold model makes, not the ensemble's
    from brats_seg.files import load_study
    from brats_seg.pipeline import segment

    case = folds[1][0]
    alone = segment(load_study(tiny_data_dir / case), load_model(second, device="cpu"))
    assert (
        main(
            [
                "evaluate",
                str(tiny_data_dir),
                "--output",
                str(tmp_path / "cv2"),
                "--model",
                str(bundled),
                "--cross-validation",
                "--cases",
                case,
                "--save-predictions",
                "--no-progress",
            ]
        )
        == 0
    )
    import nibabel as nib

    saved = np.asanyarray(nib.load(tmp_path / "cv2" / f"{case}_seg.nii.gz").dataobj)
    assert np.array_equal(saved, alone.labels.array)

    assert (
        main(
            [
                "evaluate",
                str(tiny_data_dir),
                "--output",
                str(tmp_path / "cv3"),
                "--model",
                str(bundled),
                "--cross-validation",
                "--cases",
                folds[2][0],
                "--no-progress",
            ]
        )
        == 2
    )
    assert "no member of" in capsys.readouterr().err
    # the card's held-out cases are the ones every member held out: none here, and the message says what to do
    assert (
        main(
            [
                "evaluate",
                str(tiny_data_dir),
                "--output",
                str(tmp_path / "cv4"),
                "--model",
                str(bundled),
                "--cases",
                f"@{bundled / 'model.json'}",
                "--no-progress",
            ]
        )
        == 2
    )
    assert "a bundle of fold models): use --cross-validation" in capsys.readouterr().err


def test_bundle_can_turn_test_time_flips_on_by_default(
    tiny_data_dir: Path, tiny_model_dir: Path, tmp_path: Path, capsys
) -> None:
    """--tta-flips sets the card default; evaluate then flips unless told --no-tta, and says which it did."""
    plain, flipped = tmp_path / "plain", tmp_path / "flipped"
    assert main(["bundle", str(tiny_model_dir), "--output", str(plain)]) == 0
    assert main(["bundle", str(tiny_model_dir), "--output", str(flipped), "--tta-flips"]) == 0
    assert ModelCard.load(plain / "model.json").tta_flips is False
    card = ModelCard.load(flipped / "model.json")
    assert card.tta_flips is True and card.sha256 == ModelCard.load(plain / "model.json").sha256
    made = {}
    for flag in ([], ["--no-tta"]):
        out = tmp_path / f"eval{len(flag)}"
        assert (
            main(
                [
                    "evaluate",
                    str(tiny_data_dir),
                    "--output",
                    str(out),
                    "--model",
                    str(flipped),
                    "--cross-validation",
                    "--no-progress",
                    *flag,
                ]
            )
            == 0
        )
        made[tuple(flag)] = json.loads((out / "summary.json").read_text())
    assert made[()]["tta"] is True and made[("--no-tta",)]["tta"] is False
    assert made[()]["summary"] != made[("--no-tta",)]["summary"]  # the flips change the prediction

    # a record's key says whether flips were used, so the dashboard's line cannot misstate it
    base = [
        "evaluate",
        str(tiny_data_dir),
        "--output",
        str(tmp_path / "rec"),
        "--model",
        str(flipped),
        "--cross-validation",
        "--no-progress",
    ]
    assert main([*base, "--record-as", "cross_validation"]) == 2
    assert (
        "--record-as cross_validation: these predictions use test-time flips (the card says so); "
        "expected a key ending in _tta (e.g. cross_validation_tta)"
    ) in capsys.readouterr().err
    assert main([*base, "--no-tta", "--record-as", "cross_validation_tta"]) == 2
    assert "these predictions skip test-time flips (--tta/--no-tta says so)" in capsys.readouterr().err
    assert main([*base, "--record-as", "cross_validation_tta"]) == 0
    assert main([*base, "--no-tta", "--record-as", "cross_validation"]) == 0
    assert sorted(ModelCard.load(flipped / "model.json").extra["scores"]) == [
        "cross_validation",
        "cross_validation_tta",
    ]
