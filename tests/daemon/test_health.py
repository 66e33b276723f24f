"""Healthchecks (engine.daemon.health): the checks, the merge with the image's, the probe's argv,
and how results move the status (moby's handleProbeResult), with a stub daemon and clock."""

from __future__ import annotations

import pytest

from engine.daemon import health
from engine.daemon.container import Container, State
from engine.errors import InvalidParameter

SECOND = 1_000_000_000


@pytest.mark.parametrize(
    "config,message",
    [
        ({"Interval": 1000}, "Interval in Healthcheck cannot be less than 1ms"),
        ({"Timeout": 5}, "Timeout in Healthcheck cannot be less than 1ms"),
        ({"StartPeriod": 999_999}, "StartPeriod in Healthcheck cannot be less than 1ms"),
        ({"StartInterval": 1}, "StartInterval in Healthcheck cannot be less than 1ms"),
        ({"Retries": -1}, "Retries in Healthcheck cannot be negative"),
    ],
)
def test_refused_as_moby_refuses(config, message):
    with pytest.raises(InvalidParameter, match=message):
        health.validate({"Test": ["CMD", "true"], **config})


def test_merge_with_the_image_and_the_probe_argv():
    image = {"Test": ["CMD-SHELL", "curl -f localhost"], "Interval": 5 * SECOND, "Retries": 4}
    assert health.merge_healthcheck(None, image) == image
    merged = health.merge_healthcheck({"Interval": 2 * SECOND}, image)
    assert merged == {"Test": ["CMD-SHELL", "curl -f localhost"], "Interval": 2 * SECOND, "Retries": 4}
    assert health.merge_healthcheck({"Test": ["NONE"]}, image)["Test"] == ["NONE"]
    assert health.probe_command({"Healthcheck": merged}) == ["/bin/sh", "-c", "curl -f localhost"]
    assert health.probe_command({"Healthcheck": merged, "Shell": ["/bin/ash", "-e", "-c"]})[:2] == ["/bin/ash", "-e"]
    assert health.probe_command({"Healthcheck": {"Test": ["CMD", "true", "x"]}}) == ["true", "x"]
    for test in (["NONE"], [], ["BOGUS", "x"]):
        assert health.probe_command({"Healthcheck": {"Test": test}}) is None
    assert health.probe_command({}) is None


def test_describe_for_ps():
    assert health.describe(None) == ""
    assert health.describe({"Status": "starting"}) == "health: starting"
    assert health.describe({"Status": "unhealthy"}) == "unhealthy"
    state = State(running=True, started_at=100.0, health={"Status": "healthy"})
    assert state.describe(now=105.0) == "Up 5 seconds (healthy)"
    assert state.to_api()["Health"] == {"Status": "healthy", "FailingStreak": 0, "Log": []}
    assert "Health" not in State(running=True).to_api()


class StubDaemon:
    def __init__(self):
        self.events: list[str] = []

    def container_event(self, c, action, attributes=None):
        self.events.append(action)


def container(tmp_path, **healthcheck) -> Container:
    c = Container(
        id="c" * 64,
        name="/web",
        created=0.0,
        image_id="",
        config={"Healthcheck": {"Test": ["CMD", "true"], **healthcheck}},
        host_config={},
        root=str(tmp_path),
        state=State(running=True, started_at=1000.0, health={"Status": "starting", "FailingStreak": 0, "Log": []}),
    )
    return c


def result(code: int) -> dict:
    return {"Start": "s", "End": "e", "ExitCode": code, "Output": ""}


def test_results_move_the_status(tmp_path):
    daemon = StubDaemon()
    monitor = health.HealthMonitor(daemon)  # type: ignore[arg-type]
    c = container(tmp_path, Retries=2)
    config = c.config["Healthcheck"]
    monitor._record(c, result(1), config, 1001.0)
    assert c.state.health["Status"] == "starting" and c.state.health["FailingStreak"] == 1
    monitor._record(c, result(0), config, 1002.0)
    assert c.state.health["Status"] == "healthy" and c.state.health["FailingStreak"] == 0
    monitor._record(c, result(1), config, 1003.0)
    assert c.state.health["Status"] == "healthy"  # one failure of two
    monitor._record(c, result(-1), config, 1004.0)
    assert c.state.health["Status"] == "unhealthy" and c.state.health["FailingStreak"] == 2
    for n in range(4):
        monitor._record(c, result(n), config, 1005.0 + n)
    assert len(c.state.health["Log"]) == 5  # the last five
    # 0 makes it healthy again, the next two failures unhealthy again.
    assert daemon.events == ["health_status: " + s for s in ("healthy", "unhealthy", "healthy", "unhealthy")]
    assert Container.from_disk(c.root).state.health == c.state.health


def test_failures_inside_the_start_period_do_not_count(tmp_path):
    monitor = health.HealthMonitor(StubDaemon())  # type: ignore[arg-type]
    c = container(tmp_path, Retries=1, StartPeriod=3 * SECOND)
    config = c.config["Healthcheck"]
    monitor._record(c, result(1), config, 1002.0)  # 2 s after the start
    assert c.state.health == {"Status": "starting", "FailingStreak": 0, "Log": [result(1)]}
    monitor._record(c, result(1), config, 1004.0)  # 4 s after
    assert c.state.health["Status"] == "unhealthy"


def test_start_interval_while_starting(tmp_path):
    clock = [1001.0]
    monitor = health.HealthMonitor(StubDaemon(), now=lambda: clock[0])  # type: ignore[arg-type]
    c = container(tmp_path, Interval=10 * SECOND, StartPeriod=30 * SECOND, StartInterval=2 * SECOND)
    config = c.config["Healthcheck"]
    assert monitor._interval(c, config) == 2.0
    c.state.health["Status"] = "healthy"
    assert monitor._interval(c, config) == 10.0
    c.state.health["Status"] = "starting"
    clock[0] = 1040.0  # past the start period
    assert monitor._interval(c, config) == 10.0
    assert monitor._interval(c, {}) == 30.0


def test_go_durations():
    assert health._go_duration(30) == "30s" and health._go_duration(0.5) == "500ms"
    assert health._go_duration(90) == "1m30s"
