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


def test_a_partial_path_is_private_to_its_process_and_sweeps_what_dead_ones_left(tmp_path):
    import socket
    import subprocess

    host = socket.gethostname().split(".")[0]
    dead = subprocess.Popen(["true"])
    dead.wait()  # a pid that has exited
    left = tmp_path / f"x.partial-{host}-{dead.pid}"
    left.mkdir()
    (left / "weights").write_text("half")
    running = tmp_path / f"x.partial-{host}-1"  # pid 1 is alive: another process still building
    other_host = tmp_path / f"x.partial-elsewhere-{dead.pid}"  # a node sharing the folder: not ours to judge
    running.mkdir()
    other_host.mkdir()
    assert partial_path(tmp_path / "x").name == f"x.partial-{host}-{os.getpid()}"
    assert not left.exists() and running.exists() and other_host.exists()


def test_a_folder_lock_admits_one_run_and_takes_over_what_dead_runs_left(tmp_path):
    """Catches a second live run let in, a lock a dead run left blocking its rerun for ever (a killed process of
    this host, or one on another node whose heartbeat stopped), and a live holder's lock going stale."""
    import json
    import socket
    import subprocess
    import sys
    import time

    import pytest

    from in2.files import LOCK_NAME, LockHeld, folder_lock

    lock = tmp_path / LOCK_NAME
    with folder_lock(tmp_path, "first", stale_s=0.4):
        with pytest.raises(LockHeld) as held, folder_lock(tmp_path, "second", stale_s=0.4):
            pass
        assert held.value.holder["what"] == "first" and held.value.holder["pid"] == os.getpid()
        time.sleep(1.0)  # longer than stale_s: the holder's heartbeat keeps the lock fresh (for other hosts)
        assert time.time() - lock.stat().st_mtime < 0.4
    assert not lock.exists()  # released

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    host = socket.gethostname().split(".")[0]
    lock.write_text(json.dumps({"host": host, "pid": int(dead.stdout), "what": "killed run"}))
    with folder_lock(tmp_path, "rerun"):  # this host, pid gone: taken over at once
        assert json.loads(lock.read_text())["what"] == "rerun"
    stopped = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:  # this host, pid alive (a suspended run, say): held however old its file
        lock.write_text(json.dumps({"host": host, "pid": stopped.pid, "what": "suspended run"}))
        os.utime(lock, (time.time() - 600, time.time() - 600))
        with pytest.raises(LockHeld), folder_lock(tmp_path, "rerun"):
            pass
    finally:
        stopped.kill()
        stopped.wait()

    lock.write_text(json.dumps({"host": "another-node", "pid": 1, "what": "requeued job"}))
    with pytest.raises(LockHeld):  # another node's pid cannot be checked: live while its file is fresh
        with folder_lock(tmp_path, "rerun"):
            pass
    old = time.time() - 600
    os.utime(lock, (old, old))  # its heartbeat stopped ten minutes ago
    with folder_lock(tmp_path, "rerun"):
        assert json.loads(lock.read_text())["what"] == "rerun"


def test_a_version_key_follows_a_files_content_changes_without_reading_it(tmp_path):
    """What keys the converted GGUF weights and tokenizer: a rewrite (same size) or another converter version
    gets a new key, an untouched file the same one."""
    import os
    import time

    from in2.files import version_key

    f = tmp_path / "m.gguf"
    f.write_bytes(b"a" * 100)
    key = version_key(f, "5.24.0")
    assert version_key(f, "5.24.0") == key and version_key(f, "5.25.0") != key
    f.write_bytes(b"b" * 100)
    os.utime(f, ns=(time.time_ns(), f.stat().st_mtime_ns + 1000))
    assert version_key(f, "5.24.0") != key
