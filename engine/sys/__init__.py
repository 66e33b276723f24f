"""Kernel and file-system helpers: libc calls through ctypes (:mod:`~engine.sys.libc`), cgroups
(:mod:`~engine.sys.cgroups`), readers of /proc: the mount table and whether a process lives
(:mod:`~engine.sys.proc`), and safe copies, deletions, mounts and atomic writes (:mod:`~engine.sys.fs`).

Drivers may import this package, as they import :mod:`engine.drivers`,
:mod:`engine.errors` and :mod:`engine.archive`.
"""
