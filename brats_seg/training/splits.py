"""k-fold splits of the cases, and the ``splits.json`` a run writes so that its folds can be reused."""

from __future__ import annotations

import json
import random
from collections.abc import Callable, Sequence
from pathlib import Path

from ..errors import StudyError
from .config import TrainConfig


def read_splits(path: str | Path) -> list[list[str]]:
    """The folds of a ``splits.json`` written by an earlier run.

    Raises:
        StudyError: naming the file, when it is missing or has no list of case-name lists ``folds``.
    """
    path = Path(path)
    try:
        folds = json.loads(path.read_text())["folds"]
    except (OSError, json.JSONDecodeError, KeyError, TypeError) as e:
        raise StudyError(
            f"--splits {path}: expected a splits.json with a 'folds' list, "
            f"cannot read it ({type(e).__name__}: {e})"
        ) from e
    if not (isinstance(folds, list) and len(folds) >= 2 and all(isinstance(f, list) for f in folds)):
        raise StudyError(f"--splits {path}: expected 'folds' to be a list of at least 2 lists of case names")
    return folds


def make_folds(names: Sequence[str], *, k: int = 5, seed: int = 0) -> list[list[str]]:
    """Split case names into ``k`` seeded folds of near-equal size.

    Raises:
        ValueError: for ``k`` below 2 or fewer cases than folds.
    """
    if k < 2:
        raise ValueError(f"k-fold needs k >= 2, got {k}")
    if len(names) < k:
        raise ValueError(f"{len(names)} cases cannot make {k} folds")
    order = sorted(names)
    random.Random(seed).shuffle(order)
    return [sorted(order[i::k]) for i in range(k)]


def choose_folds(names: Sequence[str], out: Path, config: TrainConfig) -> list[list[str]]:
    """The run's folds, written to ``out/splits.json``: from ``--splits`` (which sets ``config.folds``),
    the run's own split when resuming, else a new seeded split of ``names``."""
    split_path = out / "splits.json"
    if config.splits is not None:
        folds = read_splits(config.splits)
        config.folds = len(folds)
        record = {"k": len(folds), "from": str(config.splits), "folds": folds}
    elif config.resume and split_path.is_file():
        return json.loads(split_path.read_text())["folds"]
    else:
        folds = make_folds(names, k=config.folds, seed=config.seed)
        record = {"k": config.folds, "seed": config.seed, "folds": folds}
    split_path.write_text(json.dumps(record, indent=2) + "\n")
    return folds


def fold_split(
    names: Sequence[str],
    out: Path,
    config: TrainConfig,
    *,
    data_dir: Path,
    log: Callable[[str], None] = print,
) -> tuple[list[str], list[str]]:
    """The cases the run trains on and those it holds out (none with ``fold=-1``).

    Returns:
        The training cases and the held-out cases.

    Raises:
        StudyError: for a fold beyond the split, or a split holding out cases ``data_dir`` lacks.
    """
    folds = choose_folds(names, out, config)
    if config.fold >= len(folds):
        raise StudyError(
            f"--fold {config.fold}: expected -1 (all cases) or a fold below {len(folds)}, the split's k"
        )
    held_out = [] if config.fold < 0 else folds[config.fold]
    train_names = [n for n in names if n not in held_out]
    log(f"{len(train_names)} training cases, {len(held_out)} held out (fold {config.fold} of {config.folds})")
    unknown = sorted(set(held_out) - set(names))
    if unknown:
        raise StudyError(f"the split holds out {unknown}, which are not among the cases of {data_dir}")
    return train_names, held_out
