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
    with pytest.raises(InvalidParameter, match='error looking up logging plugin gelf: plugin "gelf" not found'):
        merge_log_config({"Type": "gelf"}, Config())
    with pytest.raises(InvalidParameter, match="unknown log opt 'max-sise' for json-file log driver"):
        merge_log_config({"Config": {"max-sise": "1m"}}, Config())
    with pytest.raises(InvalidParameter, match="compress cannot be true when max-file is less than 2"):
        merge_log_config({"Config": {"compress": "true", "max-size": "1m"}}, Config())
    with pytest.raises(InvalidParameter, match="compression cannot be enabled when max file count is 1"):
        merge_log_config({"Type": "local", "Config": {"max-file": "1"}}, Config())
    with pytest.raises(InvalidParameter, match="unknown log opt 'tag' for local log driver"):
        merge_log_config({"Type": "local", "Config": {"tag": "x"}}, Config())
    with pytest.raises(InvalidParameter, match="logger: logging mode not supported: bogus"):
        merge_log_config({"Config": {"mode": "bogus"}}, Config())
    with pytest.raises(InvalidParameter, match="max-buffer-size option is only supported with 'mode=non-blocking'"):
        merge_log_config({"Config": {"max-buffer-size": "4m"}}, Config())


@pytest.mark.parametrize(
    "log_config",
    [
        {"Config": {"compress": "true", "max-size": "1m", "max-file": "2"}},
        {"Config": {"mode": "non-blocking", "max-buffer-size": "4m"}},
        {"Type": "local", "Config": {"max-file": "1", "compress": "false"}},
        {"Type": "local", "Config": {"max-size": "10m", "mode": "blocking"}},
        {"Type": "none", "Config": {"anything": "goes"}},  # moby checks nothing for none
    ],
)
def test_accepted_as_moby_accepts(log_config):
    merge_log_config(log_config, Config())
