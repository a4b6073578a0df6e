"""Where the names that exported learners refer to live now, for loading learners pickled before a move.

An exported learner (``learn.export()``) pickles its loss, metrics and (empty) datasets by reference:
module and name. The shipped ``model/fold*.pkl`` were exported when the recipe was one module,
``brats_seg.train``; it became the package :mod:`brats_seg.training`. :data:`MOVED` maps each
pickled ``(module, name)`` to the module that holds the name now.

The model loader (:func:`brats_seg.model.renamed_module` and its unpickler) reads this table; the
module imports nothing, so loading a model does not import the training libraries.
"""

from __future__ import annotations

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
