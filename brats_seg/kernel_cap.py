"""A cap on the kernels of a shared dashboard server (``voila.json`` names it).

Each dashboard session holds one kernel (about 1.5 GB while it predicts). :class:`CappedKernelManager`
is Jupyter's kernel manager with ``max_kernels``: a visitor past the cap gets an HTTP 503 that says why,
instead of a kernel that would starve the others of memory. Culled and closed sessions free their place.
"""

from __future__ import annotations

from jupyter_server.services.kernels.kernelmanager import AsyncMappingKernelManager
from tornado import web
from traitlets import Int

__all__ = ["CappedKernelManager"]


class CappedKernelManager(AsyncMappingKernelManager):
    """A kernel manager that starts at most ``max_kernels`` kernels at once (pre-heated ones included)."""

    max_kernels = Int(
        6,
        config=True,
        help="Most kernels at once; each dashboard session holds one (about 1.5 GB "
        "while it predicts). Past it, a new visitor gets HTTP 503 until a session closes or is culled.",
    )

    async def start_kernel(self, *args, **kwargs):  # noqa: D102 (jupyter_server's signature)
        if kwargs.get("kernel_id") is None and len(self.list_kernel_ids()) >= self.max_kernels:
            raise web.HTTPError(
                503,
                f"brats-seg: this server serves at most {self.max_kernels} sessions at once "
                "(CappedKernelManager.max_kernels); try again when one closes",
            )
        return await super().start_kernel(*args, **kwargs)
