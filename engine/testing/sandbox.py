"""pytest plugin: run the whole test session inside its own namespaces.

Loaded with ``-p engine.testing.sandbox`` (see ``pyproject.toml``). When
pytest starts as root outside a sandbox, it re-executes itself under
``unshare --mount --net --pid --fork`` with a small init as PID 1
(:func:`init_main`), so that

* every mount a test makes is private to the session and vanishes with it;
* every interface, address and iptables rule lives in a network namespace
  that dies with the session (only ``lo`` exists, and it is brought up so
  that servers on 127.0.0.1 work); no traffic can leave it;
* every process a test starts is killed when the session ends, and orphans
  (container shims, daemons) are reaped by the init, as on a real host.

Cgroups are not namespaced here: tests that create cgroups remove them.
Set ``ENGINE_TEST_NO_SANDBOX=1`` to run in the caller's namespaces.
"""

from __future__ import annotations

import os
import shutil
import signal
import sys

MARK = "ENGINE_TEST_SANDBOX"


def in_sandbox() -> bool:
    return os.environ.get(MARK) == "1"


def _want_sandbox() -> bool:
    return (
        os.geteuid() == 0
        and not in_sandbox()
        and os.environ.get("ENGINE_TEST_NO_SANDBOX") != "1"
        and shutil.which("unshare") is not None
    )


def pytest_load_initial_conftests(early_config, parser, args):  # noqa: ARG001
    """Re-exec pytest in the sandbox before any test module is imported."""
    if not _want_sandbox():
        return
    # pytest already redirected fds 1 and 2 into its capture files; give the
    # real ones back or the re-executed pytest would write into those.
    capman = early_config.pluginmanager.getplugin("capturemanager")
    if capman is not None:
        capman.stop_global_capturing()
    sys.stdout.flush()
    sys.stderr.flush()
    env = dict(os.environ, **{MARK: "1"})
    argv = [
        "unshare",
        "--mount",
        "--net",
        "--pid",
        "--fork",
        "--mount-proc",
        "--propagation",
        "private",
        sys.executable,
        "-m",
        "engine.testing.sandbox",
        sys.executable,
        "-m",
        "pytest",
        *args,
    ]
    os.execvpe("unshare", argv, env)


def _bring_up_loopback() -> None:
    from pyroute2 import IPRoute

    with IPRoute() as ipr:
        idx = ipr.link_lookup(ifname="lo")[0]
        ipr.link("set", index=idx, state="up")


def init_main(argv: list[str]) -> int:
    """PID 1 of the sandbox: start ``argv``, reap every orphan, pass its status on."""
    _bring_up_loopback()
    child = os.fork()
    if child == 0:
        os.setpgid(0, 0)
        os.execvp(argv[0], argv)

    def forward(signum, _frame):
        try:
            os.kill(child, signum)
        except ProcessLookupError:
            pass

    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, forward)
    while True:
        try:
            pid, status = os.wait()
        except ChildProcessError:
            return 1
        except InterruptedError:
            continue
        if pid == child:
            return os.waitstatus_to_exitcode(status) if not os.WIFSIGNALED(status) else 128 + os.WTERMSIG(status)


if __name__ == "__main__":
    sys.exit(init_main(sys.argv[1:]))
