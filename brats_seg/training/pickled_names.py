"""Where the names that exported learners refer to live now, for loading learners pickled before a move.

An exported learner (``learn.export()``) pickles its loss, metrics and (empty) datasets by reference:
module and name. The shipped ``model/fold*.pkl`` were exported when the recipe was one module,
``brats_seg.train``; it became the package :mod:`brats_seg.training`. :data:`MOVED` maps each
pickled ``(module, name)`` to the module that holds the name now, and :class:`Unpickler` applies it.

This module is a ``pickle_module`` for ``torch.load`` (and fastai's ``load_learner``): it has
``Unpickler``, ``load`` and ``loads``. It imports nothing from the training libraries, so the model
loader can use it without them being imported.

Example (what :mod:`brats_seg.model` does)::

    from .training import pickled_names
    learn = load_learner(path, cpu=True, pickle_module=pickled_names)
    module = pickled_names.current_module(module, name)  # when listing the modules a pickle needs
"""

from __future__ import annotations

import io
import pickle
from typing import IO, Any

#: ``(module, name)`` as pickled -> the module holding ``name`` now. Each entry is a name the shipped
#: learners (``model/fold0.pkl`` ... ``fold4.pkl``) refer to (listed with ``pickletools``).
MOVED: dict[tuple[str, str], str] = {
    ("brats_seg.train", "DiceBCELoss"): "brats_seg.training.network",
    ("brats_seg.train", "dice_tc"): "brats_seg.training.network",
    ("brats_seg.train", "dice_wt"): "brats_seg.training.network",
    ("brats_seg.train", "dice_et"): "brats_seg.training.network",
    ("brats_seg.train", "PatchDataset"): "brats_seg.training.data",
    ("brats_seg.train", "FixedPatchDataset"): "brats_seg.training.data",
}


def current_module(module: str, name: str) -> str:
    """The module that holds ``module.name`` now (``module`` itself unless it moved)."""
    return MOVED.get((module, name), module)


class Unpickler(pickle.Unpickler):
    """``pickle.Unpickler`` that finds moved names (:data:`MOVED`) where they live now."""

    def find_class(self, module: str, name: str) -> Any:
        """The class or function ``module.name``, or where it moved."""
        return super().find_class(current_module(module, name), name)


def load(file: IO[bytes], **kwargs: Any) -> Any:
    """``pickle.load`` with :class:`Unpickler`."""
    return Unpickler(file, **kwargs).load()


def loads(data: bytes, **kwargs: Any) -> Any:
    """``pickle.loads`` with :class:`Unpickler`."""
    return Unpickler(io.BytesIO(data), **kwargs).load()
