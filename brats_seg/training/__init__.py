"""The training recipe of the original fastai + MONAI work: ``brats-seg train``, ``pack``, ``bundle``
and ``average``.

One module per concern; start at :mod:`.recipe` (``train()``, a short sequence of the steps below).

- :mod:`.config`: the knobs (``TrainConfig``) and their checks, importable without torch.
- :mod:`.data`: preprocessed cases, random and fixed patch datasets; :mod:`.pack`: cases in one ``.npz``;
  :mod:`.sources`: a folder of cases or a pack, by case name.
- :mod:`.augment`: MONAI augmentations and the coil bias field.
- :mod:`.network`: the UNet, the Dice + BCE loss and the Dice metrics.
- :mod:`.splits`: k-fold splits and ``splits.json``.
- :mod:`.callbacks`: fastai callbacks (history CSV, checkpoints, epoch log, timing, CPU bfloat16,
  channels-last); :mod:`.schedule`: the resumable one-cycle schedule, ``lr_find`` and the time budget;
  :mod:`.devices`: precision and hardware.
- :mod:`.finetune`: starting from a trained model's weights.
- :mod:`.export`: ``learn.export()`` plus the model card; :mod:`.bundle`: bundles of fold models and
  weight averages.
- :mod:`.pickled_names`: where the names that exported learners refer to live now.

This file imports nothing, so that :mod:`brats_seg.model` can read :mod:`.pickled_names` without
importing the training libraries.
"""
