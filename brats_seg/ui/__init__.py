"""The Voilà dashboard (``app.ipynb``): one study uploaded, predicted, reviewed and downloaded.

Modules: :mod:`~brats_seg.ui.app` (:class:`App`, the wiring), :mod:`~brats_seg.ui.state` (the
session), :mod:`~brats_seg.ui.layout` (the page's widgets), :mod:`~brats_seg.ui.views` (the three
linked planes), :mod:`~brats_seg.ui.harmonise` (the raw-study section), :mod:`~brats_seg.ui.jobs`
(loading and measuring), :mod:`~brats_seg.ui.downloads` (the result files),
:mod:`~brats_seg.ui.example` (the example study), :mod:`~brats_seg.ui.entries` (the file list),
:mod:`~brats_seg.ui.render` (HTML of the text parts), :mod:`~brats_seg.ui.model_line` (the model).
"""

from .app import App

__all__ = ["App"]
