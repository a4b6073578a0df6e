"""Tiny generated BraTS-like studies for unit tests (importable as ``from helpers import ...``).

``tests/conftest.py`` puts this folder on ``sys.path``.
"""

from __future__ import annotations

import contextlib
import io
import re
import zipfile
from pathlib import Path

import nibabel as nib
import numpy as np

from brats_seg.files.dicom_write import DICOM_DESCRIPTIONS as _PACKAGE_DESCRIPTIONS
from brats_seg.files.dicom_write import write_dicom_images
from brats_seg.files.dicom_write import write_dicom_series as _write_series


def err(filename: str, fragment: str) -> str:
    """Regex for a message that names ``filename`` and then says ``fragment`` (a regex)."""
    return rf"(?s){re.escape(filename)}.*{fragment}"


#: File-name suffix of each modality for the two BraTS naming schemes.
NAMING: dict[str, dict[str, str]] = {
    "2018": {"T1": "_t1", "T1CE": "_t1ce", "T2": "_t2", "FLAIR": "_flair", "SEG": "_seg"},
    "2023": {"T1": "-t1n", "T1CE": "-t1c", "T2": "-t2w", "FLAIR": "-t2f", "SEG": "-seg"},
}

#: Mean intensity of background brain, and of each label (NCR, ED, ET), per modality.
_INTENSITY: dict[str, dict[int, float]] = {
    "T1": {0: 500.0, 1: 300.0, 2: 420.0, 4: 480.0},
    "T1CE": {0: 550.0, 1: 350.0, 2: 500.0, 4: 1400.0},
    "T2": {0: 700.0, 1: 1500.0, 2: 1300.0, 4: 1000.0},
    "FLAIR": {0: 450.0, 1: 800.0, 2: 1200.0, 4: 900.0},
}


def brats_affine(
    shape: tuple[int, int, int], spacing: tuple[float, float, float] = (1.0, 1.0, 1.0)
) -> np.ndarray:
    """The BraTS (SRI-24 / LPS-like) affine: diag(-sx, -sy, sz) with translation (0, (ny-1)*sy, 0)."""
    sx, sy, sz = spacing
    affine = np.diag([-sx, -sy, sz, 1.0])
    affine[1, 3] = (shape[1] - 1) * sy
    return affine


def tiny_volumes(
    shape: tuple[int, int, int] = (32, 32, 24), *, seed: int = 0
) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Generate four int16 sequences and a BraTS label map on a ``shape`` grid.

    The "brain" is a noisy-edged ellipsoid; the "tumour" is an ET sphere inside an NCR shell inside
    an edema shell (labels 4, 1, 2), placed off-centre in the brain.

    Returns:
        ``(images keyed T1/T1CE/T2/FLAIR, uint8 labels)``.
    """
    rng = np.random.default_rng(seed)
    grid = np.stack(np.meshgrid(*[np.arange(n, dtype=np.float32) for n in shape], indexing="ij"))
    centre = np.array([(n - 1) / 2 for n in shape], dtype=np.float32)[:, None, None, None]
    radii = np.array([0.42 * n for n in shape], dtype=np.float32)[:, None, None, None]
    ellipsoid = np.sqrt((((grid - centre) / radii) ** 2).sum(axis=0))
    brain = ellipsoid + rng.normal(0.0, 0.03, size=shape).astype(np.float32) < 1.0

    scale = min(shape) / 24.0
    offset = np.array([0.12 * shape[0], -0.08 * shape[1], 0.0 * shape[2]], dtype=np.float32)
    t_centre = centre + offset[:, None, None, None]
    dist = np.sqrt(((grid - t_centre) ** 2).sum(axis=0))
    labels = np.zeros(shape, dtype=np.uint8)
    labels[dist <= 6.0 * scale] = 2
    labels[dist <= 4.0 * scale] = 1
    labels[dist <= 2.0 * scale] = 4
    labels[~brain] = 0

    images: dict[str, np.ndarray] = {}
    for modality, levels in _INTENSITY.items():
        image = np.zeros(shape, dtype=np.float32)
        for label, level in levels.items():
            image[brain & (labels == label)] = level
        image += rng.normal(0.0, 25.0, size=shape).astype(np.float32) * brain
        images[modality] = np.clip(np.round(image), 0, 32767).astype(np.int16)
    return images, labels


def write_nifti(
    path: Path, data: np.ndarray, affine: np.ndarray, *, dtype: type | np.dtype | None = None
) -> Path:
    """Write ``data`` with ``affine`` (sform and qform code 1, mm units) to ``path``."""
    image = nib.Nifti1Image(np.asarray(data, dtype=dtype) if dtype else data, affine)
    image.header.set_sform(affine, code=1)
    image.header.set_qform(affine, code=1)
    image.header.set_xyzt_units("mm", "sec")
    nib.save(image, path)
    return Path(path)


def write_tiny_study(
    folder: str | Path,
    name: str = "Tiny_001",
    shape: tuple[int, int, int] = (32, 32, 24),
    affine: np.ndarray | None = None,
    naming: str = "2018",
    seed: int = 0,
    *,
    seg: bool = True,
) -> dict[str, Path]:
    """Write a tiny BraTS-like study as ``.nii.gz`` files into ``folder`` (created if needed).

    Args:
        folder: Output folder.
        name: Study ID used as the file-name prefix.
        shape: Voxel grid.
        affine: Voxel-to-world affine; default the BraTS one for 1 mm voxels (:func:`brats_affine`).
        naming: ``"2018"`` (``<name>_t1.nii.gz`` ...) or ``"2023"`` (``<name>-t1n.nii.gz`` ...).
        seed: Random seed for the noise.
        seg: Also write the ground truth (``<name>_seg.nii.gz``).

    Returns:
        Path of each file keyed by modality (``T1``, ``T1CE``, ``T2``, ``FLAIR`` and ``SEG``).
    """
    if naming not in NAMING:
        raise ValueError(f"naming must be one of {sorted(NAMING)}, found {naming!r}")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    affine = brats_affine(shape) if affine is None else np.asarray(affine, dtype=np.float64)
    images, labels = tiny_volumes(shape, seed=seed)
    suffixes = NAMING[naming]
    paths = {
        modality: write_nifti(folder / f"{name}{suffixes[modality]}.nii.gz", data, affine)
        for modality, data in images.items()
    }
    if seg:
        paths["SEG"] = write_nifti(folder / f"{name}{suffixes['SEG']}.nii.gz", labels, affine)
    return paths


#: Series descriptions as a scanner might write them, per modality (for DICOM test studies).
DICOM_DESCRIPTIONS: dict[str, str] = dict(_PACKAGE_DESCRIPTIONS)

#: The patient of every generated DICOM study (tests check it never reaches output names).
PHANTOM = {"patient_id": "PHANTOM01", "patient_name": "Test^Phantom"}


def write_dicom_series(
    folder: str | Path,
    data: np.ndarray,
    affine: np.ndarray,
    *,
    description: str,
    series_number: int,
    study_uid: str,
    frame_uid: str,
    seed: int = 0,
) -> list[Path]:
    """:func:`brats_seg.files.write_dicom_series` of the phantom patient, its files in random name order."""
    return _write_series(
        folder,
        data,
        affine,
        description=description,
        series_number=series_number,
        study_uid=study_uid,
        frame_uid=frame_uid,
        shuffle_seed=seed,
        **PHANTOM,
    )


def write_dicom_study(
    folder: str | Path,
    images: dict[str, np.ndarray],
    affine: np.ndarray,
    *,
    descriptions: dict[str, str] | None = None,
    affines: dict[str, np.ndarray] | None = None,
    study_uid: str | None = None,
) -> dict[str, list[Path]]:
    """:func:`brats_seg.files.write_dicom_images` of the phantom patient, files in random name order."""
    return write_dicom_images(
        folder,
        images,
        affine,
        descriptions=descriptions,
        affines=affines,
        study_uid=study_uid,
        shuffle=True,
        **PHANTOM,
    )


def zip_tree(folder: str | Path, *, prefix: str | None = None, compress: bool = False) -> bytes:
    """Zip every file under ``folder``, keeping relative paths under ``prefix/`` (default: the
    folder's name; ``""`` puts them at the top level). Returns the zip's bytes."""
    folder = Path(folder)
    top = folder.name if prefix is None else prefix
    buffer = io.BytesIO()
    mode = zipfile.ZIP_DEFLATED if compress else zipfile.ZIP_STORED
    with zipfile.ZipFile(buffer, "w", compression=mode) as z:
        for p in sorted(folder.rglob("*")):
            if p.is_file():
                z.write(p, f"{top}/{p.relative_to(folder)}" if top else str(p.relative_to(folder)))
    return buffer.getvalue()


def free_port() -> int:
    """A free TCP port on the loopback interface."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def kernel_rss_mb(root: Path) -> list[float]:
    """Resident memory (MB) of each Jupyter kernel running in ``root`` (read from /proc), largest first."""
    import os

    sizes = []
    for proc in Path("/proc").iterdir():
        try:
            if b"ipykernel" not in (proc / "cmdline").read_bytes() or Path(os.readlink(proc / "cwd")) != root:
                continue
            status = (proc / "status").read_text()
        except OSError:  # gone, or not ours to read
            continue
        sizes += [int(line.split()[1]) / 1024 for line in status.splitlines() if line.startswith("VmRSS:")]
    return sorted(sizes, reverse=True)


@contextlib.contextmanager
def voila_server(root: Path, log_dir: Path, *, env: dict[str, str] | None = None, args: tuple[str, ...] = ()):
    """``voila app.ipynb`` on a free loopback port (one torch thread per kernel); yields its address."""
    import os
    import shutil
    import socket
    import subprocess
    import sys
    import time

    port = free_port()
    voila = shutil.which("voila") or str(Path(sys.executable).with_name("voila"))
    log = open(log_dir / "voila.log", "w")
    proc = subprocess.Popen(
        [voila, "app.ipynb", "--no-browser", f"--port={port}", "--Voila.ip=127.0.0.1", *args],
        cwd=root,
        stdout=log,
        stderr=subprocess.STDOUT,
        env={**os.environ, "OMP_NUM_THREADS": "1", **(env or {})},
    )
    deadline = time.time() + 60
    while time.time() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                break
        except OSError:
            time.sleep(0.5)
    try:
        yield f"http://127.0.0.1:{port}/"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()
