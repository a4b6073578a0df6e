"""Names: which sequence a file or a DICOM series holds, and which study a file belongs to.

Reads only names, never file contents: :func:`detect_modality` tells T1, T1CE, T2, FLAIR (or a
segmentation, ``SEG``) from a NIfTI file name, :func:`series_modality` from a DICOM series
description, :func:`study_id` and :func:`infer_study_name` the study's name, and :func:`assign_files`
decides which of a study's files is which sequence (a user's mapping first, the names otherwise).

Example::

    detect_modality("Brats18_TCIA10_628_1_t1ce.nii.gz")   # 'T1CE'
    series_modality("AX T1 POST GD")                       # 'T1CE'
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path, PurePosixPath

from ..errors import StudyError
from ..types import MODALITIES

__all__ = [
    "NIFTI_SUFFIXES",
    "SEG",
    "assign_files",
    "basename",
    "detect_modality",
    "infer_study_name",
    "is_hidden",
    "is_nifti_name",
    "normalise_mapping",
    "normalise_modality",
    "series_modality",
    "split_suffix",
    "study_id",
]

#: File name suffixes read as NIfTI (compared case-insensitively), longest first.
NIFTI_SUFFIXES: tuple[str, ...] = (".nii.gz", ".nii")


#: The modality key of a ground-truth segmentation file.
SEG: str = "SEG"


#: Mapping values that tell :func:`load_study` to skip a file.
_IGNORE_VALUES = frozenset({"IGNORE", "SKIP", "NONE", ""})


_SEPARATORS = re.compile(r"[^_\-.\s]+")


# --------------------------------------------------------------------------------------------------
# File names
# --------------------------------------------------------------------------------------------------

#: One-token spellings (lower case, on the last token of the stem).
_SINGLE_TOKEN: dict[str, str] = {
    # T1 (native, pre-contrast)
    "t1": "T1",
    "t1n": "T1",
    "t1w": "T1",
    "t1native": "T1",
    "t1pre": "T1",
    # T1 post-contrast (gadolinium)
    "t1ce": "T1CE",
    "t1c": "T1CE",
    "t1gd": "T1CE",
    "t1post": "T1CE",
    "t1contrast": "T1CE",
    "t1postcontrast": "T1CE",
    "t1wce": "T1CE",
    "t1wgd": "T1CE",
    "t1+c": "T1CE",
    "t1+gd": "T1CE",
    # T2
    "t2": "T2",
    "t2w": "T2",
    # FLAIR (a T2-weighted sequence: must win over T2)
    "flair": "FLAIR",
    "t2f": "FLAIR",
    "t2flair": "FLAIR",
    "t2wflair": "FLAIR",
    "fla": "FLAIR",  # scanner exports (dcm2niix-style suffixes)
    "tirm": "FLAIR",  # Siemens turbo inversion recovery (dark fluid)
    "tse": "T2",  # a bare turbo spin echo; "t1_tse" stays T1 (see _ACQUISITION_TOKENS)
    # ground truth
    "seg": SEG,
    "segmentation": SEG,
    "label": SEG,
    "labels": SEG,
    "mask": SEG,
    "truth": SEG,
    "gt": SEG,
    "groundtruth": SEG,
}

#: Multi-token spellings (the last two or three tokens). ``None`` marks a name that must not be
#: taken for a modality even though its last token looks like one.
_MULTI_TOKEN: dict[tuple[str, ...], str | None] = {
    ("t1", "post", "contrast"): "T1CE",
    ("t1", "pre", "contrast"): "T1",
    ("t1", "gd"): "T1CE",
    ("t1", "ce"): "T1CE",
    ("t1", "c"): "T1CE",
    ("t1", "post"): "T1CE",
    ("t1", "contrast"): "T1CE",
    ("t1", "postcontrast"): "T1CE",
    ("t1w", "ce"): "T1CE",
    ("t1w", "gd"): "T1CE",
    ("gd", "t1"): "T1CE",
    ("gd", "t1w"): "T1CE",
    ("t1", "pre"): "T1",
    ("t1", "native"): "T1",
    ("t1", "post", "gad"): "T1CE",
    ("t1", "post", "gd"): "T1CE",
    ("t1", "gad"): "T1CE",
    ("dark", "fluid"): "FLAIR",
    ("t2", "flair"): "FLAIR",
    ("t2w", "flair"): "FLAIR",
    ("ground", "truth"): SEG,
    ("brain", "mask"): None,
}

#: Processing suffixes that may follow the modality token (``T1_brain``, ``flair_reg``).
_PROCESSING_TOKENS = frozenset(
    {
        "brain",
        "bet",
        "ss",
        "skullstripped",
        "stripped",
        "reg",
        "registered",
        "coreg",
        "n4",
        "biascorr",
        "resampled",
        "norm",
        "normalized",
        "normalised",
        "preproc",
    }
)


#: Acquisition words a scanner appends after the sequence (``FLAIR_AX``, ``t1_tse_tra``): skipped
#: when what stands before them names a sequence; a name made of them alone (``scan_tse``) is read as is.
_ACQUISITION_TOKENS = frozenset(
    {
        "ax",
        "axial",
        "tra",
        "trans",
        "transverse",
        "sag",
        "sagittal",
        "cor",
        "coronal",
        "2d",
        "3d",
        "se",
        "tse",
        "fse",
        "ir",
    }
)


def split_suffix(filename: str) -> tuple[str, str]:
    """Split a file name into its stem and NIfTI suffix ('' when it has none)."""
    base = basename(filename)
    lower = base.lower()
    for suffix in NIFTI_SUFFIXES:
        if lower.endswith(suffix) and len(base) > len(suffix):
            return base[: -len(suffix)], base[-len(suffix) :]
    return base, ""


def basename(name: str) -> str:
    """The last component of a POSIX or Windows path."""
    return PurePosixPath(str(name).replace("\\", "/")).name


def is_nifti_name(filename: str) -> bool:
    """Whether a file name ends in ``.nii`` or ``.nii.gz`` (any case) after a non-empty stem."""
    return bool(split_suffix(filename)[1])


def _parse_name(filename: str) -> tuple[str | None, str]:
    """Detect the modality of a file name and return it with the study-ID part of the stem.

    Returns:
        ``(modality, id_part)``: the modality or None, and the stem without the modality (and
        processing) tokens and trailing separators (the whole stem when nothing matched).
    """
    stem, _ = split_suffix(filename)
    spans = [(m.start(), m.group().lower()) for m in _SEPARATORS.finditer(stem)]
    tokens = [t for _, t in spans]
    end = len(tokens)
    while end > 1 and tokens[end - 1] in _PROCESSING_TOKENS:
        end -= 1
    short = end
    while short > 1 and tokens[short - 1] in _ACQUISITION_TOKENS:
        short -= 1
    modality, used = _match_tokens(tokens, short) if short < end else (None, 0)
    if modality is None:
        modality, used = _match_tokens(tokens, end)
    else:
        end = short
    if modality is None:
        return None, stem
    first = end - used
    # BIDS: sub-01_ce-gd_T1w is a post-contrast T1.
    if modality == "T1" and "ce" in tokens[: first - 1]:
        modality = "T1CE"
    id_part = stem[: spans[first][0]].rstrip("_-. ") if first < len(spans) else stem
    return modality, id_part


def _match_tokens(tokens: Sequence[str], end: int) -> tuple[str | None, int]:
    """The modality named by the tokens that end at ``end`` (three, two or one of them), and how many."""
    for n in (3, 2):
        if end >= n and tuple(tokens[end - n : end]) in _MULTI_TOKEN:
            return _MULTI_TOKEN[tuple(tokens[end - n : end])], n
    if end >= 1 and tokens[end - 1] in _SINGLE_TOKEN:
        return _SINGLE_TOKEN[tokens[end - 1]], 1
    return None, 0


def study_id(filename: str) -> str | None:
    """The study-ID part of a file name, e.g. ``Brats18_CBICA_ABM_1`` of ``Brats18_CBICA_ABM_1_t1ce.nii.gz``.

    Returns:
        The name without its sequence (and processing) tokens, or None when the name shows no
        sequence or nothing before it (``t1.nii.gz``).
    """
    modality, id_part = _parse_name(filename)
    return (id_part or None) if modality else None


def detect_modality(filename: str) -> str | None:
    """Tell which sequence a file holds from its name.

    Matching is case-insensitive and looks only at the last token(s) of the stem (the name without
    ``.nii``/``.nii.gz``, split on ``_``, ``-``, ``.`` and spaces), so study IDs that contain
    ``T1`` or ``t2`` elsewhere do not confuse it. Trailing processing tokens such as ``brain``,
    ``reg`` or ``n4`` are skipped.

    Recognised spellings include BraTS 2018-2021 (``_t1``, ``_t1ce``, ``_t2``, ``_flair``,
    ``_seg``), BraTS 2023+ (``-t1n``, ``-t1c``, ``-t2w``, ``-t2f``, ``-seg``) and common variants
    (``T1w``, ``T1Gd``, ``T1-Gd``, ``T1c``, ``T1post``, ``T2w``, ``T2-FLAIR``, ``t2flair``,
    ``label``/``labels``/``mask``/``truth``/``gt`` for a segmentation) and scanner exports
    (``_fla``, ``T1_POST_GAD``, ``T1wCE``, ``tirm``, ``dark-fluid``, a bare ``tse`` for T2, and
    acquisition words after the sequence such as ``FLAIR_AX`` or ``t1_tse_tra``).

    Args:
        filename: A file name or path.

    Returns:
        ``"T1"``, ``"T1CE"``, ``"T2"``, ``"FLAIR"``, ``"SEG"`` or None when the name is not
        recognised.

    Examples:
        >>> detect_modality("Brats18_TCIA10_628_1_t1ce.nii.gz")
        'T1CE'
        >>> detect_modality("BraTS-GLI-00001-000-t2f.nii.gz")
        'FLAIR'
        >>> detect_modality("scan_003.nii") is None
        True
    """
    return _parse_name(filename)[0]


def normalise_modality(value: str | None, *, filename: str) -> str | None:
    """Canonical modality for a mapping value; None means "ignore this file".

    Args:
        value: What the user wrote: a modality (any case), a file-name spelling such as ``t1ce``, or
            ``IGNORE``/``SKIP``/``NONE``/empty.
        filename: The file (or series) the value is for, named in the message.

    Raises:
        StudyError: For a value that names no modality.
    """
    if value is None or str(value).strip().upper() in _IGNORE_VALUES:
        return None
    upper = str(value).strip().upper()
    if upper in MODALITIES or upper == SEG:
        return upper
    detected = detect_modality(str(value).strip())
    if detected is not None:
        return detected
    raise StudyError(
        f"{filename}: mapping gives unknown modality {value!r}; expected one of "
        f"{', '.join((*MODALITIES, SEG))} (or 'IGNORE' to skip the file)"
    )


def is_hidden(name: str) -> bool:
    """Whether a file or folder is left out of a study: hidden (``.DS_Store``) or macOS zip debris."""
    return name.startswith(".") or name == "__MACOSX"


# --------------------------------------------------------------------------------------------------
# Assigning a study's files to sequences, and naming the study
# --------------------------------------------------------------------------------------------------


def normalise_mapping(mapping: Mapping[str, str] | None) -> dict[str, str | None]:
    """A user's mapping keyed by base name, values canonical modalities (None: ignore the file).

    Raises:
        StudyError: For a value that names no modality (:func:`normalise_modality`).
    """
    if not mapping:
        return {}
    return {basename(k): normalise_modality(v, filename=basename(k)) for k, v in mapping.items()}


def assign_files(
    paths: Sequence[Path], mapping: dict[str, str | None], where: str, *, partial: bool = False
) -> dict[str, Path]:
    """Decide the modality of each file and check there is one file per sequence.

    Args:
        paths: The study's NIfTI files.
        mapping: Base name -> canonical modality, None to ignore the file (:func:`normalise_mapping`).
        where: How messages name the whole input (folder, zip or "the given files").
        partial: Ignore mapping keys that name none of ``paths`` instead of refusing them.

    Returns:
        The file of each modality found (the four sequences, and ``SEG`` when there is one).

    Raises:
        StudyError: For no files, an unknown mapping key, an unrecognised name, two files for one
            sequence (or two segmentations), or a missing sequence.
    """
    if not paths:
        raise StudyError(
            f"{where}: no NIfTI files (.nii, .nii.gz) found; expected 4 (T1, T1CE, T2, FLAIR) and "
            "optionally a segmentation"
        )
    names = [p.name for p in paths]
    unknown_keys = sorted(set(mapping) - set(names))
    if unknown_keys and not partial:
        raise StudyError(
            f"{unknown_keys[0]}: named in the mapping but not among the study's files ({', '.join(names)})"
        )
    found = _group_by_modality(paths, mapping)
    _check_one_per_sequence(found, names, where)
    return {m: files[0] for m, files in found.items()}


def _group_by_modality(paths: Sequence[Path], mapping: dict[str, str | None]) -> dict[str, list[Path]]:
    """The files of each modality (mapping first, then the name); refuse names that say nothing."""
    found: dict[str, list[Path]] = {}
    unrecognised: list[str] = []
    for path in paths:
        modality = mapping[path.name] if path.name in mapping else detect_modality(path.name)
        if path.name in mapping and modality is None:
            continue  # explicitly ignored
        if modality is None:
            unrecognised.append(path.name)
        else:
            found.setdefault(modality, []).append(path)
    if unrecognised:
        raise StudyError(
            f"{', '.join(unrecognised)}: cannot tell which sequence the file name means; expected a "
            "name ending in _t1, _t1ce, _t2, _flair, _seg (BraTS 2018-2021) or -t1n, -t1c, -t2w, "
            "-t2f, -seg (BraTS 2023); rename the file or pass an explicit mapping, e.g. "
            f"mapping={{{unrecognised[0]!r}: 'T1CE'}} (values T1, T1CE, T2, FLAIR, SEG or IGNORE)"
        )
    return found


def _check_one_per_sequence(found: dict[str, list[Path]], names: Sequence[str], where: str) -> None:
    """Refuse two segmentations, two files for one sequence, or a missing sequence."""
    segs = found.get(SEG, [])
    if len(segs) > 1:
        raise StudyError(
            f"{', '.join(p.name for p in segs)}: more than one segmentation file; expected at most one"
        )
    for modality in MODALITIES:
        files = found.get(modality, [])
        if len(files) > 1:
            raise StudyError(
                f"{' and '.join(p.name for p in files)}: {len(files)} files for {modality}; expected "
                "one file per sequence (use a mapping to say which is which)"
            )
    missing = [m for m in MODALITIES if m not in found]
    if missing:
        have = ", ".join(f"{m} ({found[m][0].name})" for m in (*MODALITIES, SEG) if m in found) or "none"
        raise StudyError(
            f"{where}: missing {', '.join(missing)}; expected the 4 sequences T1, T1CE, T2, FLAIR, "
            f"found {have} among {', '.join(names)}"
        )


def infer_study_name(paths: Sequence[Path]) -> str:
    """Study name from file names: the common study-ID prefix, e.g. ``Brats18_CBICA_ABM_1``.

    Falls back to the common prefix of the stems, then to the ID that scanner exports put between
    series descriptions, then to ``"study"``.
    """
    ids = [_parse_name(p.name)[1] for p in paths]
    common = os.path.commonprefix(ids).rstrip("_-. ")
    if not common:
        common = os.path.commonprefix([split_suffix(p.name)[0] for p in paths]).rstrip("_-. ")
    return common or _common_tokens(ids) or "study"


def _common_tokens(ids: Sequence[str]) -> str:
    """The ID that scanner exports put between series descriptions (``T1_AX_TCGA-FG-6692_SE_10``): the
    longest ``_``-separated token with a digit that every ID holds, else the longest run of tokens, or ''."""
    tokens = [i.split("_") for i in ids]
    first = tokens[0] if tokens else []
    shared = [
        t
        for t in first
        if any(c.isdigit() for c in t) and len(t) >= 4 and all(t in other for other in tokens[1:])
    ]
    if shared:
        return max(shared, key=len)
    best = ""
    for a in range(len(first)):
        for b in range(len(first), a, -1):
            run = "_".join(first[a:b])
            if len(run) > len(best) and all(f"_{run}_" in f"_{'_'.join(t)}_" for t in tokens[1:]):
                best = run
                break
    return best.strip("_-. ")


# --------------------------------------------------------------------------------------------------
# DICOM series descriptions
# --------------------------------------------------------------------------------------------------

_TOKENS = re.compile(r"\+?[a-z0-9]+")
_CONTRAST = frozenset(
    {"ce", "c", "gd", "gad", "gado", "post", "contrast", "postcontrast", "+c", "+gd", "km", "mitkm"}
)
_NATIVE = frozenset(
    {"pre", "native", "nativ", "precontrast", "plain", "wo", "without", "non", "noncontrast", "no"}
)
_T1 = frozenset(
    {"t1", "t1w", "t1n", "mprage", "spgr", "bravo", "tfl", "t1mprage", "t1tse", "t1se", "t1fl3d", "t1space"}
)
_T1_CONTRAST = frozenset({"t1c", "t1ce", "t1gd", "t1post", "t1wce", "t1wgd"})
_T2 = frozenset({"t2", "t2w", "t2tse", "t2fse", "t2space"})
_FLAIR = frozenset({"flair", "t2f", "t2flair", "tirm", "darkfluid"})
#: Words that make a series something else: T2*, susceptibility, diffusion, perfusion, dynamic,
#: subtraction, proton density, quantitative maps, angiography, localizers.
_OTHER = frozenset(
    {
        "star",
        "t2star",
        "swi",
        "swan",
        "map",
        "maps",
        "t1map",
        "t2map",
        "dwi",
        "diff",
        "diffusion",
        "adc",
        "trace",
        "dti",
        "epi",
        "perf",
        "perfusion",
        "dyn",
        "dynamic",
        "dce",
        "dsc",
        "sub",
        "subtraction",
        "pd",
        "inv1",
        "inv2",
        "mp2rage",
        "tof",
        "mra",
        "asl",
        "localizer",
        "loc",
        "scout",
        "survey",
        "fa",
        "mip",
    }
)
_T2_GRADIENT_ECHO = frozenset({"gre", "ffe", "fl2d", "medic", "merge", "hemo"})


def series_modality(description: str) -> str | None:
    """Tell which sequence a series holds from its description.

    BraTS-style names (``t1ce``, ``T2-FLAIR``, ``-t2f``) and common scanner descriptions
    (``AX T1 POST GD``, ``t2_tirm_tra_dark-fluid``, ``T1 MPRAGE``) are recognised. A word that
    marks another kind of series (``T2*``, ``SWI``, ``DWI``, ``ADC``, ``MAP``, ``DYN``, ``PD``, a
    localizer) makes it None, as does a T2 gradient echo: better "no series for T2" than a wrong one.
    FLAIR wins over T2 but not over T1 (``T1 FLAIR`` is a T1); a T1 with a contrast word (``ce``,
    ``gd``, ``post``, ``contrast``, ``+c``) is T1CE unless it is negated (``pre``, ``w/o``,
    ``non-contrast``, ``C-``).

    Args:
        description: A SeriesDescription (or ProtocolName).

    Returns:
        ``"T1"``, ``"T1CE"``, ``"T2"``, ``"FLAIR"``, or None when it is none of these (or unclear).

    Examples:
        >>> series_modality("AX T1 POST GD")
        'T1CE'
        >>> series_modality("t2_tirm_tra_dark-fluid")
        'FLAIR'
        >>> series_modality("AX T2* GRE") is None
        True
    """
    text = description.lower()
    text = re.sub(r"dark[\s_-]*fluid|(?<![a-z0-9])da[-_]?fl(?![a-z0-9])", " darkfluid ", text)
    text = text.replace("*", " star ")
    text = re.sub(r"(?<![a-z0-9])(?:w/o|c-)(?![a-z0-9])", " wo ", text)
    text = re.sub(r"(?<![a-z0-9])c\+", " +c ", text)
    text = text.replace("+", " +")
    tokens = set(_TOKENS.findall(text))
    if tokens & _OTHER or any(t.startswith(("swi", "swan")) for t in tokens):
        return None
    t1 = bool(tokens & (_T1 | _T1_CONTRAST))
    if tokens & _FLAIR and not t1:
        return "FLAIR"
    if t1:
        if tokens & _NATIVE:
            return "T1"
        return "T1CE" if tokens & (_CONTRAST | _T1_CONTRAST) else "T1"
    if tokens & _T2:
        return None if tokens & _T2_GRADIENT_ECHO else "T2"
    return None
