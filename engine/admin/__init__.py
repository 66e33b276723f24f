"""``engine-admin``: the installed drivers and which would be selected (the daemon's own
selection, :func:`engine.drivers.discovery.select`), the host's kernel features
(:mod:`~engine.admin.checks`) and the systemd units (:mod:`~engine.admin.systemd`, ``units/``)."""
