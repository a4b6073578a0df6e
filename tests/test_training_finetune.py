"""Fine-tuning from a trained run or a bundle member (brats_seg.training.finetune)."""

from __future__ import annotations

from pathlib import Path

import torch
from test_training_recipe import train_fold

from brats_seg.card import ModelCard
from brats_seg.cli import main
from brats_seg.model import load_model
from brats_seg.training.finetune import init_weights
from brats_seg.training.network import build_unet


def test_init_from_fine_tunes_a_trained_model(
    tiny_data_dir: Path, tiny_model_dir: Path, tmp_path: Path, capsys
) -> None:
    from conftest import TINY_TRAIN_ARGS

    out = tmp_path / "ft"
    assert (
        main(
            [
                "train",
                str(tiny_data_dir),
                "--output",
                str(out),
                *TINY_TRAIN_ARGS,
                "--init-from",
                str(tiny_model_dir),
            ]
        )
        == 0
    )
    init = ModelCard.load(out / "model.json").extra["training"]["init_from"]
    assert init["sha256"] == ModelCard.load(tiny_model_dir / "model.json").sha256["model.pkl"]
    assert init["training"]["epochs"] == 2
    fresh = build_unet(channels=(4, 8, 16), num_res_units=1)
    init_weights(fresh, tiny_model_dir)
    source = load_model(tiny_model_dir, device="cpu").networks[0].state_dict()
    assert all(torch.equal(v, source[k]) for k, v in fresh.state_dict().items())

    # a source that trained on this run's held-out cases would leak them into its scores
    leaky = [
        "train",
        str(tiny_data_dir),
        "--output",
        str(tmp_path / "leak"),
        *TINY_TRAIN_ARGS,
        "--splits",
        str(tiny_model_dir / "splits.json"),
        "--init-from",
        str(tiny_model_dir),
    ]
    leaky[leaky.index("--fold") + 1] = "1"
    assert main(leaky) == 2
    assert "which this run holds out" in capsys.readouterr().err

    args = [
        "train",
        str(tiny_data_dir),
        "--output",
        str(tmp_path / "bad"),
        *TINY_TRAIN_ARGS,
        "--init-from",
        str(tiny_model_dir),
    ]
    args[args.index("--channels") + 1 : args.index("--channels") + 4] = ["8", "8", "16"]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "its network differs from the one being trained" in err and "Traceback" not in err


def test_init_from_a_bundle_of_fold_models_takes_the_member_of_the_same_fold(
    tiny_data_dir: Path, tiny_model_dir: Path, tmp_path: Path, capsys
) -> None:
    """--init-from model/ (a bundle of fold models) starts each fold from its own member, never from a
    member that trained on the run's held-out cases; a bundle with no member of the fold is refused."""
    from conftest import TINY_TRAIN_ARGS

    splits = tiny_model_dir / "splits.json"
    fold1 = train_fold(tiny_data_dir, tiny_model_dir, tmp_path / "fold1", 1)
    bundled = tmp_path / "model"
    assert main(["bundle", str(tiny_model_dir), str(fold1), "--output", str(bundled)]) == 0

    ft = tmp_path / "ft1"
    args = [
        "train",
        str(tiny_data_dir),
        "--output",
        str(ft),
        *TINY_TRAIN_ARGS,
        "--splits",
        str(splits),
        "--init-from",
        str(bundled),
    ]
    args[args.index("--fold") + 1] = "1"
    assert main(args) == 0
    init = ModelCard.load(ft / "model.json").extra["training"]["init_from"]
    assert init["file"] == str(bundled / "fold1.pkl")
    assert init["sha256"] == ModelCard.load(fold1 / "model.json").sha256["model.pkl"]
    fresh = build_unet(channels=(4, 8, 16), num_res_units=1)
    held_out = ModelCard.load(fold1 / "model.json").extra["training"]["held_out_cases"]
    init_weights(fresh, bundled, held_out=held_out)
    source = load_model(fold1, device="cpu").networks[0].state_dict()
    assert all(torch.equal(v, source[k]) for k, v in fresh.state_dict().items())

    args[args.index("--fold") + 1] = "2"  # no member holds out fold 2
    args[args.index("--output") + 1] = str(tmp_path / "ft2")
    capsys.readouterr()
    assert main(args) == 2
    err = capsys.readouterr().err
    assert f"--init-from {bundled}: expected a bundle member that holds out exactly" in err
    assert "found none among its 2 members (run.pkl: [" in err and "Traceback" not in err
