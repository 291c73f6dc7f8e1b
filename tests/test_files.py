"""Caches that several processes fill at once: each builds its own partial copy, the first rename wins, and
no reader ever sees a half-written file (what would break if `publish_once` renamed over a finished copy or
two processes shared one partial folder)."""

import multiprocessing
import os

from in2.files import partial_path, publish_once


def _build(target: str, payload: str, barrier) -> None:
    partial = partial_path(target)
    partial.mkdir()
    (partial / "part-1").write_text(payload)
    barrier.wait()  # both partial folders exist before either is published
    (partial / "done").write_text(payload)
    publish_once(partial, target)


def test_two_processes_building_one_cache_folder_leave_one_complete_copy(tmp_path):
    target = tmp_path / "model"
    ctx = multiprocessing.get_context("fork")
    barrier = ctx.Barrier(2)
    procs = [ctx.Process(target=_build, args=(str(target), name, barrier)) for name in ("a", "b")]
    for p in procs:
        p.start()
    for p in procs:
        p.join(30)
    assert [p.exitcode for p in procs] == [0, 0]
    # one writer's complete copy, not a mix of both, and no partial folder left behind
    winner = (target / "done").read_text()
    assert (target / "part-1").read_text() == winner and winner in {"a", "b"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]


def test_a_partial_path_is_private_to_its_process(tmp_path):
    assert partial_path(tmp_path / "x").name == f"x.partial-{os.getpid()}"
