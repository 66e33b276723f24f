"""Standard-library helpers the client, the daemon and the shim share (layer 2: they import nothing of the engine but :mod:`engine.errors`).

* :mod:`~engine.utils.timefmt`: Go's RFC 3339 with nanoseconds, written and read;
* :mod:`~engine.utils.units`: go-units (sizes, durations, ulimits) and Go's ``strconv`` integers;
* :mod:`~engine.utils.stdcopy`: Docker's multiplexed stdout/stderr stream;
* :mod:`~engine.utils.sockets`: the hijacked connection's socket helpers;
* :mod:`~engine.utils.records`: :class:`~engine.utils.records.Record`, dataclass-like records
  that keep ``dataclasses`` and ``inspect`` out of every shim;
* :mod:`~engine.utils.progress`: Docker's JSON progress messages and bars;
* :mod:`~engine.utils.tables`: docker-style tables for the command-line programs;
* :mod:`~engine.utils.logs`: the processes' logging set-up;
* :mod:`~engine.utils.truncindex`: IDs found by unique prefix;
* :mod:`~engine.utils.host`: facts about the host (``/etc/os-release``, ``/proc``).

The shim imports some of them: each stays light (no third-party module).
"""
