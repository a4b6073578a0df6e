"""Load an exported fastai learner (or several: an ensemble) together with its model card.

Loading a pickle runs code. This module only loads files from a model folder the project ships or
the user names, checks each pickle's sha256 against the card before unpickling, and never unpickles
uploaded bytes.
"""

from __future__ import annotations

import _compat_pickle
import hashlib
import importlib.util
import pickle
import pickletools
import threading
import types
import warnings
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from .card import ModelCard, default_model_dir
from .errors import ModelError
from .runtime import OpenVinoNetwork, openvino_network, resolve_backend
from .training.pickled_names import MOVED

#: What runs one member of the ensemble: the torch module, or the OpenVINO network converted from it.
Network = torch.nn.Module | OpenVinoNetwork


@dataclass
class Model:
    """Networks in eval mode plus the card that says how to use them.

    Attributes:
        card: The model card.
        networks: One network per exported learner (several = an ensemble, averaged): a
            ``torch.nn.Module``, or a :class:`brats_seg.runtime.OpenVinoNetwork` converted from it.
        directory: The model folder.
        backend: What runs the networks, ``"torch"`` or ``"openvino"``.
    """

    card: ModelCard
    networks: list[Network]
    directory: Path
    backend: str = "torch"


def sha256_of(path: Path) -> str:
    """Hex sha256 of a file (``hashlib.file_digest``)."""
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


#: Old -> new module names, for learners pickled before a module they refer to moved as a whole.
#: Names that moved one by one (``brats_seg.train`` became the package ``brats_seg.training``) are in
#: :data:`brats_seg.training.pickled_names.MOVED`. :func:`missing_modules` checks the new names and
#: :func:`load_learner_checked` unpickles with them, so shipped learners keep loading after a move
#: without re-exporting them.
MODULE_RENAMES: dict[str, str] = {}


def renamed_module(module: str, name: str | None = None) -> str:
    """The module the unpickler imports for ``module.name`` a pickle refers to (see ``MODULE_RENAMES``)."""
    if name is not None and (module, name) in MOVED:
        return MOVED[(module, name)]
    return MODULE_RENAMES.get(module, module)


def current_modules(module: str) -> list[str]:
    """Where the names a pickle takes from ``module`` live now: the modules they moved to, else one."""
    moved = sorted({new for (old, _name), new in MOVED.items() if old == module})
    return moved or [renamed_module(module)]


class RenamingUnpickler(pickle.Unpickler):
    """``pickle.Unpickler`` that imports each name from where it lives now (see :func:`renamed_module`)."""

    def find_class(self, module: str, name: str, /) -> Any:
        """Import ``name`` from the module's current name."""
        return super().find_class(renamed_module(module, name), name)


def _renaming_pickle_module() -> types.ModuleType:
    """A copy of :mod:`pickle` whose ``Unpickler`` applies ``MODULE_RENAMES`` (for ``torch.load``)."""
    module = types.ModuleType("brats_seg_renaming_pickle")
    module.__dict__.update({k: v for k, v in vars(pickle).items() if not k.startswith("__")})
    module.Unpickler = RenamingUnpickler
    return module


_STRING_OPS = frozenset(
    {"SHORT_BINUNICODE", "BINUNICODE", "BINUNICODE8", "UNICODE", "STRING", "BINSTRING", "SHORT_BINSTRING"}
)
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


@dataclass
class _PickleScan:
    """State of a walk over pickle opcodes that collects the modules of the globals they load.

    ``pushed`` holds what each opcode pushed (a string, or None for anything else), so that the
    module and attribute names ``STACK_GLOBAL`` takes are known, also when they come from the memo.
    """

    modules: set[str] = field(default_factory=set)
    memo: dict[int, object] = field(default_factory=dict)
    pushed: list[object] = field(default_factory=list)
    proto: int = 0

    def top(self) -> object:
        """What the last opcode pushed (None when nothing was)."""
        return self.pushed[-1] if self.pushed else None

    def on_proto(self, arg: Any) -> None:
        self.proto = int(arg)

    def on_global(self, arg: Any) -> None:
        module, _, name = str(arg).partition(" ")
        self.modules.add(_compat_module(module, name, self.proto))
        self.pushed.append(None)

    def on_stack_global(self, arg: Any) -> None:
        module, name = (self.pushed[-2], self.pushed[-1]) if len(self.pushed) >= 2 else (None, None)
        if isinstance(module, str) and isinstance(name, str):
            self.modules.add(_compat_module(module, name, self.proto))
        self.pushed.append(None)

    def on_string(self, arg: Any) -> None:
        self.pushed.append(arg.decode("latin-1") if isinstance(arg, bytes) else str(arg))

    def on_get(self, arg: Any) -> None:
        self.pushed.append(self.memo.get(int(arg)))

    def on_put(self, arg: Any) -> None:
        self.memo[int(arg)] = self.top()

    def on_memoize(self, arg: Any) -> None:
        self.memo[len(self.memo)] = self.top()

    def on_nothing(self, arg: Any) -> None:
        """Framing (which may fall between a module name and its attribute) and STOP push nothing."""

    def on_other(self, arg: Any) -> None:
        self.pushed.append(None)

    def step(self, opcode: str, arg: Any) -> None:
        """Take one opcode into account."""
        getattr(self, _SCAN_HANDLERS.get(opcode, "on_other"))(arg)


#: Opcode name -> the ``_PickleScan`` method that handles it (the others push one value).
_SCAN_HANDLERS: dict[str, str] = {
    "PROTO": "on_proto",
    "GLOBAL": "on_global",
    "STACK_GLOBAL": "on_stack_global",
    "MEMOIZE": "on_memoize",
    "FRAME": "on_nothing",
    "STOP": "on_nothing",
    **dict.fromkeys(_STRING_OPS, "on_string"),
    **dict.fromkeys(_GET_OPS, "on_get"),
    **dict.fromkeys(_PUT_OPS, "on_put"),
}


def pickle_modules(path: Path) -> set[str]:
    """Names of the modules a torch-saved pickle refers to (read without unpickling).

    The opcodes are walked with :mod:`pickletools`; module names that reach ``STACK_GLOBAL`` through
    the memo (``BINGET``) are resolved, and Python 2 names written by protocol 2 pickles (e.g.
    ``__builtin__``) are mapped to the modules the unpickler actually imports (``builtins``). The
    names are the pickle's own: ``MODULE_RENAMES`` is not applied here.

    Args:
        path: An exported learner (a torch zip file).

    Returns:
        The module names; empty when ``path`` is not a torch zip file or cannot be parsed.
    """
    data = _pickle_bytes(path)
    if data is None:
        return set()
    scan = _PickleScan()
    try:
        for op, arg, _ in pickletools.genops(data):
            scan.step(op.name, arg)
    except (ValueError, IndexError):  # not a pickle: let the loader report what it finds
        pass
    return scan.modules


def missing_modules(path: Path) -> list[str]:
    """Modules a pickle refers to that cannot be imported here (under their ``MODULE_RENAMES`` name).

    Args:
        path: An exported learner (a torch zip file).

    Returns:
        The pickle's own module names whose current name cannot be imported, sorted.
    """
    missing = []
    for mod in sorted(pickle_modules(path)):
        try:
            if any(importlib.util.find_spec(current) is None for current in current_modules(mod)):
                missing.append(mod)
        except (ImportError, ValueError):
            missing.append(mod)
    return missing


def _unimportable(path: Path, missing: list[str]) -> ModelError:
    return ModelError(
        f"cannot load {path}: it refers to modules that cannot be imported here: {', '.join(missing)}; "
        "expected every class or function the learner uses to live in an importable module "
        "(e.g. brats_seg.training), not in __main__ or a notebook"
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
    _check_sha256(path, expected_sha256)
    from fastai.learner import load_learner

    missing = missing_modules(path)
    if missing:
        raise _unimportable(path, missing)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return load_learner(path, cpu=cpu, pickle_module=_renaming_pickle_module())
    except (UnboundLocalError, ImportError, AttributeError) as e:
        missing = missing_modules(path)
        if missing:
            raise _unimportable(path, missing) from e
        raise ModelError(
            f"cannot load {path}: {type(e).__name__}: {e}. Every class or function the learner uses must "
            "live in an importable module (e.g. brats_seg.training), not in __main__ or a notebook"
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
        raise ModelError(
            f"{path}: invalid model card ({type(e).__name__}: {e}); expected the keys of ModelCard"
        ) from e
    return card


_CACHE: dict[tuple[str, str, str], Model] = {}
_LOCK = threading.Lock()


def _check_sha256(path: Path, expected_sha256: str) -> None:
    """Refuse a missing learner, or one whose sha256 is not the card's (before any use of it)."""
    if not path.is_file():
        raise ModelError(f"exported learner {path} not found; expected the file the model card lists")
    actual = sha256_of(path)
    if actual != expected_sha256:
        raise ModelError(
            f"refusing to unpickle {path}: expected sha256 {expected_sha256} (recorded in the model card), "
            f"found {actual}"
        )


def _load_network(path: Path, card: ModelCard, device: torch.device, backend: str) -> Network:
    """One member: the torch module of the checked learner, or its OpenVINO network (converted once)."""
    sha256 = card.sha256[path.name]
    shape = {"in_channels": len(card.channels), "roi_size": card.roi_size}
    if backend == "openvino":
        _check_sha256(path, sha256)
        cached = openvino_network(sha256, **shape)
        if cached is not None:
            return cached
    learn = load_learner_checked(path, sha256, cpu=device.type == "cpu")
    net = learn.model.float().to(device).eval()  # weights may be stored as float16
    if backend == "openvino":
        return openvino_network(sha256, net=net, **shape)
    return net


def load_model(
    directory: str | Path | None = None,
    *,
    device: str | torch.device | None = None,
    backend: str = "torch",
) -> Model:
    """Load the model folder's card and learner(s), once per process.

    Args:
        directory: Folder with ``model.json`` and the exported learner(s); default
            :func:`default_model_dir`.
        device: Where the networks live; default CUDA when available, else CPU.
        backend: ``"torch"`` (torch modules), ``"openvino"`` (OpenVINO networks, CPU only), ``"auto"``
            (OpenVINO on the CPU when installed, else torch) or None (``$BRATS_SEG_BACKEND``, default
            ``auto``); see :func:`brats_seg.runtime.resolve_backend`. OpenVINO networks are converted
            from the sha256-checked learners once and then read from the cache without unpickling.

    Returns:
        The card and the networks in eval mode (cached per folder, device and backend).

    Raises:
        ModelError: naming the file, for a missing or invalid ``model.json``, a missing learner file,
            a sha256 that does not match the card, or a learner that refers to unimportable modules.
        ValueError: for an unknown backend, or OpenVINO asked for where it cannot run.
    """
    directory = Path(directory) if directory is not None else default_model_dir()
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    backend = resolve_backend(backend, device)
    key = (str(directory.resolve()), str(device), backend)
    with _LOCK:
        if key in _CACHE:
            return _CACHE[key]
        card = _load_card(directory / "model.json")
        if not card.files:
            raise ModelError(
                f"model card {directory / 'model.json'}: expected at least one learner file, found none"
            )
        networks = [_load_network(directory / name, card, device, backend) for name in card.files]
        for net in networks if backend == "openvino" else []:  # compiled now, not at the first prediction
            net.compiled(torch.get_num_threads())
        model = Model(card=card, networks=networks, directory=directory, backend=backend)
        _CACHE[key] = model
        return model
