"""Volumes: named and anonymous volumes on a vfs-backed volumes graph (seed
ch. 4 §4.4.6), and the mount points a container gets from ``Binds``,
``Mounts``, ``Tmpfs``, ``VolumesFrom`` and its image's ``VOLUME``s.

As in the seed, volume data lives in layers of a vfs graph driver of its own
(``<root>/volumes/vfs/dir/<sha256 of the name>``); each volume's metadata is
``<root>/volumes/<name>.json``. A volume exists once its metadata does (it
is written after its layer is made); a removal first renames the metadata
to ``.<name>.removing``, so that a crash leaves a marker the next start
finishes, never a volume without its data.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import secrets
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

from engine.daemon import volumeopts
from engine.errors import Conflict, InvalidParameter, NotFound
from engine.sys import libc
from engine.sys.fs import atomic_write, copy_tree, mounts_below, remove_write_leftovers

LOG = logging.getLogger(__name__)

_NAME = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.-]+$")
#: The suffix of the marker of a removal under way (``.<name>.removing``).
REMOVING = ".removing"


def _created() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


class VolumeStore:
    """Local volumes.

    :param root: the daemon root (volumes live in ``<root>/volumes``).
    :param driver: the vfs graph driver whose layers hold volume data.
    :param owner: the host IDs a new volume's directory belongs to: the
        containers' root, which ``--userns-remap`` moves (dockerd's rule).
    """

    def __init__(self, root: str, driver: Any, owner: tuple[int, int] = (0, 0)) -> None:
        self.dir = os.path.join(root, "volumes")
        os.makedirs(self.dir, mode=0o700, exist_ok=True)
        self.driver = driver
        self.owner = owner
        self._lock = threading.RLock()
        self._meta: dict[str, dict] = {}
        #: Holders of each volume whose device is mounted (volumes with driver options).
        self._mounts: dict[str, int] = {}
        #: ``fn(name) -> [container ids]`` using the volume, set by the daemon.
        self.users: Callable[[str], list[str]] = lambda name: []
        for entry in remove_write_leftovers(self.dir):
            LOG.warning("removed %s, left by a crash while volume metadata was written", entry)
        for entry in os.listdir(self.dir):
            if entry.startswith(".") and entry.endswith(REMOVING):
                self._finish_removal(entry[1 : -len(REMOVING)])
            elif entry.endswith(".json"):
                try:
                    with open(os.path.join(self.dir, entry), "rb") as fh:
                        meta = json.load(fh)
                    self._meta[meta["Name"]] = meta
                except (OSError, ValueError, KeyError) as exc:
                    LOG.error("volume metadata %s is unreadable: %s", entry, exc)

    @staticmethod
    def layer_id(name: str) -> str:
        return hashlib.sha256(name.encode()).hexdigest()

    def path(self, name: str) -> str:
        """The volume's data directory (no reference is kept)."""
        lid = self.layer_id(name)
        path = self.driver.get(lid)
        self.driver.put(lid)
        return path

    def hold(self, name: str) -> str:
        """Take a reference for a running container (the layer cannot be removed); a volume
        with driver options gets its device mounted by the first (:mod:`engine.daemon.volumeopts`).

        :raises HostError: the device cannot be mounted (moby's ``failed to mount local volume``).
        """
        lid = self.layer_id(name)
        path = self.driver.get(lid)
        opts = (self._meta.get(name) or {}).get("Options") or {}
        if not volumeopts.needs_mount(opts):
            return path
        with self._lock:
            count = self._mounts.get(name, 0)
            # A mount a previous daemon made (its containers ran on) is taken over as it is.
            if count == 0 and path not in mounts_below(path):
                try:
                    volumeopts.mount_volume(path, opts)
                except BaseException:
                    self.driver.put(lid)
                    raise
            self._mounts[name] = count + 1
        return path

    def release(self, name: str) -> None:
        """Give back a reference; the last one unmounts what :meth:`hold` mounted."""
        lid = self.layer_id(name)
        with self._lock:
            count = self._mounts.get(name, 0)
            if count == 1:
                del self._mounts[name]
                volumeopts.unmount_volume(self.path(name))
            elif count:
                self._mounts[name] = count - 1
        self.driver.put(lid)

    def create(
        self,
        name: str | None = None,
        labels: dict | None = None,
        options: dict | None = None,
        driver: str = "local",
        anonymous: bool = False,
    ) -> tuple[dict, bool]:
        """Create a volume (or return the existing one of that name)."""
        if driver not in ("", "local"):
            raise NotFound(f'error looking up volume plugin {driver}: plugin "{driver}" not found')
        try:
            volumeopts.validate_options(dict(options or {}))
        except InvalidParameter as exc:
            raise InvalidParameter(f"create {name}: {exc}" if name else str(exc)) from None
        if not name:
            name = secrets.token_hex(32)
        elif not _NAME.match(name):
            raise InvalidParameter(
                f'create {name}: "{name}" includes invalid characters for a local volume name, '
                'only "[a-zA-Z0-9][a-zA-Z0-9_.-]" are allowed. If you intended to pass a host directory, '
                "use absolute path"
            )
        with self._lock:
            if name in self._meta:
                return self.inspect(name), False
            lid = self.layer_id(name)
            if not self.driver.exists(lid):
                self.driver.create(lid)
                if self.owner != (0, 0):
                    path = self.driver.get(lid)
                    try:
                        os.chown(path, *self.owner)
                    finally:
                        self.driver.put(lid)
            meta = {
                "Name": name,
                "Driver": "local",
                "Labels": dict(labels or {}),
                "Options": dict(options or {}),
                "CreatedAt": _created(),
                "Scope": "local",
                "Anonymous": anonymous,
            }
            atomic_write(os.path.join(self.dir, name + ".json"), json.dumps(meta).encode(), mode=0o600)
            self._meta[name] = meta
            return self.inspect(name), True

    def exists(self, name: str) -> bool:
        return name in self._meta

    def inspect(self, name: str) -> dict:
        meta = self._meta.get(name)
        if meta is None:
            raise NotFound(f"get {name}: no such volume")
        path = self.driver.get(self.layer_id(name))
        self.driver.put(self.layer_id(name))
        return {
            "CreatedAt": meta["CreatedAt"],
            "Driver": "local",
            "Labels": meta.get("Labels") or {},
            "Mountpoint": path,
            "Name": name,
            "Options": meta.get("Options") or {},
            "Scope": "local",
        }

    def list(self) -> list[dict]:
        return [self.inspect(name) for name in sorted(self._meta)]

    def remove(self, name: str, force: bool = False) -> None:
        with self._lock:
            if name not in self._meta:
                if force:
                    return
                raise NotFound(f"get {name}: no such volume")
            users = self.users(name)
            if users:
                raise Conflict(f"remove {name}: volume is in use - [{', '.join(users)}]")
            os.rename(os.path.join(self.dir, name + ".json"), self._removing(name))
            del self._meta[name]
            self._finish_removal(name)

    def _removing(self, name: str) -> str:
        return os.path.join(self.dir, f".{name}{REMOVING}")

    def _finish_removal(self, name: str) -> None:
        """Remove the data of a volume whose metadata is gone, then its removal marker."""
        lid = self.layer_id(name)
        if self.driver.exists(lid):
            self.driver.remove(lid)
        try:
            os.unlink(self._removing(name))
        except FileNotFoundError:
            pass

    def remove_leftover(self, name: str) -> None:
        """Remove what a create cut short by a crash made of volume ``name`` (an anonymous one it
        journaled): the volume, unless a container uses it, or its data without metadata."""
        with self._lock:
            if name in self._meta:
                if not self.users(name):
                    LOG.info("removing volume %s, made by a create a crash cut short", name[:12])
                    self.remove(name)
                return
            if self.driver.exists(self.layer_id(name)):
                self._finish_removal(name)

    def size(self, name: str) -> int:
        total = 0
        for dirpath, _dirs, files in os.walk(self.path(name)):
            for f in files:
                try:
                    total += os.lstat(os.path.join(dirpath, f)).st_size
                except OSError:
                    pass
        return total

    def prune(self, labels: Iterable[str] = (), not_labels: Iterable[str] = (), anonymous_only: bool = False) -> dict:
        """Remove the unused volumes that match (moby's ``VolumesService.Prune``): those with
        ``labels`` and none of ``not_labels``, only anonymous ones with ``anonymous_only`` (API
        1.42's default); volumes with driver options (a tmpfs, an NFS share) are never pruned."""
        deleted, reclaimed = [], 0
        for name in list(self._meta):
            if self.users(name):
                continue
            meta = self._meta[name]
            if meta.get("Options") or (anonymous_only and not meta.get("Anonymous")):
                continue
            own = meta.get("Labels") or {}
            if not _labels_match(own, labels) or any(_labels_match(own, [label]) for label in not_labels):
                continue
            reclaimed += self.size(name)
            self.remove(name)
            deleted.append(name)
        return {"VolumesDeleted": deleted or None, "SpaceReclaimed": reclaimed}

    def is_anonymous(self, name: str) -> bool:
        return bool(self._meta.get(name, {}).get("Anonymous"))

    def copy_up(self, name: str, source: str) -> None:
        """Fill a new, empty volume with what the image has at its mount point
        (owner, mode and all), as Docker does unless ``nocopy`` is given."""
        dest = self.hold(name)
        try:
            if os.path.isdir(source) and not os.path.islink(source) and not os.listdir(dest):
                copy_tree(source, dest)
        finally:
            self.release(name)


def _labels_match(labels: dict, wanted: Iterable[str]) -> bool:
    for item in wanted:
        key, sep, value = item.partition("=")
        if key not in labels or (sep and labels[key] != value):
            return False
    return True


def parse_bind(spec: str) -> dict:
    """``-v SRC:DST[:MODE]`` (or an anonymous ``DST``) -> a mount point dict."""
    parts = spec.split(":")
    if len(parts) == 1:
        dst, src, mode = parts[0], "", ""
    elif len(parts) == 2:
        src, dst, mode = parts[0], parts[1], ""
    elif len(parts) == 3:
        src, dst, mode = parts
    else:
        raise InvalidParameter(f"invalid volume specification: '{spec}'")
    if not dst.startswith("/"):
        raise InvalidParameter(
            f"invalid volume specification: '{spec}': invalid mount config for type "
            f"\"volume\": invalid mount path: '{dst}' mount path must be absolute"
        )
    opts = [o for o in mode.split(",") if o]
    for o in opts:
        if o not in (
            "ro",
            "rw",
            "z",
            "Z",
            "nocopy",
            "private",
            "rprivate",
            "shared",
            "rshared",
            "slave",
            "rslave",
            "consistent",
            "cached",
            "delegated",
        ):
            raise InvalidParameter(f"invalid mode: {o}")
    rw = "ro" not in opts
    propagation = next((o for o in opts if o.endswith(("private", "shared", "slave"))), "rprivate")
    if not src:
        kind = "volume"
    elif src.startswith("/"):
        kind = "bind"
    else:
        kind = "volume"
    return {
        "Type": kind,
        "Name": src if kind == "volume" else "",
        "Source": src if kind == "bind" else "",
        "Destination": os.path.normpath(dst),
        "Mode": mode,
        "RW": rw,
        "Propagation": propagation if kind == "bind" else "",
        "NoCopy": "nocopy" in opts,
    }


def parse_mount(m: dict) -> dict:
    """``HostConfig.Mounts`` entry (``--mount``) -> a mount point dict."""
    kind = (m.get("Type") or "").lower()
    target = m.get("Target") or ""
    if not target.startswith("/"):
        raise InvalidParameter(
            f"invalid mount config for type \"{kind}\": invalid mount path: '{target}' mount path must be absolute"
        )
    source = m.get("Source") or ""
    ro = bool(m.get("ReadOnly"))
    if kind == "bind":
        if not source:
            raise InvalidParameter('invalid mount config for type "bind": field Source must not be empty')
        bind_options = m.get("BindOptions") or {}
        # CreateMountpoint (API 1.42) makes a missing source as -v does; the create makes it.
        if not os.path.exists(source) and not bind_options.get("CreateMountpoint"):
            raise InvalidParameter(f'invalid mount config for type "bind": bind source path does not exist: {source}')
        prop = bind_options.get("Propagation") or "rprivate"
        point = {
            "Type": "bind",
            "Name": "",
            "Source": source,
            "Destination": os.path.normpath(target),
            "Mode": "",
            "RW": not ro,
            "Propagation": prop,
            "NoCopy": False,
        }
        # How a read-only bind is read-only (API 1.44): its submounts too unless it says not.
        for key in ("ReadOnlyNonRecursive", "ReadOnlyForceRecursive"):
            if bind_options.get(key):
                if not ro:
                    raise InvalidParameter(f"options conflict: Writable && {key}")
                point[key] = True
        if point.get("ReadOnlyNonRecursive") and point.get("ReadOnlyForceRecursive"):
            raise InvalidParameter("options conflict: ReadOnlyNonRecursive && ReadOnlyForceRecursive")
        return point
    if kind == "volume":
        opts = m.get("VolumeOptions") or {}
        subpath = opts.get("Subpath") or ""
        if subpath:
            if not source:
                raise InvalidParameter(
                    'invalid mount config for type "volume": must not set Subpath when using anonymous volumes'
                )
            if os.path.isabs(subpath) or ".." in subpath.split("/"):
                raise InvalidParameter(
                    'invalid mount config for type "volume": subpath must be a relative path within the volume'
                )
        point = {
            "Type": "volume",
            "Name": source,
            "Source": "",
            "Destination": os.path.normpath(target),
            "Mode": "",
            "RW": not ro,
            "Propagation": "",
            "NoCopy": bool(opts.get("NoCopy")),
            "Labels": opts.get("Labels") or {},
        }
        driver_config = opts.get("DriverConfig") or {}
        if (driver_config.get("Name") or "local") != "local":
            name = driver_config["Name"]
            raise NotFound(f'error looking up volume plugin {name}: plugin "{name}" not found')
        if driver_config.get("Options"):
            point["DriverOpts"] = dict(driver_config["Options"])
        if subpath:
            point["Subpath"] = os.path.normpath(subpath)
        return point
    if kind == "tmpfs":
        if source:
            raise InvalidParameter('invalid mount config for type "tmpfs": field Source must not be specified')
        topts = m.get("TmpfsOptions") or {}
        data = []
        if topts.get("SizeBytes"):
            data.append(f"size={int(topts['SizeBytes'])}")
        if topts.get("Mode"):
            data.append(f"mode={int(topts['Mode']):o}")
        return {
            "Type": "tmpfs",
            "Name": "",
            "Source": "",
            "Destination": os.path.normpath(target),
            "Mode": ",".join(data),
            "RW": not ro,
            "Propagation": "",
            "NoCopy": False,
        }
    raise InvalidParameter(f"mount type unknown: {kind!r}")


def volume_subpath(volume_dir: str, subpath: str) -> str:
    """The directory ``subpath`` of a volume (``VolumeOptions.Subpath``, API 1.45), checked the
    way moby's ``safepath.Join`` does: it must exist, and no component may be a symlink (one
    could lead out of the volume).

    :raises NotFound: ``cannot access path ...`` when it does not exist or a component is a link.
    """
    try:
        fd = libc.openat2(libc.AT_FDCWD, os.path.join(volume_dir, subpath), os.O_PATH, resolve=libc.RESOLVE_NO_SYMLINKS)
    except OSError as exc:
        raise NotFound(f"cannot access path {os.path.join(volume_dir, subpath)}: {exc.strerror}") from None
    os.close(fd)
    return os.path.join(volume_dir, subpath)


def parse_tmpfs(dest: str, options: str) -> dict:
    if not dest.startswith("/"):
        raise InvalidParameter(f"invalid mount path {dest!r}: must be absolute")
    return {
        "Type": "tmpfs",
        "Name": "",
        "Source": "",
        "Destination": os.path.normpath(dest),
        "Mode": options or "",
        "RW": "ro" not in (options or "").split(","),
        "Propagation": "",
        "NoCopy": False,
    }


def api_mount(point: dict, store: VolumeStore | None = None) -> dict:
    """A mount point as ``Mounts`` in inspect and list (1.41 MountPoint)."""
    out = {"Type": point["Type"]}
    if point["Type"] == "volume":
        out["Name"] = point["Name"]
        out["Source"] = point.get("Source") or ""
        out["Destination"] = point["Destination"]
        out["Driver"] = "local"
    else:
        out["Source"] = point.get("Source", "")
        out["Destination"] = point["Destination"]
    out["Mode"] = point.get("Mode", "")
    out["RW"] = point.get("RW", True)
    out["Propagation"] = point.get("Propagation", "")
    return out
