"""A research-PACS node: find MR studies on a PACS, segment them, and store the results back.

- :mod:`.net`: the DICOM network client (pynetdicom): C-FIND of studies and their MR series, C-GET
  of the series (no listening port needed), C-STORE of result files; :class:`PacsConfig` holds host,
  port and AE titles (options or a JSON file).
- :mod:`.node`: :func:`run_study` (one study from query to a stored DICOM SEG and SR) and
  :func:`watch` (every new MR study once, with a JSON state of done and failed studies).

Example::

    from brats_seg.model import load_model
    from brats_seg.pacs import PacsConfig, run_study

    config = PacsConfig.load("pacs.json")
    run_study(config, "1.2.3.4", model=load_model(None), output_dir="out")
"""

from .net import PacsConfig, find_mr_series, find_series, find_studies, get_series, store_files
from .node import load_state, result_descriptions, run_study, save_state, watch, watch_pass

__all__ = [
    "PacsConfig",
    "find_mr_series",
    "find_series",
    "find_studies",
    "get_series",
    "load_state",
    "result_descriptions",
    "run_study",
    "save_state",
    "store_files",
    "watch",
    "watch_pass",
]
