"""brats_seg: brain-tumour segmentation of one MRI study (T1, T1CE, T2, FLAIR) with a MONAI UNet.

The flow of one study (see ``docs/design.md``)::

    study = files.load_study(paths)               # validated Study
    labels = pipeline.segment(study, model)       # LabelMap on the study's grid (0/1/2/4)
    report.volumes(labels)                        # NCR/ED/ET and ET/TC/WT in mm3 and mL

For research only, not for clinical use.
"""

from .errors import ModelError, StudyError
from .types import MODALITIES, LabelMap, Study

__version__ = "0.1.0"

__all__ = ["MODALITIES", "LabelMap", "ModelError", "Study", "StudyError", "__version__"]
