"""scripts/train_folds.sh and scripts/device_train_folds.sh on tiny data."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from test_training_recipe import train_fold

from brats_seg.card import ModelCard
from brats_seg.cli import main


@pytest.fixture(scope="module")
def tiny_pack(tiny_data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    pack = tmp_path_factory.mktemp("pack") / "tiny.npz"
    assert main(["pack", str(tiny_data_dir), "--output", str(pack), "--spacing", "2", "2", "2"]) == 0
    return pack


def test_train_folds_script_trains_every_fold_with_its_own_inputs(
    tiny_pack: Path, tiny_model_dir: Path, tmp_path: Path
) -> None:
    """scripts/train_folds.sh: one process per fold of the split, {fold} replaced in the options."""
    import os
    import subprocess
    import sys

    from conftest import TINY_TRAIN_ARGS

    args = list(TINY_TRAIN_ARGS)
    for option in ("--folds", "--fold"):
        i = args.index(option)
        del args[i : i + 2]
    script = Path(__file__).resolve().parents[1] / "scripts" / "train_folds.sh"
    out = tmp_path / "folds"
    env = {**os.environ, "PYTHON": sys.executable, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        [
            "bash",
            str(script),
            str(tiny_pack),
            str(out),
            str(tiny_model_dir / "splits.json"),
            *args,
            "--seed",
            "1{fold}",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    logs = "".join((out / f"fold{f}.log").read_text() for f in range(3))
    assert result.returncode == 0, result.stderr + logs
    folds = json.loads((tiny_model_dir / "splits.json").read_text())["folds"]
    for f in range(3):
        training = ModelCard.load(out / f"fold{f}" / "model.json").extra["training"]
        assert training["fold"] == f and training["held_out_cases"] == folds[f]
        assert json.loads((out / f"fold{f}" / "train_meta.json").read_text())["config"]["seed"] == 10 + f


def test_train_folds_script_reports_a_failing_fold(tiny_model_dir: Path, tmp_path: Path) -> None:
    import os
    import subprocess
    import sys

    script = Path(__file__).resolve().parents[1] / "scripts" / "train_folds.sh"
    result = subprocess.run(
        [
            "bash",
            str(script),
            str(tmp_path / "missing.npz"),
            str(tmp_path / "out"),
            str(tiny_model_dir / "splits.json"),
        ],
        env={**os.environ, "PYTHON": sys.executable},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 1
    assert "fold 0 failed" in result.stderr and "missing.npz" in result.stderr


def test_device_script_dry_run_fine_tunes_each_fold_from_the_bundled_member(
    tiny_pack: Path, tiny_data_dir: Path, tiny_model_dir: Path, tmp_path: Path
) -> None:
    """scripts/device_train_folds.sh, run here without a GPU or wheels: INIT=<bundle> starts each fold from
    the bundle's member of that fold, AUG and EXTRA reach brats-seg train, BUDGET=none keeps the epoch
    length, and every fold's learner comes back in OUT."""
    import os
    import subprocess
    import sys

    members = [tiny_model_dir] + [
        train_fold(tiny_data_dir, tiny_model_dir, tmp_path / f"fold{f}", f) for f in (1, 2)
    ]
    bundled = tmp_path / "model"
    assert main(["bundle", *map(str, members), "--output", str(bundled)]) == 0
    out, runs = tmp_path / "out", tmp_path / "runs"
    out.mkdir()
    env = {
        **os.environ,
        "OUT": str(out),
        "RUNS": str(runs),
        "PY": sys.executable,
        "WHEELS": "none",
        "PACK": str(tiny_pack),
        "SPLITS": str(tiny_model_dir / "splits.json"),
        "SPACING": "2 2 2",
        "PATCH": "16 16 16",
        "BATCH": "2",
        "EPOCHS": "1",
        "BUDGET": "none",
        "WORKERS": "0",
        "AUG": "strong-bias",
        "LR": "3e-3",
        "INIT": str(bundled),
        "EXTRA": "--channels 4 8 16 --num-res-units 1 --samples-per-epoch 4 --val-patches 1 --device cpu",
    }
    script = Path(__file__).resolve().parents[1] / "scripts" / "device_train_folds.sh"
    result = subprocess.run(["bash", str(script)], env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "train_folds exit 0" in result.stdout
    card = ModelCard.load(bundled / "model.json")
    for f in range(3):
        assert (out / f"fold{f}.pkl").is_file()
        training = ModelCard.load(runs / f"fold{f}" / "model.json").extra["training"]
        assert training["intensity_augment"] == "strong-bias" and training["iterations"] == 2
        assert training["init_from"]["file"] == str(bundled / card.files[f])  # run.pkl, fold1.pkl, fold2.pkl
