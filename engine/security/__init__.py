"""What confines a container, as plain rules shared by the daemon and the exec drivers.

* :mod:`engine.security.seccomp`: Docker's seccomp profiles (the JSON format of
  ``--security-opt seccomp=``), checked and resolved against a container's
  capabilities, the machine and the kernel; the default profile ships as
  ``seccomp_default.json`` beside it.
* :mod:`engine.security.caps`: capability names, Docker's default set and
  moby's cap-add/cap-drop rules.
* :mod:`engine.security.users`: ``--user`` resolved against a container's
  /etc/passwd and /etc/group, with runc's rules and messages.
* :mod:`engine.security.sysctls`: which sysctls a container may set (only the
  ones its own namespaces hold), with runc's messages.

Nothing here changes the system: the daemon checks requests with these
rules at create, the exec driver applies them at start.
"""
