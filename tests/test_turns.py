"""Turns across processes: first come, first served, at most N at once, dead tickets skipped."""

from __future__ import annotations

import multiprocessing
import os
import time
from pathlib import Path

from brats_seg.turns import Turns


def _job(folder: str, log: str, n: int) -> None:
    with Turns(folder, poll_s=0.02).turn():
        with open(log, "a") as f:
            f.write(f"start {n} {time.monotonic():.4f}\n")
        time.sleep(0.3)
        with open(log, "a") as f:
            f.write(f"end {n} {time.monotonic():.4f}\n")


def test_jobs_of_several_processes_run_one_at_a_time_in_arrival_order(tmp_path: Path) -> None:
    log = tmp_path / "log.txt"
    ctx = multiprocessing.get_context("spawn")
    procs = []
    for n in range(3):
        p = ctx.Process(target=_job, args=(str(tmp_path / "turns"), str(log), n))
        p.start()
        procs.append(p)
        time.sleep(0.5 if n == 0 else 0.15)  # the first runs while the others queue behind it
    for p in procs:
        p.join(30)
        assert p.exitcode == 0
    events = [line.split()[:2] for line in log.read_text().splitlines()]
    assert events == [
        ["start", "0"],
        ["end", "0"],
        ["start", "1"],
        ["end", "1"],
        ["start", "2"],
        ["end", "2"],
    ]
    assert not list((tmp_path / "turns").glob("*.ticket"))


def test_two_slots_let_two_run_at_once(tmp_path: Path) -> None:
    turns = Turns(tmp_path, slots=2, poll_s=0.01)
    with turns.turn() as first, turns.turn() as second:
        assert first < 0.5 and second < 0.5
        tickets = sorted(p.name for p in tmp_path.glob("*.ticket"))
        assert len(tickets) == 2
        other = Turns(tmp_path, slots=2)
        assert other.ahead("99999999999999999999-1-x.ticket") == 1  # a third waits for one of them


def test_a_dead_processs_ticket_does_not_block(tmp_path: Path) -> None:
    ctx = multiprocessing.get_context("spawn")
    dead = ctx.Process(target=time.sleep, args=(0,))
    dead.start()
    dead.join()
    (tmp_path / f"{0:020d}-{dead.pid}-deadbeef.ticket").touch()  # older than anyone, its process gone
    waits: list[int] = []
    with Turns(tmp_path, poll_s=0.01).turn(lambda place, s: waits.append(place)) as waited:
        assert waited < 1.0
    assert waits == [] and not list(tmp_path.glob("*.ticket"))


def test_waiting_reports_the_place(tmp_path: Path) -> None:
    (tmp_path / f"{0:020d}-{os.getpid()}-holder.ticket").touch()  # a live job ahead (this process)
    turns = Turns(tmp_path, poll_s=0.01)
    seen: list[tuple[int, float]] = []

    def on_wait(place: int, waited: float) -> None:
        seen.append((place, waited))
        if len(seen) == 3:
            (tmp_path / f"{0:020d}-{os.getpid()}-holder.ticket").unlink()

    with turns.turn(on_wait):
        pass
    assert [p for p, _ in seen] == [1, 1, 1] and seen[-1][1] >= seen[0][1]
