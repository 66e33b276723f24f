"""The Engine and its jobs: handler table, env, streams, status, shutdown."""

from __future__ import annotations

import io
import logging
import threading
import time

import pytest

from engine.core import Engine, Env, Status
from engine.errors import Conflict, EngineError, InvalidParameter, NoSuchJob, NotFound, ShuttingDown


def test_register_refuses_duplicates():
    eng = Engine()
    eng.register("hello", lambda job: None)
    with pytest.raises(Conflict, match="Can't overwrite handler for command hello"):
        eng.register("hello", lambda job: None)


def test_commands_job_lists_every_job():
    eng = Engine()
    eng.register("zeta", lambda job: None)
    eng.register("alpha", lambda job: None)
    job = eng.job("commands")
    buf = job.stdout.add_buffer()
    assert job.run() == Status.OK
    assert buf.getvalue().decode().split() == ["alpha", "commands", "zeta"]


def test_unknown_job_is_notfound_with_status_127():
    eng = Engine()
    job = eng.job("nope")
    with pytest.raises(NoSuchJob):
        job.run()
    assert job.status == Status.NOTFOUND == 127


def test_catchall_handles_unknown_names():
    eng = Engine()
    seen = []
    eng.register_catchall(lambda job: seen.append(job.name))
    eng.job("anything", "x").run()
    assert seen == ["anything"]


def test_args_env_and_output():
    eng = Engine()

    def handler(job):
        job.printf("%s:%s:%d:%s\n", job.name, ",".join(job.args), job.env.get_int("N"), job.env.get_bool("Flag"))
        job.write_json({"list": job.env.get_list("L"), "obj": job.env.get_json("J")})

    eng.register("echo", handler)
    job = eng.job("echo", "a", "b", env={"N": 3, "Flag": True, "L": ["x", "y"], "J": {"k": 1}})
    buf = job.stdout.add_buffer()
    job.run()
    assert buf.getvalue() == b'echo:a,b:3:True\n{"list":["x","y"],"obj":{"k":1}}\n'


def test_stdout_fans_out_and_drops_broken_writers():
    eng = Engine()

    class Broken:
        def write(self, data):
            raise BrokenPipeError("gone")

    eng.register("say", lambda job: (job.stdout.write(b"one "), job.stdout.write(b"two")))
    job = eng.job("say")
    a, b = io.BytesIO(), io.BytesIO()
    job.stdout.add(a)
    job.stdout.add(Broken())
    job.stdout.add(b)
    job.run()
    assert a.getvalue() == b.getvalue() == b"one two"
    assert isinstance(job.stdout.error, BrokenPipeError)


def test_stdin_reads_source():
    eng = Engine()
    got = []
    eng.register("cat", lambda job: got.append(job.stdin.read()))
    job = eng.job("cat")
    job.stdin.add(io.BytesIO(b"data"))
    job.run()
    job2 = eng.job("cat")
    job2.run()
    assert got == [b"data", b""]


def test_status_derived_from_exceptions():
    eng = Engine()

    def fail(job):
        raise NotFound("No such thing")

    def crash(job):
        raise ZeroDivisionError("boom")

    eng.register("fail", fail)
    eng.register("crash", crash)
    job = eng.job("fail")
    with pytest.raises(NotFound):
        job.run()
    assert job.status == Status.ERR
    job = eng.job("crash")
    with pytest.raises(EngineError) as info:
        job.run()
    assert type(info.value) is EngineError and info.value.http_status == 500
    assert isinstance(info.value.__cause__, ZeroDivisionError)


def test_job_runs_once():
    eng = Engine()
    eng.register("x", lambda job: None)
    job = eng.job("x")
    job.run()
    with pytest.raises(EngineError):
        job.run()


def test_jobs_log_start_and_end(caplog):
    eng = Engine()
    eng.register("hello", lambda job: None)
    with caplog.at_level(logging.DEBUG, logger="engine.job"):
        eng.job("hello", "world").run()
    text = caplog.text
    assert "+job hello(world)" in text
    assert "-job hello(world) = OK (0)" in text


def test_env_typed_accessors():
    env = Env()
    env.set_bool("b", True)
    env.set_int("i", 42)
    env.set_json("j", {"a": [1]})
    env.set_list("l", ["p", "q"])
    env.set("s", "text")
    assert env.get_bool("b") and env.get_int("i") == 42
    assert env.get_json("j") == {"a": [1]} and env.get_list("l") == ["p", "q"]
    assert env.get("s") == "text" and env.get("missing", "d") == "d"
    for false in ("", "0", "no", "false", "none", "FALSE", "None"):
        env.set("f", false)
        assert env.get_bool("f") is False
    env.set("x", "plain")
    assert env.get_list("x") == ["plain"]
    env.set("bad", "nope")
    with pytest.raises(InvalidParameter):
        env.get_int("bad")


def test_shutdown_waits_for_running_jobs_then_runs_handlers_in_order():
    eng = Engine()
    release = threading.Event()
    order = []
    eng.register("slow", lambda job: (release.wait(5), order.append("job done")))
    eng.on_shutdown(lambda: order.append("first"))
    eng.on_shutdown(lambda: order.append("second"))
    t = threading.Thread(target=lambda: eng.job("slow").run())
    t.start()
    while eng.running_jobs == 0:
        time.sleep(0.01)
    s = threading.Thread(target=eng.shutdown)
    s.start()
    time.sleep(0.1)
    assert order == []  # still waiting for the job
    with pytest.raises(ShuttingDown):
        eng.job("slow").run()  # no new jobs
    release.set()
    s.join(5)
    t.join(5)
    assert order == ["job done", "first", "second"]
    assert eng.stopping.is_set()


def test_shutdown_gives_up_on_stuck_jobs():
    eng = Engine()
    stuck = threading.Event()
    eng.register("stuck", lambda job: stuck.wait(10))
    ran = []
    eng.on_shutdown(lambda: ran.append(True))
    t = threading.Thread(target=lambda: eng.job("stuck").run(), daemon=True)
    t.start()
    while eng.running_jobs == 0:
        time.sleep(0.01)
    started = time.monotonic()
    eng.shutdown(timeout=0.3)
    assert time.monotonic() - started < 2
    assert ran == [True]
    stuck.set()
