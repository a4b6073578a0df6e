"""The model card (``model/model.json``): the single source of channel order, label meaning, output
type, spacing, orientation, normalisation and sliding-window settings.

Code reads these values from the card instead of repeating constants.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .errors import ModelError
from .types import MODALITIES

OUTPUT_TYPES = ("regions_sigmoid", "classes_softmax")

#: Environment variable that points at a model folder (``model.json`` + exported learner(s)).
MODEL_ENV = "BRATS_SEG_MODEL"
#: The model folder that ships with the repository.
BUNDLED_MODEL_DIR = Path(__file__).resolve().parents[1] / "model"


def default_model_dir() -> Path:
    """``$BRATS_SEG_MODEL`` if set, else the repository's ``model/`` folder."""
    import os

    env = os.environ.get(MODEL_ENV)
    return Path(env) if env else BUNDLED_MODEL_DIR


#: The settings a card's ``postprocess`` entry may hold (see
#: :func:`brats_seg.postprocess.apply_postprocess`).
POSTPROCESS_KEYS: tuple[str, ...] = ("min_component_mm3", "min_component_fraction", "et_min_mm3")


@dataclass
class ModelCard:
    """What a model expects and produces, and what is known about it.

    Attributes:
        name: Model name.
        files: Exported learner file names inside the model folder (several = an ensemble).
        sha256: sha256 of each file in ``files``; a pickle that does not match is refused.
        channels: Modalities in network-channel order, e.g. ``["T1", "T1CE", "T2", "FLAIR"]``.
        output: ``{"type": "regions_sigmoid", "regions": ["TC", "WT", "ET"], "threshold": 0.5}`` or
            ``{"type": "classes_softmax", "classes": [0, 1, 2, 4]}``.
        labels: Meaning of each output label value.
        spacing: Voxel size in mm the network works at; inputs are resampled to it and back.
        orientation: Axis codes (nibabel convention) the network was trained in, e.g. ``"LPS"``.
        roi_size: Sliding-window size in voxels at ``spacing``.
        overlap: Default sliding-window overlap.
        sw_batch_size: Default sliding-window batch size.
        mode: Default blending mode (``"gaussian"`` or ``"constant"``).
        normalisation: ``{"method": "zscore_nonzero", "clip_percentiles": [0.5, 99.5]}``.
        crop_margin: Margin in voxels (at the input spacing) around the brain bounding box.
        tta_flips: Default test-time flip augmentation.
        postprocess: Settings of :func:`brats_seg.postprocess.apply_postprocess`
            (``min_component_mm3``, ``min_component_fraction``, ``et_min_mm3``); empty means none.
        extra: Everything else in the JSON (architecture, versions, training data, scores, use).
    """

    name: str
    files: list[str]
    sha256: dict[str, str]
    channels: list[str]
    output: dict[str, Any]
    labels: dict[str, str] = field(
        default_factory=lambda: {"0": "background", "1": "NCR", "2": "ED", "4": "ET"}
    )
    spacing: list[float] = field(default_factory=lambda: [1.0, 1.0, 1.0])
    orientation: str = "LPS"
    roi_size: list[int] = field(default_factory=lambda: [128, 128, 128])
    overlap: float = 0.5
    sw_batch_size: int = 1
    mode: str = "gaussian"
    normalisation: dict[str, Any] = field(
        default_factory=lambda: {"method": "zscore_nonzero", "clip_percentiles": [0.5, 99.5]}
    )
    crop_margin: int = 8
    tta_flips: bool = False
    postprocess: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._check_channels_and_output()
        self._check_settings()
        self._check_postprocess()
        missing = [f for f in self.files if f not in self.sha256]
        if missing:
            raise ModelError(f"model card {self.name!r}: no sha256 recorded for {missing}")

    def _check_channels_and_output(self) -> None:
        """Refuse channels that are not the four modalities, and an output the decoder does not know."""
        if sorted(self.channels) != sorted(MODALITIES):
            raise ModelError(
                f"model card {self.name!r}: channels must be a permutation of {list(MODALITIES)}, "
                f"found {self.channels}"
            )
        kind = self.output.get("type")
        if kind not in OUTPUT_TYPES:
            raise ModelError(
                f"model card {self.name!r}: output type must be one of {OUTPUT_TYPES}, found {kind!r}"
            )
        if kind == "regions_sigmoid" and sorted(self.output.get("regions", [])) != ["ET", "TC", "WT"]:
            raise ModelError(
                f"model card {self.name!r}: regions_sigmoid needs regions TC, WT, ET; "
                f"found {self.output.get('regions')}"
            )
        if kind == "classes_softmax" and sorted(self.output.get("classes", [])) != [0, 1, 2, 4]:
            raise ModelError(
                f"model card {self.name!r}: classes_softmax needs classes [0, 1, 2, 4]; "
                f"found {self.output.get('classes')}"
            )
        if len(self.spacing) != 3 or len(self.roi_size) != 3:
            raise ModelError(f"model card {self.name!r}: spacing and roi_size need 3 values each")

    def _check_postprocess(self) -> None:
        """Refuse post-processing settings that are not known keys with finite numbers >= 0."""
        where = f"model card {self.name!r}: postprocess"
        if not isinstance(self.postprocess, dict):
            raise ModelError(f"{where} must be an object of settings, found {self.postprocess!r}")
        unknown = sorted(set(self.postprocess) - set(POSTPROCESS_KEYS))
        if unknown:
            raise ModelError(f"{where} expects keys from {list(POSTPROCESS_KEYS)}, found {unknown}")
        for key, value in self.postprocess.items():
            if not _is_number(value) or value < 0:
                raise ModelError(f"{where} {key} must be a finite number >= 0, found {value!r}")
            if key == "min_component_fraction" and value > 1:
                raise ModelError(f"{where} {key} must be at most 1, found {value!r}")

    def _check_settings(self) -> None:
        """Refuse window, geometry and decoding settings that would fail (or mislead) only at predict time."""
        problems = self._window_problems() + self._geometry_problems()
        if self.output.get("type") == "regions_sigmoid" and "threshold" in self.output:
            t = self.output["threshold"]
            if not (_is_number(t) and 0 < t < 1):
                problems.append(f"output threshold must be a number in (0, 1), found {t!r}")
        if problems:
            raise ModelError(f"model card {self.name!r}: " + "; ".join(problems))

    def _window_problems(self) -> list[str]:
        """What is wrong with the sliding-window settings (roi_size, overlap, batch, mode, flips)."""
        problems = []
        if not all(_is_integer(v) and 0 < v <= 1024 for v in self.roi_size):
            problems.append(f"roi_size must be 3 integers in [1, 1024], found {self.roi_size!r}")
        if not (_is_number(self.overlap) and 0 <= self.overlap < 1):
            problems.append(f"overlap must be a number in [0, 1), found {self.overlap!r}")
        if not (_is_integer(self.sw_batch_size) and self.sw_batch_size >= 1):
            problems.append(f"sw_batch_size must be a positive integer, found {self.sw_batch_size!r}")
        if self.mode not in ("gaussian", "constant"):
            problems.append(f"mode must be 'gaussian' or 'constant', found {self.mode!r}")
        if not isinstance(self.tta_flips, bool):
            problems.append(f"tta_flips must be true or false, found {self.tta_flips!r}")
        return problems

    def _geometry_problems(self) -> list[str]:
        """What is wrong with the geometry settings (spacing, crop margin, orientation)."""
        problems = []
        if not all(_is_number(v) and 0 < v <= 100 for v in self.spacing):
            problems.append(f"spacing must be 3 numbers in (0, 100] mm, found {self.spacing!r}")
        if not (_is_integer(self.crop_margin) and self.crop_margin >= 0):
            problems.append(f"crop_margin must be an integer >= 0, found {self.crop_margin!r}")
        codes = self.orientation
        if not (
            isinstance(codes, str)
            and len(codes) == 3
            and sorted(codes.translate(str.maketrans("RAI", "LPS"))) == ["L", "P", "S"]
        ):
            problems.append(
                "orientation must be 3 upper-case axis codes, one of L/R, P/A, S/I each (e.g. 'LPS'), "
                f"found {codes!r}"
            )
        return problems

    def to_dict(self) -> dict[str, Any]:
        """The card as a JSON-ready dict (``extra`` keys merged at the top level)."""
        d = asdict(self)
        extra = d.pop("extra")
        return {**d, **extra}

    def save(self, path: str | Path) -> None:
        """Write the card as indented JSON, atomically (a reader never sees half a card)."""
        import os

        path = Path(path)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(self.to_dict(), indent=2) + "\n")
        os.replace(tmp, path)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ModelCard:
        """Build a card from a dict; unknown keys are kept in ``extra``."""
        known = {f for f in cls.__dataclass_fields__ if f != "extra"}
        required = {"name", "files", "sha256", "channels", "output"}
        missing = sorted(required - set(d))
        if missing:
            raise ModelError(f"model card is missing required keys {missing}")
        kwargs = {k: v for k, v in d.items() if k in known}
        extra = {k: v for k, v in d.items() if k not in known}
        return cls(**kwargs, extra=extra)

    @classmethod
    def load(cls, path: str | Path) -> ModelCard:
        """Read ``model.json``.

        Raises:
            ModelError: if the file is missing, not JSON, or lacks required keys.
        """
        path = Path(path)
        if not path.is_file():
            raise ModelError(f"no model card at {path}: expected a model.json beside the exported learner")
        try:
            d = json.loads(path.read_text())
        except json.JSONDecodeError as e:
            raise ModelError(f"model card {path} is not valid JSON: {e}") from e
        return cls.from_dict(d)


def record_scores(
    card_path: str | Path,
    summary: dict[str, dict[str, float]],
    *,
    cases: list[str],
    command: str,
    key: str = "held_out",
) -> ModelCard:
    """Write measured scores into a model card under ``scores[key]``.

    Args:
        card_path: The ``model.json`` to update (the pickle's sha256 is unaffected).
        summary: What :func:`brats_seg.metrics.summarise` returned (per metric: mean, median, std, ...).
        cases: The cases the scores were measured on.
        command: The exact command that measured them.
        key: Name of this set of scores (e.g. ``"held_out"``, ``"held_out_tta"``).
    """
    card = ModelCard.load(card_path)
    scores = dict(card.extra.get("scores") or {})
    scores[key] = {
        "cases": list(cases),
        "n": len(cases),
        "command": command,
        "metrics": {k: {s: round(float(v), 6) for s, v in stats.items()} for k, stats in summary.items()},
    }
    card.extra["scores"] = scores
    card.save(card_path)
    return card


#: Card score keys that measure the model on cases it did not see, in the order they are preferred,
#: with how the cases were held out.
UNSEEN_SCORE_KEYS: dict[str, str] = {
    "cross_validation_nested": ", each scored by a member that never saw it, with post-processing chosen "
    "without it (nested cross-validation)",
    "cross_validation": ", each scored by a member that never saw it (cross-validation)",
    "held_out": " that no member saw (held-out cases)",
}


def _mean_of(metrics: dict[str, Any], key: str) -> float | None:
    """``metrics[key]["mean"]`` when it is a finite real number, else ``None``."""
    stats = metrics.get(key)
    value = stats.get("mean") if isinstance(stats, dict) else None
    if not _is_number(value) or abs(value) > 1e6:
        return None
    return float(value)


def _is_number(value: Any) -> bool:
    """A finite real number (not a bool)."""
    return not isinstance(value, bool) and isinstance(value, int | float) and _finite(value)


def _is_integer(value: Any) -> bool:
    """An integer (not a bool)."""
    return not isinstance(value, bool) and isinstance(value, int)


def _finite(value: float) -> bool:
    """``math.isfinite`` that is also False for an integer too large for a float."""
    import math

    try:
        return math.isfinite(value)
    except OverflowError:
        return False


def postprocess_line(card: ModelCard) -> str | None:
    """What the card's post-processing does to a prediction, in words, or ``None`` when it does nothing.

    Total like :func:`scores_line`: settings that are not positive numbers are left out, not raised on.

    Example: ``"tumour parts smaller than 50% of the largest part are removed"``.
    """
    settings = card.postprocess if isinstance(card.postprocess, dict) else {}

    def positive(key: str) -> float | None:
        value = settings.get(key)
        return float(value) if _is_number(value) and 0 < value < 1e12 else None

    rules = []
    keys = ("min_component_fraction", "min_component_mm3", "et_min_mm3")
    fraction, size, et_min = (positive(k) for k in keys)
    if fraction is not None and fraction >= 1:
        rules.append("only the largest tumour part is kept")
    elif fraction is not None:
        rules.append(f"tumour parts smaller than {fraction * 100:.3g}% of the largest part are removed")
    if size is not None:
        rules.append(f"tumour parts under {size / 1000:g} cm³ are removed (never the largest)")
    if et_min is not None:
        rules.append(f"enhancing tumour under {et_min / 1000:g} cm³ in all is relabelled necrotic core")
    return "; ".join(rules) or None


def _unseen_record(card: ModelCard) -> tuple[str, dict[str, Any], str] | None:
    """The card's preferred record of scores on unseen cases: ``(key, record, how the cases were held out)``.

    The order is :data:`UNSEEN_SCORE_KEYS`; when the card turns test-time flips on, the ``_tta``
    record of each kind comes first. Records without a usable Dice mean or case count are skipped.
    """
    scores = card.extra.get("scores") if isinstance(card.extra, dict) else None
    if not isinstance(scores, dict):
        return None
    for key, how in UNSEEN_SCORE_KEYS.items():
        for name in ([f"{key}_tta"] if card.tta_flips else []) + [key]:
            record = scores.get(name)
            metrics = record.get("metrics") if isinstance(record, dict) else None
            if not isinstance(metrics, dict):
                continue
            n = record.get("n")
            if isinstance(n, bool) or not isinstance(n, int) or n <= 0:
                continue
            if all(_mean_of(metrics, f"dice_{r}") is None for r in ("WT", "TC", "ET")):
                continue
            if card.tta_flips and name == key:
                how += ", measured without the test-time flips this card turns on"
            return name, record, how
    return None


def scores_line(card: ModelCard) -> str | None:
    """One line on how the model scored on cases it never saw, from the card's recorded scores.

    Uses ``scores["cross_validation_nested"]`` (written by ``benchmarks/tune_postprocess.py --record``:
    the post-processing setting chosen without the scored cases) when present, else
    ``scores["cross_validation"]``, else ``scores["held_out"]``; when the card turns test-time flips
    on, the ``_tta`` record of the same kind comes first. A record that is malformed
    (missing or non-numeric means, a wrong type anywhere) is skipped, never raised on: the line is
    shown in the dashboard for any card a user points it at.

    Args:
        card: A model card.

    Returns:
        E.g. ``"mean Dice WT 0.833, TC 0.745, ET 0.701; WT HD95 14.9 mm over 23 cases, each scored by a
        member that never saw it (cross-validation)"``, or ``None`` when the card records no such scores.
    """
    found = _unseen_record(card)
    if found is None:
        return None
    _, record, how = found
    metrics = record["metrics"]
    dice = [(r, _mean_of(metrics, f"dice_{r}")) for r in ("WT", "TC", "ET")]
    line = "mean Dice " + ", ".join(f"{r} {v:.3f}" for r, v in dice if v is not None)
    hd95 = _mean_of(metrics, "hd95_WT")
    if hd95 is not None:
        line += f"; WT HD95 {hd95:.1f} mm"
    return f"{line} over {record['n']} cases{how}"


def interval_line(card: ModelCard) -> str | None:
    """The 95% bootstrap intervals of the means that :func:`scores_line` states, when the card records them.

    Total like :func:`scores_line`: a region whose interval is missing or malformed is left out.

    Returns:
        E.g. ``"95% intervals of these means (bootstrap over the 23 cases): Dice WT 0.79–0.88,
        TC 0.68–0.85, ET 0.64–0.79; WT HD95 6.2–16.6 mm"``, or ``None``.
    """
    found = _unseen_record(card)
    if found is None:
        return None
    _, record, _ = found
    metrics = record["metrics"]

    def interval(key: str, fmt: str) -> str | None:
        stats = metrics.get(key)
        if not isinstance(stats, dict):
            return None
        low, high = stats.get("ci_low"), stats.get("ci_high")
        ok = all(_is_number(v) and abs(v) < 1e6 for v in (low, high))
        return f"{low:{fmt}}\u2013{high:{fmt}}" if ok and low <= high else None

    dice = [(r, interval(f"dice_{r}", ".2f")) for r in ("WT", "TC", "ET")]
    parts = [f"{r} {v}" for r, v in dice if v is not None]
    if not parts:
        return None
    line = f"95% intervals of these means (bootstrap over the {record['n']} cases): Dice " + ", ".join(parts)
    hd95 = interval("hd95_WT", ".1f")
    if hd95 is not None:
        line += f"; WT HD95 {hd95} mm"
    return line
