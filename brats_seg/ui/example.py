"""The example study: its pinned files, their download (pooch) and a local copy's folder.

"Load example" reads ``$BRATS_SEG_EXAMPLE_DIR`` when it is set, else downloads the files of
:data:`EXAMPLE_CASE` from ``$BRATS_SEG_EXAMPLE_URL`` (default :data:`EXAMPLE_URL`) with
:func:`pooch.retrieve`: each file is checked against its pinned sha256 and kept in the cache
(``$BRATS_SEG_CACHE``, default ``~/.cache/brats_seg``). Widgets only elsewhere: nothing here shows.
"""

from __future__ import annotations

import hashlib
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any, BinaryIO
from urllib.parse import unquote, urlsplit
from urllib.request import url2pathname

import pooch

from ..cache import CACHE_ENV, default_cache_dir
from ..errors import StudyError
from ..files import find_studies
from .entries import is_hidden, is_nifti_name

__all__ = [
    "CACHE_ENV",
    "EXAMPLE_CASE",
    "EXAMPLE_DIR_ENV",
    "EXAMPLE_FILES",
    "EXAMPLE_URL",
    "EXAMPLE_URL_ENV",
    "MAX_DOWNLOAD_BYTES",
    "CappedDownloader",
    "ExampleError",
    "ExampleUnreachable",
    "default_cache_dir",
    "fetch_example",
    "read_study_folder",
]

#: The example study and where it can be downloaded (a public copy of a BraTS 2018 training case).
EXAMPLE_CASE = "Brats18_CBICA_ABM_1"
EXAMPLE_URL = (
    "https://raw.githubusercontent.com/koriavinash1/DeepBrainSeg/master/sample_volume/brats/" + EXAMPLE_CASE
)
#: File name -> pinned sha256 of the example's files (four sequences and the expert segmentation).
EXAMPLE_FILES: dict[str, str] = {
    f"{EXAMPLE_CASE}_flair.nii.gz": "f85db3a4614dffc4e03e97d7d18d1ecb7d4522a4a5cf3c9bbca7bd428ce97e4c",
    f"{EXAMPLE_CASE}_t1.nii.gz": "771df355c26e002ce5fbcc6d0beeca6ca61d645ae02b718d153a9a3e2c108914",
    f"{EXAMPLE_CASE}_t1ce.nii.gz": "e738fc627825b7a57ea5869419cd345bc7b4fcaf6dbba50ba392ac17dc34e31f",
    f"{EXAMPLE_CASE}_t2.nii.gz": "602f1afbed3871fe866b2ff5cdb0f5758ad99c55f1e97c60579aa5aaa03d7c4c",
    f"{EXAMPLE_CASE}_seg.nii.gz": "e44e0c587f473b47af44503a3fff8d455776c55e8c466419bd130759bde05d32",
}
EXAMPLE_DIR_ENV = "BRATS_SEG_EXAMPLE_DIR"
EXAMPLE_URL_ENV = "BRATS_SEG_EXAMPLE_URL"

#: Largest example file accepted from a download (bytes).
MAX_DOWNLOAD_BYTES = 200 * 1024**2


class ExampleError(RuntimeError):
    """The example study could not be fetched or read (network, address, or sha256 mismatch)."""


class ExampleUnreachable(ExampleError):
    """The example's server could not be reached, or did not serve the file (no network, a firewall,
    a refused connection, a timeout, an HTTP error): trying again from this server will fail again.

    Attributes:
        url: The address that was asked.
        reason: What the downloader said, in words.
    """

    def __init__(self, message: str, *, url: str, reason: str) -> None:
        super().__init__(message)
        self.url = url
        self.reason = reason


def unreachable(name: str, url: str, exc: BaseException) -> ExampleUnreachable:
    """The ExampleUnreachable for a failed request of ``url``, with the downloader's reason in words."""
    reason = str(getattr(exc, "reason", None) or exc or type(exc).__name__)
    return ExampleUnreachable(
        f"could not download the example file {name} from {url} ({reason}). Check the network "
        f"connection, or set {EXAMPLE_DIR_ENV} to a local copy of the example study.",
        url=url,
        reason=reason,
    )


class _CappedFile:
    """A binary file that refuses more than ``limit`` bytes and hashes what it is given."""

    def __init__(self, file: BinaryIO, *, name: str, url: str, limit: int) -> None:
        self.file, self.name, self.url, self.limit = file, name, url, limit
        self.size = 0
        self.digest = hashlib.sha256()

    def write(self, chunk: bytes) -> int:
        self.size += len(chunk)
        if self.size > self.limit:
            raise ExampleError(
                f"{self.name}: the download from {self.url} exceeds {self.limit:,} bytes; refused"
            )
        self.digest.update(chunk)
        return self.file.write(chunk)

    def flush(self) -> None:
        self.file.flush()


class CappedDownloader:
    """A pooch downloader for ``https://``, ``http://`` (:class:`pooch.HTTPDownloader`) and ``file://``
    addresses that refuses files larger than ``max_bytes`` and remembers the sha256 of what it got.

    Args:
        name: The file's name, for messages.
        timeout: Seconds to wait for the server.
        max_bytes: Largest file accepted.
    """

    def __init__(self, name: str, *, timeout: float, max_bytes: int) -> None:
        self.name, self.timeout, self.max_bytes = name, timeout, max_bytes
        self.sha256 = ""

    def __call__(self, url: str, output_file: str, pooch_obj: Any, check_only: bool = False) -> None:
        """Download ``url`` into the file ``output_file`` (pooch's temporary file)."""
        import requests

        scheme = urlsplit(url).scheme.lower()
        if scheme not in ("https", "http", "file"):
            raise ExampleError(
                f"the example address {url!r} cannot be opened (no known scheme); expected an "
                f"https://, http:// or file:// address ({EXAMPLE_URL_ENV})"
            )
        try:
            with open(output_file, "wb") as raw:
                capped = _CappedFile(raw, name=self.name, url=url, limit=self.max_bytes)
                if scheme == "file":
                    with open(url2pathname(unquote(urlsplit(url).path)), "rb") as src:
                        shutil.copyfileobj(src, capped, 1 << 20)
                else:
                    pooch.HTTPDownloader(timeout=self.timeout, progressbar=False)(url, capped, pooch_obj)
        except (OSError, requests.exceptions.RequestException) as exc:
            raise unreachable(self.name, url, exc) from exc
        self.sha256 = capped.digest.hexdigest()


def fetch_example(
    base_url: str = EXAMPLE_URL,
    *,
    files: Mapping[str, str] = EXAMPLE_FILES,
    cache_dir: str | Path | None = None,
    timeout: float = 60.0,
) -> dict[str, Path]:
    """Download the example study's files (once: they are cached) and check their sha256.

    Args:
        base_url: Address of the folder holding the files; ``{base_url}/{name}`` is fetched
            (``https://``, ``http://`` or ``file://``).
        files: File name -> expected sha256.
        cache_dir: Folder for the cached files (default :func:`default_cache_dir`); they are kept in
            its ``examples/`` subfolder and reused while their sha256 matches.
        timeout: Seconds to wait for the server.

    Returns:
        File name -> path of the verified file.

    Raises:
        ExampleUnreachable: When the server cannot be reached or does not serve a file.
        ExampleError: When the address is malformed, the cache cannot be written, a file is larger
            than :data:`MAX_DOWNLOAD_BYTES`, or its sha256 differs from the pinned one (the
            downloaded file is then discarded).
    """
    folder = (Path(cache_dir) if cache_dir is not None else default_cache_dir()) / "examples"
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ExampleError(f"cannot create the cache folder {folder} ({exc})") from exc
    pooch.get_logger().setLevel("WARNING")  # pooch says "Downloading ..." at INFO in the server's log
    out: dict[str, Path] = {}
    for name, expected in files.items():
        url = f"{base_url.rstrip('/')}/{name}"
        downloader = CappedDownloader(name, timeout=timeout, max_bytes=MAX_DOWNLOAD_BYTES)
        try:
            path = pooch.retrieve(
                url,
                known_hash=f"sha256:{expected}",
                fname=name,
                path=folder,
                downloader=downloader,
                progressbar=False,
            )
        except ExampleError:
            raise
        except ValueError as exc:  # pooch: the hash differs (the temporary file is already removed)
            raise ExampleError(
                f"{name}: the file downloaded from {url} has sha256 {downloader.sha256}, "
                f"expected {expected}; "
                "it was discarded (the address may serve a different or damaged file)."
            ) from exc
        except OSError as exc:
            raise ExampleError(f"cannot write {folder / name} in the example cache ({exc})") from exc
        out[name] = Path(path)
    return out


def read_study_folder(folder: str | Path) -> dict[str, bytes]:
    """The NIfTI files of one study folder (or of the single study folder inside it), as bytes.

    Raises:
        ExampleError: When the folder is missing or does not hold exactly one study.
    """
    root = Path(folder)
    try:
        studies = find_studies(root)
    except StudyError as exc:
        raise ExampleError(f"example folder {root}: {exc}") from exc
    if len(studies) != 1:
        raise ExampleError(
            f"example folder {root}: expected one study folder with NIfTI files, found {len(studies)}"
        )
    paths = sorted(
        p for p in studies[0].iterdir() if p.is_file() and not is_hidden(p.name) and is_nifti_name(p.name)
    )
    return {p.name: p.read_bytes() for p in paths}
