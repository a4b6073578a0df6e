"""Model folders made of trained runs: a bundle of fold models (an ensemble with one card), and the
weight average of several runs of one fold (a "model soup")."""

from __future__ import annotations

import dataclasses
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from ..card import ModelCard
from ..errors import ModelError, StudyError
from ..model import load_learner_checked, sha256_of
from .config import EXPORT_DTYPES
from .export import training_brief

#: What must agree between the model folders that are bundled or averaged (how inputs are read and
#: outputs decoded).
MUST_MATCH = ("channels", "output", "spacing", "orientation", "normalisation", "roi_size")


def pick_member(card: ModelCard, held_out: Sequence[str], *, what: str) -> tuple[str, dict[str, Any]]:
    """The learner of a model folder that a run of the same fold may start from or average with.

    A run folder has one learner. A bundle of fold models has several: the member whose
    ``held_out_cases`` are exactly ``held_out`` (the same fold of the same split) is picked.

    Args:
        card: The folder's model card.
        held_out: The cases the new run or average holds out.
        what: How messages name the folder (e.g. ``"--init-from model"``).

    Returns:
        The learner's file name (as the card lists it) and its ``training`` record.

    Raises:
        StudyError: for a bundle none of whose members holds out exactly ``held_out``.
    """
    members = card.extra.get("members")
    if not members:
        return card.files[0], dict(card.extra.get("training", {}))
    for member in members:
        training = member.get("training", {})
        if held_out and set(training.get("held_out_cases", [])) == set(held_out):
            return member["file"], dict(training)
    found = "; ".join(
        f"{m['file']}: {sorted(m.get('training', {}).get('held_out_cases', []))}" for m in members
    )
    raise StudyError(
        f"{what}: expected a bundle member that holds out exactly {sorted(held_out)} "
        "(the same fold of the same "
        f"split), found none among its {len(members)} members ({found})"
    )


def refuse_other_reading(folders: Sequence[Path], cards: Sequence[ModelCard], *, verb: str) -> None:
    """Refuse model folders that read inputs or decode outputs differently from the first one.

    Raises:
        ModelError: naming the folder, the setting and both values.
    """
    for folder, card in zip(folders[1:], cards[1:], strict=True):
        for key in MUST_MATCH:
            if getattr(card, key) != getattr(cards[0], key):
                raise ModelError(
                    f"cannot {verb} {folder}: its {key} {getattr(card, key)} differs from "
                    f"{getattr(cards[0], key)} of {folders[0]}"
                )


def check_weights_dtype(weights_dtype: str | None, *, verb: str) -> None:
    """Refuse a ``weights_dtype`` other than None or one of :data:`EXPORT_DTYPES`."""
    if weights_dtype is not None and weights_dtype not in EXPORT_DTYPES:
        raise ModelError(
            f"{verb}: expected weights_dtype in {EXPORT_DTYPES} or None, found {weights_dtype!r}"
        )


def bundle(
    runs: Sequence[str | Path],
    out_dir: str | Path,
    *,
    name: str | None = None,
    postprocess: dict[str, float] | None = None,
    weights_dtype: str | None = None,
    tta_flips: bool = False,
) -> ModelCard:
    """Gather trained runs into one model folder: ``<run>.pkl`` per run and one card listing them all.

    Runs must agree on everything that changes how the input is read and the output is decoded
    (channels, output, spacing, orientation, normalisation, roi_size).

    Args:
        runs: Run folders written by :func:`brats_seg.training.recipe.train`.
        out_dir: Model folder to write.
        name: Model name; default the first run's, with ``-ensemble`` for several runs.
        postprocess: The card's post-processing settings (see :mod:`brats_seg.postprocess`);
            settings of 0 are left out. Default none.
        weights_dtype: ``"float16"`` or ``"float32"`` to store every learner's weights in that type
            (each run's learner is loaded after its sha256 check, converted and exported again, and
            the member's ``weights_dtype`` says so); default ``None`` copies the files unchanged.
            ``float16`` halves the files; :func:`brats_seg.model.load_model` computes in float32.
        tta_flips: The card's default for test-time flips (see :func:`brats_seg.inference.predict`).

    Raises:
        ModelError: for runs that read inputs differently, or an unknown ``weights_dtype``.
    """
    check_weights_dtype(weights_dtype, verb="bundle")
    runs = [Path(r) for r in runs]
    cards = [ModelCard.load(r / "model.json") for r in runs]
    check_runs(runs, cards)  # every run checked before anything is written
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    members = [
        bundle_member(run, card, out, weights_dtype=weights_dtype)
        for run, card in zip(runs, cards, strict=True)
    ]
    first = cards[0]
    extra = {k: v for k, v in first.extra.items() if k != "training"}
    extra["members"] = [{"file": fname, "training": training} for fname, _, training in members]
    held = [set(training.get("held_out_cases", [])) for _, _, training in members]
    extra["held_out_cases"] = sorted(set.intersection(*held)) if held else []
    extra["scores"] = {}
    merged = dataclasses.replace(
        first,
        name=name or (first.name + ("-ensemble" if len(runs) > 1 else "")),
        files=[fname for fname, _, _ in members],
        sha256={fname: sha for fname, sha, _ in members},
        postprocess={k: float(v) for k, v in (postprocess or {}).items() if v},
        tta_flips=bool(tta_flips),
        extra=extra,
    )
    merged.save(out / "model.json")
    return merged


def check_runs(runs: Sequence[Path], cards: Sequence[ModelCard]) -> None:
    """Refuse runs that cannot be bundled: other reading of inputs, the same folder name, a learner
    that is missing or changed (:func:`check_run_learner`).

    Raises:
        ModelError: naming the run and what was expected.
    """
    refuse_other_reading(runs, cards, verb="bundle")
    names = [run.name for run in runs]
    if len(set(names)) != len(names):
        raise ModelError(
            f"cannot bundle runs with the same folder name (each becomes <run>.pkl): {', '.join(names)}"
        )
    for run, card in zip(runs, cards, strict=True):
        check_run_learner(run, card)


def bundle_member(
    run: Path, card: ModelCard, out: Path, *, weights_dtype: str | None
) -> tuple[str, str, dict[str, Any]]:
    """Copy (or convert to ``weights_dtype``) a run's learner into the bundle as ``<run>.pkl``.

    Returns:
        The member's file name, its sha256 and its training record.
    """
    fname = f"{run.name}.pkl"
    training = dict(card.extra.get("training", {}))
    source_sha = card.sha256[card.files[0]]
    if weights_dtype is None:
        shutil.copyfile(run / card.files[0], out / fname)
        return fname, source_sha, training
    sha = export_as(run / card.files[0], source_sha, out / fname, weights_dtype)
    training["weights_dtype"] = weights_dtype
    training["converted_from"] = {"file": str(run / card.files[0]), "sha256": source_sha}
    return fname, sha, training


def check_run_learner(run: Path, card: ModelCard) -> None:
    """Refuse a run whose card does not list exactly one learner, or whose learner is missing or changed.

    Raises:
        ModelError: naming the run and what was expected.
    """
    if len(card.files) != 1:
        raise ModelError(
            f"cannot bundle {run}: expected a run card listing one learner file, found {card.files}"
        )
    path = run / card.files[0]
    if not path.is_file():
        raise ModelError(f"cannot bundle {run}: its learner {path} is missing")
    actual, expected = sha256_of(path), card.sha256.get(card.files[0])
    if actual != expected:
        raise ModelError(
            f"cannot bundle {run}: expected {path} to have sha256 {expected} (its card), found {actual}"
        )


def export_as(source: Path, expected_sha256: str, dest: Path, dtype: str) -> str:
    """Load an exported learner (sha256-checked), store its weights as ``dtype``, export it to ``dest``.

    Returns:
        The sha256 of the new file.
    """
    learn = load_learner_checked(source, expected_sha256, cpu=True)
    learn.model.to(getattr(torch, dtype))
    learn.path = dest.parent
    learn.export(dest.name)
    return sha256_of(dest)


def average(
    sources: Sequence[str | Path], out_dir: str | Path, *, weights_dtype: str | None = None
) -> ModelCard:
    """Average the weights of several runs of one fold into one learner (a "model soup").

    Fine-tunes that start from the same weights stay close enough for the mean of their weights to be
    a network of its own, often better than each of them, at the cost of one network when predicting.
    Every learner is loaded the safe way (sha256 checked against its card). Sources must hold out the
    same cases: a run folder's one learner, or a bundle's member of that fold (:func:`pick_member`),
    so that the average's scores on the held-out cases still come from unseen cases.

    Args:
        sources: Model folders: at least two, the first a run folder written by
            :func:`brats_seg.training.recipe.train` (its card and held-out cases are the average's).
        out_dir: Run folder to write (``model.pkl`` and ``model.json``), usable by :func:`bundle`.
        weights_dtype: ``"float16"`` or ``"float32"`` for the stored weights; default the first
            run's. The mean itself is computed in float32.

    Returns:
        The card written; its ``training.averaged_from`` lists each source learner and its sha256.

    Raises:
        ModelError: for fewer than two sources, a first source that is not a run, sources that hold
            out other cases, read inputs differently or hold other networks, or a changed learner.
    """
    sources = [Path(src) for src in sources]
    if len(sources) < 2:
        raise ModelError(f"average: expected at least two model folders, found {len(sources)}")
    cards = [ModelCard.load(src / "model.json") for src in sources]
    check_weights_dtype(weights_dtype, verb="average")
    if cards[0].extra.get("members"):
        raise ModelError(
            f"cannot average into {sources[0]}'s card: "
            "expected a run folder first (one learner), found a bundle"
        )
    refuse_other_reading(sources, cards, verb="average")
    picked = pick_same_fold(sources, cards)
    learners = [
        load_learner_checked(src / fname, card.sha256[fname], cpu=True)
        for (src, fname, _), card in zip(picked, cards, strict=True)
    ]
    learn = learners[0]
    dtype = getattr(torch, weights_dtype) if weights_dtype else next(learn.model.parameters()).dtype
    learn.model.load_state_dict(mean_state([lrn.model.state_dict() for lrn in learners], sources))
    learn.model.to(dtype)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    learn.path = out
    learn.export("model.pkl")
    return write_average_card(out, cards, picked, dtype=dtype)


def write_average_card(
    out: Path,
    cards: Sequence[ModelCard],
    picked: Sequence[tuple[Path, str, dict[str, Any]]],
    *,
    dtype: torch.dtype,
) -> ModelCard:
    """Write the card of an average exported to ``out/model.pkl``: the first source's card, with its
    training record saying which learners were averaged and on which cases they trained.

    Returns:
        The card written.
    """
    training = dict(picked[0][2])
    training["averaged_from"] = [
        {"file": str(src / fname), "sha256": card.sha256[fname], "training": training_brief(t)}
        for (src, fname, t), card in zip(picked, cards, strict=True)
    ]
    training["train_cases"] = sorted(set().union(*(t.get("train_cases", []) for _, _, t in picked)))
    training["weights_dtype"] = str(dtype).removeprefix("torch.")
    extra = {**cards[0].extra, "training": training, "scores": {}}
    card = dataclasses.replace(
        cards[0], files=["model.pkl"], sha256={"model.pkl": sha256_of(out / "model.pkl")}, extra=extra
    )
    card.save(out / "model.json")
    return card


def pick_same_fold(
    sources: Sequence[Path], cards: Sequence[ModelCard]
) -> list[tuple[Path, str, dict[str, Any]]]:
    """Each source's learner of the first source's fold, refusing sources of other folds.

    Returns:
        Per source: the folder, the learner's file name and its training record.

    Raises:
        ModelError: for a source that holds out other cases than the first, or trained on any of them.
    """
    held_out = cards[0].extra.get("training", {}).get("held_out_cases", [])
    picked: list[tuple[Path, str, dict[str, Any]]] = []
    for src, card in zip(sources, cards, strict=True):
        try:
            fname, training = pick_member(card, held_out, what=f"cannot average {src}")
        except StudyError as e:
            raise ModelError(str(e)) from e
        if set(training.get("held_out_cases", [])) != set(held_out):
            raise ModelError(
                f"cannot average {src}: it holds out {sorted(training.get('held_out_cases', []))}, expected "
                f"{sorted(held_out)} (those of {sources[0]}); only runs of the same fold can be averaged"
            )
        seen = set(held_out) & set(training.get("train_cases", []))
        if seen:
            raise ModelError(
                f"cannot average {src}: it was trained on {sorted(seen)}, which {sources[0]} holds out; "
                "expected learners that never saw the held-out cases"
            )
        picked.append((src, fname, training))
    return picked


def mean_state(states: Sequence[dict[str, torch.Tensor]], sources: Sequence[Path]) -> dict[str, torch.Tensor]:
    """The mean of networks' weights, computed in float32 and stored in the first network's dtypes;
    tensors that are not floating point (counters) are the first network's.

    Raises:
        ModelError: for a network with other layers or shapes than the first.
    """
    first = states[0]
    for src, state in zip(sources[1:], states[1:], strict=True):
        if state.keys() != first.keys() or any(state[k].shape != first[k].shape for k in state):
            raise ModelError(
                f"cannot average {src}: its network differs from {sources[0]}'s (other layers or shapes)"
            )
    mean = {}
    for key, ref in first.items():
        if ref.is_floating_point():
            mean[key] = torch.stack([state[key].float() for state in states]).mean(0).to(ref.dtype)
        else:
            mean[key] = ref.clone()
    return mean
