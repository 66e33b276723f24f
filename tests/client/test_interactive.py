"""``engine run -it`` / ``exec -it`` / ``attach`` on a real terminal, driven through tmux.

Each test starts a private tmux server running the ``engine`` command in
a 100x30 pane, types into it with ``send-keys`` and reads the screen with
``capture-pane``; the command line ends with ``echo EXIT=$?`` so the exit
status shows on the screen.
"""

from __future__ import annotations

import shlex
import sys
import time

import pytest

pytestmark = pytest.mark.root


def command(engine, *args: str) -> str:
    argv = [sys.executable, "-m", "engine.cli", "-H", engine.daemon.host, *args]
    return " ".join(shlex.quote(a) for a in argv) + "; echo EXIT=$?; sleep 600"


def test_run_it_shell(engine, tmux):
    tmux.start(command(engine, "run", "-it", "--rm", "busybox", "sh"), engine.env)
    tmux.wait_for("/ #")
    tmux.send("echo hello; stty size", "Enter")
    screen = tmux.wait_for("30 100")
    assert "\nhello\n" in screen
    tmux.resize(80, 20)
    time.sleep(0.5)
    tmux.send("stty size", "Enter")
    tmux.wait_for("20 80")
    tmux.send("exit 4", "Enter")
    tmux.wait_for("EXIT=4")
    deadline = time.monotonic() + 10
    while engine("ps", "-aq").stdout and time.monotonic() < deadline:
        time.sleep(0.2)
    assert engine("ps", "-aq").stdout == ""


def test_detach_and_attach(engine, tmux):
    tmux.start(command(engine, "run", "-it", "--name", "det", "busybox", "sh"), engine.env)
    tmux.wait_for("/ #")
    tmux.send("echo one", "Enter")
    tmux.wait_for("\none")
    tmux.send("C-p", "C-q")
    tmux.wait_for("EXIT=0")
    assert engine("ps", "--format", "{{.Names}} {{.State}}").stdout == "det running\n"
    tmux.kill()

    tmux.start(command(engine, "attach", "det"), engine.env)
    time.sleep(1)
    tmux.send("echo two", "Enter")
    tmux.wait_for("\ntwo")
    tmux.send("C-p", "C-q")
    screen = tmux.wait_for("EXIT=1")
    assert "read escape sequence" in screen
    tmux.kill()

    tmux.start(command(engine, "attach", "--detach-keys", "ctrl-x,x", "det"), engine.env)
    time.sleep(1)
    tmux.send("exit 3", "Enter")
    tmux.wait_for("EXIT=3")
    assert engine("ps", "-a", "--format", "{{.Status}}").stdout.startswith("Exited (3)")


def test_exec_it(engine, tmux):
    assert engine("run", "-d", "--name", "host", "busybox", "sleep", "300").returncode == 0
    tmux.start(command(engine, "exec", "-it", "-e", "GREETING=hi", "host", "sh"), engine.env)
    tmux.wait_for("/ #")
    tmux.send("echo $GREETING; tty; stty size", "Enter")
    screen = tmux.wait_for("30 100")
    assert "\nhi\n" in screen
    tmux.send("exit 7", "Enter")
    tmux.wait_for("EXIT=7")
    assert "/dev/pts/" in screen


def test_signal_proxy(engine, tmux):
    script = "trap 'echo got INT; exit 9' INT; echo ready; while true; do sleep 1; done"
    tmux.start(command(engine, "run", "--rm", "busybox", "sh", "-c", script), engine.env)
    tmux.wait_for("ready")
    tmux.send("C-c")
    screen = tmux.wait_for("EXIT=", timeout=20)
    assert "got INT" in screen and "EXIT=9" in screen


def test_start_ai(engine, tmux):
    assert engine("create", "-it", "--name", "later", "busybox", "sh").returncode == 0
    tmux.start(command(engine, "start", "-ai", "later"), engine.env)
    tmux.wait_for("/ #")
    tmux.send("echo started-later; exit 2", "Enter")
    screen = tmux.wait_for("EXIT=2")
    assert "\nstarted-later" in screen
