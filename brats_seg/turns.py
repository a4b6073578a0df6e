"""Take turns: at most N heavy jobs (preprocessing, inference) at once across the kernels of one server.

Several dashboard sessions on a small server each run in a kernel of their own (a process). Without
turns, three Predicts at once share two cores three ways, each takes three times as long, and memory
peaks add up. :class:`Turns` queues them first come, first served, across processes, with one ticket
file each in a shared folder: a job runs while fewer than N tickets are older than its own. A ticket
whose process has died (a kernel culled mid-run) is removed by the next waiter, so nobody waits for it.

Configuration: ``BRATS_SEG_CONCURRENT_JOBS`` (default 1) and ``BRATS_SEG_TURNS_DIR`` (default
``<temp>/brats_seg_turns``).

Example::

    with Turns().turn(lambda place, waited: print(f"{place} ahead, {waited:.0f} s")):
        seg = segment(study, model)
"""

from __future__ import annotations

import os
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = ["CONCURRENT_JOBS_ENV", "TURNS_DIR_ENV", "Turns"]

CONCURRENT_JOBS_ENV = "BRATS_SEG_CONCURRENT_JOBS"
TURNS_DIR_ENV = "BRATS_SEG_TURNS_DIR"

#: ``place, seconds waited`` -> None; called about twice a second while a job waits.
OnWait = Callable[[int, float], None]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


class Turns:
    """First come, first served turns for heavy jobs across the processes of one machine.

    Args:
        folder: The shared ticket folder (created if needed); default ``$BRATS_SEG_TURNS_DIR``, else
            ``<temp>/brats_seg_turns``.
        slots: How many jobs run at once; default ``$BRATS_SEG_CONCURRENT_JOBS``, else 1.
        poll_s: Seconds between looks at the queue.
    """

    def __init__(
        self, folder: str | Path | None = None, *, slots: int | None = None, poll_s: float = 0.5
    ) -> None:
        default = os.environ.get(TURNS_DIR_ENV) or str(Path(tempfile.gettempdir()) / "brats_seg_turns")
        self.folder = Path(folder or default)
        self.slots = max(1, int(slots if slots is not None else os.environ.get(CONCURRENT_JOBS_ENV, "1")))
        self.poll_s = poll_s

    def _tickets(self) -> list[str]:
        """Live tickets, oldest first; those of dead processes are removed."""
        live = []
        for path in sorted(self.folder.glob("*.ticket")):
            try:
                pid = int(path.name.split("-")[1])
            except (IndexError, ValueError):
                continue
            if _alive(pid):
                live.append(path.name)
            else:
                path.unlink(missing_ok=True)
        return live

    def ahead(self, ticket: str) -> int:
        """How many jobs must finish or start before ``ticket`` may run (0: it may run now)."""
        tickets = self._tickets()
        place = tickets.index(ticket) if ticket in tickets else len(tickets)
        return max(0, place - self.slots + 1)

    @contextmanager
    def turn(self, on_wait: OnWait | None = None) -> Iterator[float]:
        """Wait for this job's turn, then hold it until the block ends (also on an exception).

        Yields:
            The seconds waited.
        """
        self.folder.mkdir(parents=True, exist_ok=True)
        name = f"{time.time_ns():020d}-{os.getpid()}-{uuid.uuid4().hex[:8]}.ticket"
        ticket = self.folder / name
        ticket.touch()
        start = time.perf_counter()
        try:
            while (place := self.ahead(name)) > 0:
                if on_wait is not None:
                    on_wait(place, time.perf_counter() - start)
                time.sleep(self.poll_s)
            yield time.perf_counter() - start
        finally:
            ticket.unlink(missing_ok=True)
