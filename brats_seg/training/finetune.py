"""Starting a run from a trained model's weights (``--init-from``)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch.nn as nn

from ..errors import StudyError
from ..model import load_model
from .bundle import pick_member


def init_weights(net: nn.Module, model_dir: str | Path, *, held_out: Sequence[str] = ()) -> dict[str, Any]:
    """Copy the weights of a trained model folder's learner into ``net`` (to fine-tune it).

    The learner is loaded the safe way (sha256 checked against its card first). From a run folder
    that is its one learner; from a bundle of fold models (e.g. the shipped ``model/``), the member
    of the same fold (:func:`~brats_seg.training.bundle.pick_member`). ``held_out`` are the cases the
    new run holds out: a source trained on any of them is refused, since its scores on them would no
    longer come from unseen cases.

    Returns:
        What was loaded: ``file``, ``sha256`` and the earlier run's ``training`` record.

    Raises:
        StudyError: naming the folder, when its network's layers or shapes differ from ``net``'s, when
            it was trained on a case in ``held_out``, or when no bundle member is of this fold.
    """
    source = load_model(model_dir, device="cpu")
    fname, training = pick_member(source.card, held_out, what=f"--init-from {model_dir}")
    seen = set(held_out) & set(training.get("train_cases", []))
    if seen:
        raise StudyError(
            f"--init-from {model_dir}: it was trained on {sorted(seen)}, which this run holds out; "
            "expected a model that never saw the held-out cases (e.g. the same fold of the same split)"
        )
    state = source.networks[source.card.files.index(fname)].state_dict()
    ours = net.state_dict()
    mismatched = sorted(k for k in ours if k not in state or state[k].shape != ours[k].shape)
    if mismatched or len(state) != len(ours):
        raise StudyError(
            f"--init-from {model_dir}: its network differs from the one being trained "
            f"({len(mismatched)} of {len(ours)} tensors missing or of another shape, e.g. {mismatched[:2]}); "
            "expected the same --channels and --num-res-units"
        )
    net.load_state_dict({k: v.to(ours[k].dtype) for k, v in state.items()})
    return {"file": str(Path(model_dir) / fname), "sha256": source.card.sha256[fname], "training": training}
