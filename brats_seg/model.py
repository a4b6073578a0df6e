"""Load an exported fastai learner (or several: an ensemble) together with its model card.

Loading a pickle runs code. This module only loads files from a model folder the project ships or
the user names, checks each pickle's sha256 against the card before unpickling, and never unpickles
uploaded bytes.
"""

from __future__ import annotations

import _compat_pickle
import hashlib
import importlib.util
import pickletools
import threading
import warnings
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from .card import BUNDLED_MODEL_DIR, MODEL_ENV, ModelCard, default_model_dir  # noqa: F401 (re-exported)
from .errors import ModelError


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


def sha256_of(path: Path) -> str:
    """Hex sha256 of a file (``hashlib.file_digest``)."""
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


_STRING_OPS = frozenset({"SHORT_BINUNICODE", "BINUNICODE", "BINUNICODE8", "UNICODE", "STRING", "BINSTRING", "SHORT_BINSTRING"})
_GET_OPS = frozenset({"GET", "BINGET", "LONG_BINGET"})
_PUT_OPS = frozenset({"PUT", "BINPUT", "LONG_BINPUT"})


def _compat_module(module: str, name: str, proto: int) -> str:
    """The module the unpickler imports for ``module.name`` (Python 2 names are mapped, as
    ``pickle.Unpickler(fix_imports=True)`` does for protocols below 3)."""
    if proto < 3:
        if (module, name) in _compat_pickle.NAME_MAPPING:
            return _compat_pickle.NAME_MAPPING[(module, name)][0]
        return _compat_pickle.IMPORT_MAPPING.get(module, module)
    return module


def _pickle_bytes(path: Path) -> bytes | None:
    """The ``data.pkl`` record of a torch zip file, or None when ``path`` is not one."""
    try:
        with zipfile.ZipFile(path) as zf:
            name = next(n for n in zf.namelist() if n.endswith("data.pkl"))
            return zf.read(name)
    except (zipfile.BadZipFile, StopIteration, OSError):
        return None


def pickle_modules(path: Path) -> set[str]:
    """Names of the modules a torch-saved pickle refers to (read without unpickling).

    The opcodes are walked with :mod:`pickletools`; module names that reach ``STACK_GLOBAL`` through
    the memo (``BINGET``) are resolved, and Python 2 names written by protocol 2 pickles (e.g.
    ``__builtin__``) are mapped to the modules the unpickler actually imports (``builtins``).

    Args:
        path: An exported learner (a torch zip file).

    Returns:
        The module names; empty when ``path`` is not a torch zip file or cannot be parsed.
    """
    data = _pickle_bytes(path)
    if data is None:
        return set()
    modules: set[str] = set()
    memo: dict[int, object] = {}
    pushed: list[object] = []  # what each opcode pushed (None: something other than a string)
    proto = 0
    try:
        for op, arg, _ in pickletools.genops(data):
            kind = op.name
            if kind == "PROTO":
                proto = int(arg)
            elif kind == "GLOBAL":
                module, _, name = str(arg).partition(" ")
                modules.add(_compat_module(module, name, proto))
                pushed.append(None)
            elif kind == "STACK_GLOBAL":
                module, name = (pushed[-2], pushed[-1]) if len(pushed) >= 2 else (None, None)
                if isinstance(module, str) and isinstance(name, str):
                    modules.add(_compat_module(module, name, proto))
                pushed.append(None)
            elif kind in _STRING_OPS:
                pushed.append(arg.decode("latin-1") if isinstance(arg, bytes) else str(arg))
            elif kind in _GET_OPS:
                pushed.append(memo.get(int(arg)))
            elif kind in _PUT_OPS:
                memo[int(arg)] = pushed[-1] if pushed else None
            elif kind == "MEMOIZE":
                memo[len(memo)] = pushed[-1] if pushed else None
            elif kind in ("FRAME", "STOP"):  # framing may fall between a module name and its attribute
                continue
            else:
                pushed.append(None)
    except (ValueError, IndexError):  # not a pickle: let the loader report what it finds
        return modules
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


def _unimportable(path: Path, missing: list[str]) -> ModelError:
    return ModelError(
        f"cannot load {path}: it refers to modules that cannot be imported here: {', '.join(missing)}; "
        "expected every class or function the learner uses to live in an importable module "
        "(e.g. brats_seg.train), not in __main__ or a notebook"
    )


def load_learner_checked(path: Path, expected_sha256: str, *, cpu: bool = True) -> Any:
    """Load one exported learner after checking its sha256 and the modules it refers to.

    Nothing is unpickled unless the file's sha256 matches the card and every module the pickle
    names can be imported.

    Args:
        path: The exported learner (``learn.export()`` output).
        expected_sha256: Its sha256 as recorded in the model card.
        cpu: Map the learner to the CPU.

    Returns:
        The fastai ``Learner``.

    Raises:
        ModelError: when the file is missing, on a sha256 mismatch, or when the pickle refers to a
            module that is not importable (fastai surfaces that as a misleading
            ``UnboundLocalError: 'res'``).
    """
    from fastai.learner import load_learner

    if not path.is_file():
        raise ModelError(f"exported learner {path} not found; expected the file the model card lists")
    actual = sha256_of(path)
    if actual != expected_sha256:
        raise ModelError(
            f"refusing to unpickle {path}: expected sha256 {expected_sha256} (recorded in the model card), "
            f"found {actual}"
        )
    missing = missing_modules(path)
    if missing:
        raise _unimportable(path, missing)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return load_learner(path, cpu=cpu)
    except (UnboundLocalError, ImportError, AttributeError) as e:
        missing = missing_modules(path)
        if missing:
            raise _unimportable(path, missing) from e
        raise ModelError(
            f"cannot load {path}: {type(e).__name__}: {e}. Every class or function the learner uses must "
            "live in an importable module (e.g. brats_seg.train), not in __main__ or a notebook"
        ) from e


def _load_card(path: Path) -> ModelCard:
    """``ModelCard.load`` with every problem reported as a ``ModelError`` that names ``path``."""
    try:
        card = ModelCard.load(path)
    except ModelError as e:
        if str(path) in str(e):
            raise
        raise ModelError(f"{path}: {e}") from e
    except (TypeError, AttributeError, ValueError) as e:
        raise ModelError(f"{path}: invalid model card ({type(e).__name__}: {e}); expected the keys of ModelCard") from e
    return card


_CACHE: dict[tuple[str, str], Model] = {}
_LOCK = threading.Lock()


def load_model(directory: str | Path | None = None, *, device: str | torch.device | None = None) -> Model:
    """Load the model folder's card and learner(s), once per process.

    Args:
        directory: Folder with ``model.json`` and the exported learner(s); default
            :func:`default_model_dir`.
        device: Where the networks live; default CUDA when available, else CPU.

    Returns:
        The card and the networks in eval mode (cached per folder and device).

    Raises:
        ModelError: naming the file, for a missing or invalid ``model.json``, a missing learner file,
            a sha256 that does not match the card, or a learner that refers to unimportable modules.
    """
    directory = Path(directory) if directory is not None else default_model_dir()
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    key = (str(directory.resolve()), str(device))
    with _LOCK:
        if key in _CACHE:
            return _CACHE[key]
        card = _load_card(directory / "model.json")
        if not card.files:
            raise ModelError(f"model card {directory / 'model.json'}: expected at least one learner file, found none")
        networks = []
        for name in card.files:
            learn = load_learner_checked(directory / name, card.sha256[name], cpu=device.type == "cpu")
            net = learn.model.float().to(device).eval()  # weights may be stored as float16
            networks.append(net)
        model = Model(card=card, networks=networks, directory=directory)
        _CACHE[key] = model
        return model
