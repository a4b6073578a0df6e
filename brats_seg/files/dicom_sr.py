"""Writing a study's tumour volumes as a DICOM Structured Report (TID 1500, highdicom).

One measurement group per BraTS label (NCR, ED, ET) and region (TC, WT), each with its volume in mL,
made by the model (a device observer named after it); the report's evidence is the DICOM
Segmentation it measures, so patient and study attributes are copied from there.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .dicom_seg import SEGMENT_TYPES

__all__ = ["write_volume_report"]

#: The finding of each measurement group: labels as in the DICOM SEG, regions as a neoplasm.
_FINDINGS: dict[str, tuple[str, str, str]] = {
    "NCR": SEGMENT_TYPES[1],
    "ED": SEGMENT_TYPES[2],
    "ET": SEGMENT_TYPES[4],
    "TC": ("108369006", "SCT", "Neoplasm"),
    "WT": ("108369006", "SCT", "Neoplasm"),
}


def write_volume_report(
    seg: Any,
    volumes: Mapping[str, Mapping[str, Mapping[str, float]]],
    *,
    model_name: str,
    software_version: str,
) -> Any:
    """A Comprehensive 3D SR of ``volumes`` (:func:`brats_seg.report.volumes`) of the DICOM SEG ``seg``.

    Args:
        seg: The DICOM Segmentation (a pydicom Dataset) the volumes were measured on.
        volumes: ``{"labels": {"NCR": {"mL": ...}, ...}, "regions": {"TC": ..., "WT": ...}}``.
        model_name: The model (the observer device and the algorithm).
        software_version: The software that made it.

    Returns:
        The SR as a pydicom Dataset (``save_as`` writes it), in the SEG's study, in a new series
        described ``brats-seg <model_name> volumes`` (the PACS node finds it by that).
    """
    import highdicom as hd
    from pydicom.sr.coding import Code
    from pydicom.uid import generate_uid

    algorithm = hd.sr.AlgorithmIdentification(name=model_name[:64], version=software_version[:64])
    groups = _measurement_groups(volumes, algorithm)
    observer = hd.sr.ObserverContext(
        observer_type=Code("121007", "DCM", "Device"),
        observer_identifying_attributes=hd.sr.DeviceObserverIdentifyingAttributes(
            uid=generate_uid(), name=model_name[:64], model_name=software_version[:64]
        ),
    )
    report = hd.sr.MeasurementReport(
        observation_context=hd.sr.ObservationContext(observer_device_context=observer),
        procedure_reported=Code("241601008", "SCT", "MR of head"),
        imaging_measurements=groups,
    )
    return hd.sr.Comprehensive3DSR(
        evidence=[seg],
        content=report[0],
        series_instance_uid=generate_uid(),
        series_number=int(getattr(seg, "SeriesNumber", 0) or 0) + 1,
        series_description=f"brats-seg {model_name} volumes"[:64],
        sop_instance_uid=generate_uid(),
        instance_number=1,
        manufacturer="brats-seg",
        is_complete=True,
    )


def _measurement_groups(
    volumes: Mapping[str, Mapping[str, Mapping[str, float]]], algorithm: Any
) -> list[Any]:
    """One TID 1501 group per label and region: its name as tracking identifier, its volume in mL."""
    import highdicom as hd
    from pydicom.sr.coding import Code
    from pydicom.uid import generate_uid

    groups = []
    for section in ("labels", "regions"):
        for name, entry in volumes[section].items():
            measurement = hd.sr.Measurement(
                name=Code("118565006", "SCT", "Volume"),
                value=round(float(entry["mL"]), 3),
                unit=Code("mL", "UCUM", "milliliter"),
                algorithm_id=algorithm,
            )
            groups.append(
                hd.sr.MeasurementsAndQualitativeEvaluations(
                    tracking_identifier=hd.sr.TrackingIdentifier(uid=generate_uid(), identifier=name),
                    finding_type=Code(*_FINDINGS[name]),
                    algorithm_id=algorithm,
                    measurements=[measurement],
                )
            )
    return groups
