"""The daemon's ``/info`` warnings that depend on its configuration alone."""

from __future__ import annotations

import subprocess
import sys

import pytest

from engine.daemon.config import Config
from engine.daemon.info import shim_memory_merge_warning
from engine.sys import ksm


def test_shim_memory_merge_warns_only_when_set_and_without_effect(tmp_path):
    run_file = tmp_path / "run"
    run_file.write_text("0\n")
    assert shim_memory_merge_warning(Config(), str(run_file)) is None
    warning = shim_memory_merge_warning(Config(shim_memory_merge=True), str(run_file))
    assert warning is not None and warning.startswith("WARNING: --shim-memory-merge has no effect: ")
    if ksm.unsupported() is None:
        assert warning.endswith(f"ksmd does not run ({run_file} is not 1)")
        run_file.write_text("1\n")
        assert shim_memory_merge_warning(Config(shim_memory_merge=True), str(run_file)) is None


@pytest.mark.skipif(ksm.unsupported() is not None, reason=str(ksm.unsupported()))
def test_a_process_that_opts_in_is_seen_merging():
    code = "from engine.sys import ksm; import sys; sys.exit(0 if ksm.merge_this_process() and ksm.merging() else 1)"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0
    assert not ksm.merging()  # the test process itself never opted in
