"""Docker's masked and read-only paths."""

from __future__ import annotations

from engine.security import paths


def test_default_lists():
    masked = paths.default_masked_paths()
    for path in ("/proc/kcore", "/proc/keys", "/proc/interrupts", "/sys/firmware", "/sys/devices/virtual/powercap"):
        assert path in masked
    assert paths.DEFAULT_READONLY_PATHS == ("/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger")


def test_possible_cpus(tmp_path):
    f = tmp_path / "possible"
    f.write_text("0-3,8\n")
    assert paths.possible_cpus(str(f)) == [0, 1, 2, 3, 8]
    f.write_text("0\n")
    assert paths.possible_cpus(str(f)) == [0]
    assert paths.possible_cpus(str(tmp_path / "missing")) == []
