"""The embedded DNS server of containers on user-defined networks (libnetwork's resolver).

* :mod:`engine.dns.records` -- what a container may resolve (the records
  document the daemon writes) and the answers, in DNS's wire format
  (dnslib);
* :mod:`engine.dns.server` -- the resolver process, one per daemon root, that
  serves every container's ``127.0.0.11:53`` from sockets made in the
  containers' network namespaces and forwards the rest;
* :mod:`engine.dns.control` -- the little protocol between the daemon and the
  resolver process (sockets passed with SCM_RIGHTS, JSON requests).

The daemon's side, which makes the sockets and the rules and feeds the
records, is :mod:`engine.daemon.dns`.
"""
