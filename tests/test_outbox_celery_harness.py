"""The real Redis server and real Celery workers that the outbox's Celery tests run on."""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from mailbridge.testing import _realredis
from mailbridge.testing.realservers import (
    CeleryWorkers,
    RealRedisServer,
    RealServerError,
    redis_availability,
)

pytest.importorskip("celery", reason="the celery extra is not installed")
redis = pytest.importorskip("redis", reason="the celery extra is not installed")

# A Celery app whose broker and result backend come from the environment.
APP = """\
import os, time
from celery import Celery

app = Celery("harness", broker=os.environ["BROKER"], backend=os.environ["BACKEND"])
app.conf.update(worker_hijack_root_logger=False, broker_connection_retry_on_startup=True)


@app.task
def pid():
    return os.getpid()


@app.task
def sleep(seconds):
    time.sleep(seconds)
    return seconds
"""


def gone(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except OSError:
        return True
    return state == "Z"


@pytest.fixture
def broker(redis_server: RealRedisServer) -> RealRedisServer:
    redis_server.flush()
    return redis_server


@pytest.fixture
def app_dir(tmp_path: Path) -> Path:
    (tmp_path / "harness_app.py").write_text(APP)
    return tmp_path


@pytest.fixture
def workers(app_dir: Path, broker: RealRedisServer) -> Iterator[CeleryWorkers]:
    env = {
        "PYTHONPATH": os.pathsep.join([str(app_dir), os.environ.get("PYTHONPATH", "")]),
        "BROKER": broker.database_url(0),
        "BACKEND": broker.database_url(1),
    }
    with CeleryWorkers("harness_app", app_dir / "workers", count=2, env=env) as started:
        yield started


@pytest.fixture
def client(broker: RealRedisServer) -> Iterator[Any]:
    """The client side of the app, in this process: sends tasks, reads results."""
    from celery import Celery

    app = Celery("harness", broker=broker.database_url(0), backend=broker.database_url(1))
    yield app
    app.close()


def test_redis_answers_on_loopback_and_stops(tmp_path: Path) -> None:
    assert redis_availability() == (True, "")
    server = RealRedisServer(tmp_path)
    with server:
        assert server.url.startswith("redis://127.0.0.1:")
        client = redis.Redis.from_url(server.database_url(3))
        client.set("key", "value")
        assert client.get("key") == b"value"
        client.close()
        server.flush()
        assert redis.Redis.from_url(server.database_url(3)).get("key") is None
        port = server.port
    assert not server.ping()
    with pytest.raises(ConnectionRefusedError), socket.create_connection(("127.0.0.1", port), 1):
        pass
    assert "Ready to accept connections" in server.log_tail()


def test_redis_moves_on_when_its_port_was_taken(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    free_ports = _realredis.free_ports
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        busy = taken.getsockname()[1]
        ports = iter([[busy], [busy], [busy]])
        monkeypatch.setattr(_realredis, "free_ports", lambda count: next(ports))
        started = time.monotonic()
        with pytest.raises(RealServerError, match=r"(?s)did not answer PING.*already in use"):
            RealRedisServer(tmp_path).start()
        assert time.monotonic() - started < 5  # an exit ends the wait, no 10 s time-out
        ports = iter([[busy], free_ports(1)])
        with RealRedisServer(tmp_path) as server:
            assert server.port != busy
            assert server.ping()


def test_redis_without_the_binary_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_realredis, "_redis_binary", lambda: None)
    assert redis_availability() == (
        False,
        "redis-server not installed; install the Debian package redis-server",
    )
    with pytest.raises(RealServerError, match="install the Debian package redis-server"):
        RealRedisServer(Path("/nonexistent")).start()


def test_workers_run_tasks_and_stop(workers: CeleryWorkers, client: Any) -> None:
    pool = {pid for index in range(2) for pid in workers.pool_pids(index)}
    assert len(pool) == 4  # 2 workers x concurrency 2
    seen = {client.send_task("harness_app.pid").get(timeout=20) for _ in range(20)}
    assert seen <= pool
    mains = [workers.pid(0), workers.pid(1)]
    workers.stop()
    assert all(gone(pid) for pid in [*mains, *pool])
    assert all(logs and " ready." in logs[-1].read_text() for logs in workers.log_files)


def test_a_killed_worker_takes_its_pool_along_and_restarts(workers: CeleryWorkers) -> None:
    main, pool = workers.pid(0), workers.pool_pids(0)
    workers.kill(0)
    assert not workers.running(0)
    assert all(gone(pid) for pid in [main, *pool])
    with pytest.raises(RealServerError, match="not running"):
        workers.pid(0)
    workers.start_worker(0)
    assert workers.running(0)
    assert workers.pid(0) != main
    assert len(workers.log_files[0]) == 2  # a log per start, the first kept
    workers.kill(0)
    workers.start_worker(0, wait=False)  # returns at once; wait_ready() waits for it
    assert " ready." not in workers.log_files[0][-1].read_text()
    workers.wait_ready()
    assert " ready." in workers.log_files[0][-1].read_text()


def test_stop_is_bounded_when_a_task_does_not_end(workers: CeleryWorkers, client: Any) -> None:
    client.send_task("harness_app.sleep", (60,))
    deadline = time.monotonic() + 20
    while not any("harness_app.sleep" in logs[-1].read_text() for logs in workers.log_files):
        assert time.monotonic() < deadline, workers.log_tail()
        time.sleep(0.05)
    mains = [workers.pid(0), workers.pid(1)]
    workers.stop_timeout = 1.0
    started = time.monotonic()
    workers.stop()  # the warm shutdown waits for the task: SIGKILL after 1 s
    assert time.monotonic() - started < 6
    assert all(gone(pid) for pid in mains)


def test_a_worker_that_cannot_start_reports_its_log(tmp_path: Path) -> None:
    started = time.monotonic()
    with pytest.raises(RealServerError, match=r"(?s)worker 0 was not ready.*no_such_app"):
        CeleryWorkers("no_such_app", tmp_path, count=1, ready_timeout=30).start()
    assert time.monotonic() - started < 15  # the exit ends the wait


def test_worker_arguments_are_checked(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="at least 1"):
        CeleryWorkers("app", tmp_path, count=0)
    with pytest.raises(ValueError, match="at least 1"):
        CeleryWorkers("app", tmp_path, concurrency=0)
