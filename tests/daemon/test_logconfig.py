"""The daemon's log-driver/log-opts defaults merged into containers' LogConfig (moby's mergeAndVerifyLogConfig)."""

from __future__ import annotations

import pytest

from engine.daemon.config import Config
from engine.daemon.logconfig import merge_log_config
from engine.errors import InvalidParameter


def test_defaults_fill_what_the_container_leaves_out():
    cfg = Config(log_opts={"max-size": "10m", "max-file": "3"})
    assert merge_log_config(None, cfg) == {"Type": "json-file", "Config": {"max-size": "10m", "max-file": "3"}}
    # The docker CLI sends an empty Type unless --log-driver is given.
    got = merge_log_config({"Type": "", "Config": {"max-size": "1m"}}, cfg)
    assert got == {"Type": "json-file", "Config": {"max-size": "1m", "max-file": "3"}}
    assert merge_log_config({"Type": "json-file", "Config": {}}, Config()) == {"Type": "json-file", "Config": {}}


def test_bad_container_options_are_refused_in_mobys_words():
    with pytest.raises(InvalidParameter, match="logger: no log driver named 'gelf' is registered"):
        merge_log_config({"Type": "gelf"}, Config())
    with pytest.raises(InvalidParameter, match="unknown log opt 'max-sise' for json-file log driver"):
        merge_log_config({"Config": {"max-sise": "1m"}}, Config())
    with pytest.raises(InvalidParameter, match="compress=true is not supported"):
        merge_log_config({"Config": {"compress": "true", "max-size": "1m", "max-file": "2"}}, Config())
