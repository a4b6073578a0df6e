"""Load an exported fastai learner (or several: an ensemble) together with its model card.

Loading a pickle runs code. This module only loads files from a model folder the project ships or
the user names, checks each pickle's sha256 against the card before unpickling, and never unpickles
uploaded bytes.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import pickletools
import threading
import warnings
import zipfile
from dataclasses import dataclass
from pathlib import Path

import torch

from .card import ModelCard
from .errors import ModelError

#: Environment variable that points at a model folder (``model.json`` + exported learner(s)).
MODEL_ENV = "BRATS_SEG_MODEL"

#: The model folder that ships with the repository.
BUNDLED_MODEL_DIR = Path(__file__).resolve().parents[1] / "model"


@dataclass
class Model:
    """Networks in eval mode plus the card that says how to use them.

    Attributes:
        card: The model card.
        networks: One ``torch.nn.Module`` per exported learner (several = an ensemble, averaged).
        directory: The model folder.
    """

    card: ModelCard
    networks: list[torch.nn.Module]
    directory: Path


def default_model_dir() -> Path:
    """``$BRATS_SEG_MODEL`` if set, else the repository's ``model/`` folder."""
    env = os.environ.get(MODEL_ENV)
    return Path(env) if env else BUNDLED_MODEL_DIR


def sha256_of(path: Path) -> str:
    """Hex sha256 of a file."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def pickle_modules(path: Path) -> set[str]:
    """Names of the modules a torch-saved pickle refers to (read without unpickling)."""
    modules: set[str] = set()
    try:
        with zipfile.ZipFile(path) as zf:
            name = next(n for n in zf.namelist() if n.endswith("data.pkl"))
            data = zf.read(name)
    except (zipfile.BadZipFile, StopIteration):
        return modules
    strings: list[str] = []
    for op, arg, _ in pickletools.genops(data):
        if op.name == "GLOBAL":
            modules.add(str(arg).split(" ")[0])
        elif op.name in ("SHORT_BINUNICODE", "BINUNICODE", "UNICODE"):
            strings.append(str(arg))
        elif op.name == "STACK_GLOBAL" and len(strings) >= 2:
            modules.add(strings[-2])
    return modules


def missing_modules(path: Path) -> list[str]:
    """Modules a pickle refers to that cannot be imported here."""
    missing = []
    for mod in sorted(pickle_modules(path)):
        try:
            if importlib.util.find_spec(mod) is None:
                missing.append(mod)
        except (ImportError, ValueError):
            missing.append(mod)
    return missing


def load_learner_checked(path: Path, expected_sha256: str, *, cpu: bool = True):
    """Load one exported learner after checking its sha256.

    Raises:
        ModelError: on a sha256 mismatch, or when the pickle refers to a module that is not
            importable (fastai surfaces that as a misleading ``UnboundLocalError: 'res'``).
    """
    from fastai.learner import load_learner

    if not path.is_file():
        raise ModelError(f"exported learner {path} not found")
    actual = sha256_of(path)
    if actual != expected_sha256:
        raise ModelError(
            f"refusing to unpickle {path.name}: sha256 {actual} does not match {expected_sha256} recorded in the model card"
        )
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return load_learner(path, cpu=cpu)
    except (UnboundLocalError, ModuleNotFoundError, AttributeError) as e:
        missing = missing_modules(path)
        detail = f"it refers to modules that cannot be imported here: {', '.join(missing)}" if missing else str(e)
        raise ModelError(
            f"cannot load {path.name}: {detail}. Every class or function the learner uses must live in an "
            f"importable module (e.g. brats_seg.train), not in __main__ or a notebook"
        ) from e


_CACHE: dict[tuple[str, str], Model] = {}
_LOCK = threading.Lock()


def load_model(directory: str | Path | None = None, *, device: str | torch.device | None = None) -> Model:
    """Load the model folder's card and learner(s), once per process.

    Args:
        directory: Folder with ``model.json`` and the exported learner(s); default
            :func:`default_model_dir`.
        device: Where the networks live; default CUDA when available, else CPU.
    """
    directory = Path(directory) if directory is not None else default_model_dir()
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    key = (str(directory.resolve()), str(device))
    with _LOCK:
        if key in _CACHE:
            return _CACHE[key]
        card = ModelCard.load(directory / "model.json")
        if not card.files:
            raise ModelError(f"model card {directory / 'model.json'} lists no learner files")
        networks = []
        for name in card.files:
            learn = load_learner_checked(directory / name, card.sha256[name], cpu=device.type == "cpu")
            net = learn.model.to(device).eval()
            networks.append(net)
        model = Model(card=card, networks=networks, directory=directory)
        _CACHE[key] = model
        return model
