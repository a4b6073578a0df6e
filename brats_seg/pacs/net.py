"""The DICOM network side of the PACS node (pynetdicom): C-FIND, C-GET and C-STORE as a client.

C-GET needs no listening port: the PACS sends the instances back over our own association, so this
node works behind a firewall. Settings come from :class:`PacsConfig` (options or a JSON file).
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

from ..errors import PacsError, PacsUnreachableError

__all__ = ["PacsConfig", "find_mr_series", "find_series", "find_studies", "get_series", "store_files"]

#: Transfer syntaxes we accept for the MR images a C-GET brings (uncompressed first).
GET_TRANSFER_SYNTAXES = (
    "1.2.840.10008.1.2.1",  # Explicit VR Little Endian
    "1.2.840.10008.1.2",  # Implicit VR Little Endian
    "1.2.840.10008.1.2.1.99",  # Deflated Explicit VR Little Endian
    "1.2.840.10008.1.2.5",  # RLE Lossless (pydicom decodes it with numpy)
    "1.2.840.10008.1.2.4.70",  # JPEG Lossless SV1 (needs a pixel-data plug-in to decode)
    "1.2.840.10008.1.2.4.90",  # JPEG 2000 Lossless (likewise)
)


@dataclass(frozen=True)
class PacsConfig:
    """Where the PACS is and who we are.

    Attributes:
        host: The PACS's host name or address.
        port: Its DICOM port.
        called_ae: Its AE title.
        calling_ae: Our AE title (the PACS must know it, with our host, to allow C-GET and C-STORE).
        timeout: Seconds to wait for a connection, an association or a reply.
    """

    host: str
    port: int
    called_ae: str
    calling_ae: str = "BRATS_SEG"
    timeout: float = 30.0

    @property
    def name(self) -> str:
        """``AE@host:port``, how messages name the PACS."""
        return f"PACS {self.called_ae}@{self.host}:{self.port}"

    @classmethod
    def load(cls, path: str | Path | None = None, **overrides: Any) -> PacsConfig:
        """Settings from a JSON file (keys as the attributes), with ``overrides`` that are not None on top.

        Raises:
            PacsError: For a file that cannot be read, unknown keys, or a missing host, port or called_ae.
        """
        values: dict[str, Any] = {}
        if path is not None:
            try:
                values = json.loads(Path(path).read_text())
            except (OSError, ValueError) as e:
                raise PacsError(f"{path}: expected a JSON object of PACS settings, found: {e}") from None
            known = {f.name for f in fields(cls)}
            if not isinstance(values, dict) or set(values) - known:
                raise PacsError(
                    f"{path}: expected a JSON object with keys among {sorted(known)}, found "
                    f"{sorted(values) if isinstance(values, dict) else type(values).__name__}"
                )
        values.update({k: v for k, v in overrides.items() if v is not None})
        missing = [k for k in ("host", "port", "called_ae") if k not in values]
        if missing:
            raise PacsError(f"PACS settings: expected host, port and called_ae, missing {', '.join(missing)}")
        values["port"] = int(values["port"])
        return replace(cls(values["host"], values["port"], values["called_ae"]), **values)


@contextmanager
def associate(config: PacsConfig, contexts: Sequence[Any], **kwargs: Any) -> Iterator[Any]:
    """An established association with the PACS (released on exit).

    Args:
        config: The PACS.
        contexts: Abstract syntaxes (SOP classes) to request, or ``(syntax, transfer syntaxes)`` pairs.
        **kwargs: For ``AE.associate`` (``ext_neg``, ``evt_handlers``).

    Raises:
        PacsUnreachableError: When the PACS cannot be reached, rejects or aborts the association.
    """
    from pynetdicom import AE

    ae = AE(ae_title=config.calling_ae)
    ae.connection_timeout = ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = config.timeout
    for context in contexts:
        syntax, transfer = context if isinstance(context, tuple) else (context, None)
        ae.add_requested_context(syntax, transfer) if transfer else ae.add_requested_context(syntax)
    assoc = ae.associate(config.host, config.port, ae_title=config.called_ae, **kwargs)
    if not assoc.is_established:
        found = "it rejected the association (is our AE title known to it, and its AE title right?)"
        if not assoc.is_rejected:
            found = _unreachable(config) or "it aborted the association"
        raise PacsUnreachableError(
            f"{config.name}: expected an association for calling AE {config.calling_ae}, found {found}"
        )
    try:
        yield assoc
    finally:
        assoc.release()


def _unreachable(config: PacsConfig) -> str | None:
    """Why a TCP connection to the PACS fails (pynetdicom reports that as an abort), or None."""
    import socket

    try:
        with socket.create_connection((config.host, config.port), timeout=config.timeout):
            return None
    except OSError as e:
        return f"no connection ({e.strerror or e}: unreachable; is it running, are host and port right?)"


def _find(config: PacsConfig, query: Any) -> list[Any]:
    """The identifiers a study-root C-FIND of ``query`` answers with."""
    from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelFind as FIND

    found = []
    with associate(config, [FIND]) as assoc:
        for status, identifier in assoc.send_c_find(query, FIND):
            if status is None:
                raise PacsError(f"{config.name}: expected C-FIND replies, found none (timed out or aborted)")
            if status.Status not in (0x0000, 0xFF00, 0xFF01):
                raise PacsError(f"{config.name}: C-FIND failed with status 0x{status.Status:04X}")
            if status.Status in (0xFF00, 0xFF01) and identifier is not None:
                found.append(identifier)
    return found


def find_studies(
    config: PacsConfig, *, study_uid: str = "", modality: str = "MR", since: str = ""
) -> list[dict[str, str]]:
    """Studies with ``modality`` images (all, or the one ``study_uid``), by a study-level C-FIND.

    Args:
        config: The PACS.
        study_uid: One StudyInstanceUID, or ``""`` for all.
        modality: Studies with images of this modality.
        since: ``YYYYMMDD``: only studies of that StudyDate or later (a range match); ``""``: no limit.

    Returns:
        One ``{"StudyInstanceUID", "PatientID", "StudyDate", "AccessionNumber"}`` per study, oldest
        StudyDate first (then by UID).
    """
    from pydicom.dataset import Dataset

    query = Dataset()
    query.QueryRetrieveLevel = "STUDY"
    query.StudyInstanceUID = study_uid
    query.ModalitiesInStudy = modality
    keys = ("StudyInstanceUID", "PatientID", "StudyDate", "AccessionNumber")
    for key in keys[1:]:
        setattr(query, key, "")
    query.StudyDate = f"{since}-" if since else ""
    studies = [{k: str(ds.get(k, "") or "") for k in keys} for ds in _find(config, query)]
    return sorted(studies, key=lambda s: (s["StudyDate"], s["StudyInstanceUID"]))


def find_mr_series(config: PacsConfig, study_uid: str) -> list[dict[str, str]]:
    """The MR series of one study, by a series-level C-FIND.

    Returns:
        ``{"SeriesInstanceUID", "SeriesDescription", "SeriesNumber"}`` per series, by series number.

    Raises:
        PacsError: When the PACS holds no such study, or it has no MR series.
    """
    from pydicom.dataset import Dataset

    query = Dataset()
    query.QueryRetrieveLevel = "SERIES"
    query.StudyInstanceUID = study_uid
    query.Modality = "MR"
    query.SeriesInstanceUID = query.SeriesDescription = query.SeriesNumber = ""
    keys = ("SeriesInstanceUID", "SeriesDescription", "SeriesNumber")
    series = [{k: str(ds.get(k, "") or "") for k in keys} for ds in _find(config, query)]
    if not series:
        raise PacsError(
            f"{config.name}: expected study {study_uid} with MR series (T1, T1CE, T2, FLAIR), found "
            "no MR series (no such study, or one without MR images)"
        )
    return sorted(series, key=lambda s: (int(s["SeriesNumber"] or 0), s["SeriesInstanceUID"]))


def find_series(config: PacsConfig, study_uid: str) -> list[dict[str, str]]:
    """Every series of one study, of any modality, by a series-level C-FIND (empty for no such study).

    Returns:
        ``{"SeriesInstanceUID", "Modality", "SeriesDescription"}`` per series.
    """
    from pydicom.dataset import Dataset

    query = Dataset()
    query.QueryRetrieveLevel = "SERIES"
    query.StudyInstanceUID = study_uid
    query.SeriesInstanceUID = query.Modality = query.SeriesDescription = ""
    keys = ("SeriesInstanceUID", "Modality", "SeriesDescription")
    return [{k: str(ds.get(k, "") or "") for k in keys} for ds in _find(config, query)]


def get_series(config: PacsConfig, study_uid: str, series: Sequence[dict[str, str]], folder: Path) -> int:
    """C-GET each series into ``folder/S<n>/`` (n counts the series): a DICOM study folder.

    Returns:
        The number of instances received.

    Raises:
        PacsError: When a C-GET fails or brings nothing.
    """
    from pydicom.dataset import Dataset
    from pynetdicom import build_role, evt
    from pynetdicom.sop_class import MRImageStorage
    from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelGet as GET

    received = [0]
    target = [folder]

    def on_store(event: Any) -> int:
        ds = event.dataset
        ds.file_meta = event.file_meta
        target[0].mkdir(parents=True, exist_ok=True)
        ds.save_as(target[0] / f"{received[0]:05d}.dcm", enforce_file_format=True)
        received[0] += 1
        return 0x0000

    handlers = [(evt.EVT_C_STORE, on_store)]
    # one context per transfer syntax: the PACS then sends each image as it is stored, when we accept that
    contexts = [GET, *((MRImageStorage, [syntax]) for syntax in GET_TRANSFER_SYNTAXES)]
    with associate(
        config, contexts, ext_neg=[build_role(MRImageStorage, scp_role=True)], evt_handlers=handlers
    ) as assoc:
        for n, item in enumerate(series, start=1):
            target[0] = folder / f"S{n}"
            query = Dataset()
            query.QueryRetrieveLevel = "SERIES"
            query.StudyInstanceUID, query.SeriesInstanceUID = study_uid, item["SeriesInstanceUID"]
            for status, _identifier in assoc.send_c_get(query, GET):
                if status is None or status.Status not in (0x0000, 0xFF00, 0xB000):
                    code = "no reply" if status is None else f"status 0x{status.Status:04X}"
                    raise PacsError(
                        f"{config.name}: expected the images of series {item['SeriesInstanceUID']} by "
                        f"C-GET, found {code}"
                    )
    if not received[0]:
        raise PacsError(f"{config.name}: expected MR images of study {study_uid} by C-GET, found none")
    return received[0]


def store_files(config: PacsConfig, paths: Sequence[Path]) -> None:
    """C-STORE DICOM files (a SEG, an SR) to the PACS.

    Raises:
        PacsError: When the PACS refuses one.
    """
    from pydicom import dcmread

    datasets = [dcmread(path) for path in paths]
    contexts = sorted({str(ds.SOPClassUID) for ds in datasets})
    transfer = ["1.2.840.10008.1.2.1", "1.2.840.10008.1.2"]
    with associate(config, [(syntax, transfer) for syntax in contexts]) as assoc:
        for path, ds in zip(paths, datasets, strict=True):
            status = assoc.send_c_store(ds)
            if not status or status.Status not in (0x0000, 0xB000, 0xB007, 0xB006):
                code = "no reply" if not status else f"status 0x{status.Status:04X}"
                raise PacsError(f"{config.name}: expected {path.name} to be stored, found {code}")
