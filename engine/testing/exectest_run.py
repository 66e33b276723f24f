"""Run one container through an exec driver in this process, as a shim would: the conformance suite's helper.

``python -m engine.testing.exectest_run DRIVER HOME COMMAND_JSON STATUS_FD``

``run()`` may unshare the PID namespace of its caller, so tests never call
it in the pytest process; they start this module instead. The container's
stdio is this process's 0, 1 and 2 (all three the pty slave for a tty).
Events go to ``STATUS_FD`` as JSON lines, with times measured around
``run()``::

    {"event": "started", "pid": 1234, "elapsed": 0.012}   (from start_callback)
    {"event": "exited", "code": 0, "elapsed": 0.015}
    {"event": "error", "type": "ExecStartError", "message": "exec: ..."}
"""

from __future__ import annotations

import json
import os
import sys
import time

from engine.drivers.discovery import load_drivers
from engine.drivers.exec import Command, Pipes


def main(argv: list[str]) -> int:
    driver_name, home, command_path, status_fd = argv[1], argv[2], argv[3], int(argv[4])

    def send(**event: object) -> None:
        os.write(status_fd, (json.dumps(event) + "\n").encode())

    entry = load_drivers("exec")[driver_name]
    driver = entry.cls(home)
    with open(command_path) as fh:
        command = Command.from_json(json.load(fh))
    tty = command.process.tty
    pipes = Pipes(stdin=0, stdout=0 if tty else 1, stderr=0 if tty else 2)
    began = time.perf_counter()
    try:
        code = driver.run(
            command, pipes, lambda pid: send(event="started", pid=pid, elapsed=time.perf_counter() - began)
        )
    except Exception as exc:
        send(event="error", type=type(exc).__name__, message=str(exc))
        return 1
    send(event="exited", code=code, elapsed=time.perf_counter() - began)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
