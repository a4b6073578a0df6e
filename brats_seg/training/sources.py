"""Where training cases come from: a folder of BraTS cases or a pack, both asked for by case name."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from ..card import ModelCard
from ..errors import StudyError
from ..files import find_studies, has_truth
from .data import Case, load_cases
from .pack import load_pack


@dataclass
class CaseSource:
    """The cases of a folder or a pack: their names, and how to load some of them.

    Attributes:
        names: Every case with ground truth, in the folder's or the pack's order.
        load: Loads the named cases (preprocessed, from a folder cached per case).
    """

    names: list[str]
    load: Callable[[Sequence[str]], list[Case]]


def open_source(
    data_dir: Path, card: ModelCard, *, cache_dir: Path, log: Callable[[str], None] = print
) -> CaseSource:
    """The cases of a pack (``.npz``, all read now) or of a folder (preprocessed when loaded).

    Args:
        data_dir: A pack written by ``brats-seg pack`` or a folder of BraTS case folders.
        card: The preprocessing the network expects (a pack must have been made with it).
        cache_dir: Where a folder's preprocessed cases are cached.
        log: Where progress lines go.

    Raises:
        StudyError: for a pack made otherwise, or a folder without cases with ground truth.
    """
    if data_dir.suffix == ".npz":
        packed = load_pack(data_dir, card)
        return CaseSource(names=list(packed), load=lambda names: [packed[n] for n in names])
    folders = [f for f in find_studies(data_dir) if has_truth(f)]
    if not folders:
        raise StudyError(f"no cases with a *_seg ground truth under {data_dir}")
    by_name = {f.name: f for f in folders}

    def load(names: Sequence[str]) -> list[Case]:
        return load_cases([by_name[n] for n in names], card, cache_dir=cache_dir, log=log)

    return CaseSource(names=[f.name for f in folders], load=load)
