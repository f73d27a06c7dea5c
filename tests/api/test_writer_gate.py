"""driver_sql.WriterGate: SQLite's hot API writers (device registrations, event reports) queue at a file lock, across
processes and threads, and a request that fails half-way lets the next writer in."""

from __future__ import annotations

import contextvars
import os
import subprocess
import sys
import threading
import time

import pytest
from sqlalchemy import select

from tests.api.factories import make_device, make_subscriber
from webadmin import driver_sql
from webadmin.driver_sql import WriterGate
from webadmin.extensions import db
from webadmin.models.message import Message

# Another process: take the gate file's lock, say so, keep it for argv[2] seconds.
HOLDER = """
import fcntl, os, sys, time
fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT)
fcntl.flock(fd, fcntl.LOCK_EX)
print("held", flush=True)
time.sleep(float(sys.argv[2]))
"""
# Another process: exit 3 if the gate file is locked, 0 if it could take it.
PROBE = """
import fcntl, os, sys
fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT)
try:
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
except BlockingIOError:
    sys.exit(3)
"""
HOLD_SECONDS = 0.6


@pytest.fixture
def database_url(tmp_path) -> str:
    """The gate is SQLite's: these tests run on a SQLite file only (overrides the two-backend fixture)."""
    return f"sqlite:///{tmp_path / 'test.sqlite3'}"


def _locked_elsewhere(gate_file: str) -> bool:
    return subprocess.run([sys.executable, "-c", PROBE, gate_file], check=False).returncode == 3


def _held_by_another_process(gate_file: str) -> subprocess.Popen:
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, gate_file, str(HOLD_SECONDS)], stdout=subprocess.PIPE,
                              text=True)
    assert holder.stdout.readline().strip() == "held"
    return holder


def test_the_gate_excludes_other_processes_until_released(tmp_path):
    database = str(tmp_path / "a.sqlite3")
    gate = WriterGate()
    gate.acquire(database)
    assert _locked_elsewhere(f"{database}-writer")
    gate.release()
    assert not _locked_elsewhere(f"{database}-writer")
    gate.release()  # not held: nothing happens


def test_threads_of_one_process_take_turns(tmp_path):
    database = str(tmp_path / "a.sqlite3")
    gate = WriterGate()
    gate.acquire(database)
    entered = threading.Event()

    def second_writer() -> None:
        gate.acquire(database)
        entered.set()
        gate.release()

    thread = threading.Thread(target=second_writer)
    thread.start()
    assert not entered.wait(0.3)  # flock alone would let a second thread of the same process in
    gate.release()
    assert entered.wait(5)
    thread.join(5)


def test_a_writer_waits_for_another_process_and_goes_on_when_it_lets_go(tmp_path):
    database = str(tmp_path / "a.sqlite3")
    holder = _held_by_another_process(f"{database}-writer")
    started = time.monotonic()
    gate = WriterGate()
    gate.acquire(database)
    waited = time.monotonic() - started
    gate.release()
    holder.communicate(timeout=5)
    assert HOLD_SECONDS * 0.5 < waited < 10


def test_a_forked_child_opens_its_own_gate_file(tmp_path):
    """gunicorn forks its workers: a child sharing the parent's open file would share its lock, i.e. not wait."""
    database = str(tmp_path / "a.sqlite3")
    gate = WriterGate()
    gate.acquire(database)
    pid = os.fork()
    if pid == 0:  # the child: 3 when its own try finds the gate taken by the parent
        import fcntl

        try:
            fcntl.flock(gate._file(database), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os._exit(3)
        os._exit(0)
    _, status = os.waitpid(pid, 0)
    gate.release()
    assert os.waitstatus_to_exitcode(status) == 3


def test_no_gate_file_can_be_made_means_no_gate(tmp_path):
    gate = WriterGate()
    gate.acquire(str(tmp_path / "missing-folder" / "a.sqlite3"))  # SQLite's busy handler alone, as before
    assert gate.held is None


def _gate_file() -> str:
    return f"{db.engine.url.database}-writer"


def test_device_registration_queues_at_the_gate(app, api_client):
    holder = _held_by_another_process(_gate_file())
    started = time.monotonic()
    answer = api_client.put("/api/v1/devices/tok-gate", json={"platform": "android"})
    waited = time.monotonic() - started
    holder.communicate(timeout=5)
    assert answer.status_code == 201, answer.json
    assert waited > HOLD_SECONDS * 0.5
    assert not _locked_elsewhere(_gate_file())  # committed: let go


def test_event_reports_queue_at_the_gate(app, api_app, api_client):
    make_device(api_app, "tok-gate", "android", subscriber_id=make_subscriber().id)
    assert api_client.post("/api/v1/push", json={"messageText": "Hi"}).status_code == 202
    message = db.session.scalar(select(Message.uuid))
    db.session.rollback()
    holder = _held_by_another_process(_gate_file())
    started = time.monotonic()
    answer = api_client.post("/api/v1/events", json={"events": [{"message": message, "type": "opened"}]})
    waited = time.monotonic() - started
    holder.communicate(timeout=5)
    assert answer.status_code == 200 and answer.json["counted"] == 1, answer.json
    assert waited > HOLD_SECONDS * 0.5
    assert not _locked_elsewhere(_gate_file())


def test_a_failure_between_writing_and_commit_lets_the_gate_go_at_the_end_of_the_context(app):
    def fail_half_way() -> None:
        with app.app_context():
            tx = driver_sql.Transaction()
            tx.writing()
            assert _locked_elsewhere(_gate_file())
            raise RuntimeError("the route failed before its commit")

    with pytest.raises(RuntimeError):
        contextvars.Context().run(fail_half_way)  # a fresh context, as a request gets (tests hold one open)
    assert driver_sql.GATE.held is None
    assert not _locked_elsewhere(_gate_file())


def test_a_process_keeps_few_gate_files_open(tmp_path):
    """One database in production; the test suite's processes see hundreds, which must not use up descriptors."""
    gate = WriterGate()
    before = len(os.listdir("/proc/self/fd"))
    for n in range(3 * driver_sql._GATE_FILES_MAX):
        gate.acquire(str(tmp_path / f"{n}.sqlite3"))
        gate.release()
    assert len(gate._files) <= driver_sql._GATE_FILES_MAX
    assert len(os.listdir("/proc/self/fd")) - before <= driver_sql._GATE_FILES_MAX
