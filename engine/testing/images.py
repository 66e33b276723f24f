"""Test images built locally, without the internet.

* :func:`busybox_archive`: a busybox image from Debian's ``busybox-static``
  (``/bin/busybox``), as a docker-archive tar that both this engine and
  dockerd load;
* :func:`layered_archive`: a three-layer image exercising whiteouts, opaque
  directories, hard links and symlinks;
* :func:`big_archive`: a ~100 MB three-layer image for benchmarks.

Everything is deterministic (fixed times, sorted entries, numeric owners),
so the same call gives the same bytes and so the same image IDs.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import random
import subprocess
import tarfile
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass, field

from engine.testing.layertar import Entry, make_layer_tar

#: 2024-01-01T00:00:00Z: every file and config in the test images.
EPOCH = 1704067200
CREATED = "2024-01-01T00:00:00Z"
PATH_ENV = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
BUSYBOX = "/bin/busybox"


@dataclass
class BuiltImage:
    """An image to put in an archive: layer tars (uncompressed) and a config."""

    layers: list[bytes]
    config: dict
    tags: list[str] = field(default_factory=list)

    def diff_ids(self) -> list[str]:
        return ["sha256:" + hashlib.sha256(layer).hexdigest() for layer in self.layers]

    def config_bytes(self) -> bytes:
        cfg = dict(self.config)
        cfg["rootfs"] = {"type": "layers", "diff_ids": self.diff_ids()}
        return json.dumps(cfg, separators=(",", ":"), sort_keys=True).encode()

    @property
    def id(self) -> str:
        return "sha256:" + hashlib.sha256(self.config_bytes()).hexdigest()


def image_config(cmd: list[str], history: list[dict], env: list[str] | None = None, **extra: object) -> dict:
    return {
        "architecture": "amd64",
        "os": "linux",
        "created": CREATED,
        "config": {"Env": env or [PATH_ENV], "Cmd": cmd, **extra},
        "history": history,
    }


def _add(
    tar: tarfile.TarFile,
    name: str,
    data: bytes | None = None,
    kind: bytes = tarfile.REGTYPE,
    link: str = "",
    mode: int = 0o644,
) -> None:
    info = tarfile.TarInfo(name)
    info.mtime = EPOCH
    info.type = kind
    info.mode = mode
    info.linkname = link
    info.size = len(data) if data is not None else 0
    tar.addfile(info, io.BytesIO(data) if data is not None else None)


def docker_archive(images: Iterable[BuiltImage]) -> bytes:
    """A docker-archive (``docker save`` of Docker 20.10): legacy layer
    directories, ``<id>.json`` configs, ``manifest.json`` and ``repositories``."""
    buf = io.BytesIO()
    manifest = []
    repositories: dict[str, dict[str, str]] = {}
    seen: set[str] = set()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for image in images:
            paths = []
            v1 = ""
            for layer, diff in zip(image.layers, image.diff_ids()):
                v1 = hashlib.sha256(f"{v1} {diff}".encode()).hexdigest()
                paths.append(f"{v1}/layer.tar")
                if v1 in seen:
                    continue
                seen.add(v1)
                _add(tar, v1, kind=tarfile.DIRTYPE, mode=0o755)
                _add(tar, f"{v1}/VERSION", b"1.0")
                _add(tar, f"{v1}/json", json.dumps({"id": v1}).encode())
                _add(tar, f"{v1}/layer.tar", layer)
            config_name = image.id.split(":", 1)[1] + ".json"
            _add(tar, config_name, image.config_bytes())
            manifest.append({"Config": config_name, "RepoTags": list(image.tags), "Layers": paths})
            for tag in image.tags:
                repo, _, t = tag.rpartition(":")
                repositories.setdefault(repo, {})[t] = v1
        _add(tar, "manifest.json", json.dumps(manifest).encode())
        if repositories:
            _add(tar, "repositories", json.dumps(repositories).encode())
    return buf.getvalue()


def busybox_applets() -> list[str]:
    out = subprocess.run([BUSYBOX, "--list-full"], capture_output=True, text=True, check=True).stdout
    return sorted(line.strip() for line in out.splitlines() if line.strip())


def busybox_layer() -> bytes:
    """The root file system of a busybox image, as a layer tar."""
    if not os.path.exists(BUSYBOX):
        raise FileNotFoundError(f"{BUSYBOX} is missing: apt-get install busybox-static")
    with open(BUSYBOX, "rb") as fh:
        binary = fh.read()
    entries: list[Entry] = []
    dirs = {
        "bin",
        "dev",
        "etc",
        "home",
        "proc",
        "root",
        "sys",
        "tmp",
        "usr",
        "usr/bin",
        "usr/sbin",
        "sbin",
        "var",
        "var/spool",
        "var/spool/mail",
        "var/www",
    }
    applets = busybox_applets()
    for applet in applets:
        parent = os.path.dirname(applet).lstrip("/")
        while parent:
            dirs.add(parent)
            parent = os.path.dirname(parent)
    for d in sorted(dirs):
        mode = {"tmp": 0o1777, "root": 0o700}.get(d, 0o755)
        entries.append(Entry.dir(d, mode=mode, mtime=EPOCH))
    entries.append(Entry.file("bin/busybox", binary, mode=0o755, mtime=EPOCH))
    for applet in applets:
        rel = applet.lstrip("/")
        if rel == "bin/busybox":
            continue
        target = os.path.relpath("bin/busybox", os.path.dirname(rel))
        entries.append(Entry.symlink(rel, target, mtime=EPOCH))
    entries += [
        Entry.file(
            "etc/passwd",
            b"root:x:0:0:root:/root:/bin/sh\ndaemon:x:1:1:daemon:/usr/sbin:/bin/false\n"
            b"www-data:x:33:33:www-data:/var/www:/bin/false\n"
            b"nobody:x:65534:65534:nobody:/home:/bin/false\n",
            mtime=EPOCH,
        ),
        Entry.file(
            "etc/group", b"root:x:0:\ndaemon:x:1:\nwheel:x:10:root\nwww-data:x:33:\nnogroup:x:65534:\n", mtime=EPOCH
        ),
        Entry.file("etc/shadow", b"root:*:19000:0:99999:7:::\n", mode=0o640, mtime=EPOCH),
    ]
    entries.sort(key=lambda e: e.name)
    return make_layer_tar(entries)


def busybox_image(tags: Iterable[str] = ("busybox:latest",)) -> BuiltImage:
    layer = busybox_layer()
    digest = hashlib.sha256(layer).hexdigest()
    history: list[dict] = [
        {"created": CREATED, "created_by": f"/bin/sh -c #(nop) ADD file:{digest} in / "},
        {"created": CREATED, "created_by": '/bin/sh -c #(nop)  CMD ["sh"]', "empty_layer": True},
    ]
    return BuiltImage([layer], image_config(["sh"], history), list(tags))


def busybox_archive(tags: Iterable[str] = ("busybox:latest",)) -> bytes:
    return docker_archive([busybox_image(tags)])


def layered_image(tags: Iterable[str] = ("layered:latest",)) -> BuiltImage:
    """Three layers over nothing: whiteouts, an opaque dir, hard links, symlinks."""
    t = {"mtime": EPOCH}
    base = make_layer_tar(
        [
            Entry.dir("etc", **t),
            Entry.file("etc/os-release", b"ID=test\n", **t),
            Entry.dir("data", **t),
            Entry.file("data/keep", b"keep\n", **t),
            Entry.file("data/gone", b"gone\n", **t),
            Entry.dir("data/sub", **t),
            Entry.file("data/sub/a", b"a\n", **t),
            Entry.dir("opaque", **t),
            Entry.file("opaque/old1", b"1", **t),
            Entry.file("opaque/old2", b"2", **t),
            Entry.file("link-target", b"shared content\n", mode=0o640, **t),
            Entry.hardlink("hard-link", "link-target", **t),
            Entry.symlink("abs-link", "/etc/os-release", **t),
            Entry.symlink("rel-link", "etc/os-release", **t),
            Entry.fifo("pipe", **t),
            Entry.file("setuid", b"#!/bin/sh\n", mode=0o4755, **t),
            Entry.file("owned", b"owned by 1000\n", uid=1000, gid=1000, **t),
        ]
    )
    middle = make_layer_tar(
        [
            Entry.dir("data", **t),
            Entry.whiteout("data/gone"),
            Entry.dir("opaque", **t),
            Entry.opaque("opaque"),
            Entry.file("opaque/new", b"new\n", **t),
            Entry.file("data/sub/b", b"b\n", **t),
        ]
    )
    top = make_layer_tar(
        [
            Entry.dir("data", **t),
            Entry.whiteout("data/sub"),
            Entry.file("data/sub", b"now a file\n", **t),
            Entry.file("etc/os-release", b"ID=test\nVERSION=2\n", **t),
        ]
    )
    history = [{"created": CREATED, "created_by": f"layer {i}"} for i in range(3)]
    return BuiltImage([base, middle, top], image_config(["/bin/true"], history), list(tags))


def big_image(total_mb: int = 100, tags: Iterable[str] = ("big:latest",), seed: int = 7) -> BuiltImage:
    """Three layers of roughly ``total_mb`` MB of incompressible data in all."""
    rng = random.Random(seed)
    layers = []
    per_layer = total_mb * 1_000_000 // 3
    for index in range(3):
        entries = [Entry.dir(f"layer{index}", mtime=EPOCH)]
        left = per_layer
        n = 0
        while left > 0:
            size = min(left, rng.choice([4_000_000, 1_000_000, 200_000, 20_000]))
            entries.append(Entry.file(f"layer{index}/f{n:05d}", rng.randbytes(size), mtime=EPOCH))
            left -= size
            n += 1
        layers.append(make_layer_tar(entries))
    history = [{"created": CREATED, "created_by": f"big layer {i}"} for i in range(3)]
    return BuiltImage(layers, image_config(["/bin/true"], history), list(tags))


def write_archive(data: bytes, directory: str | None = None, name: str = "image.tar") -> str:
    directory = directory or tempfile.mkdtemp(prefix="engine-image-")
    path = os.path.join(directory, name)
    with open(path, "wb") as fh:
        fh.write(data)
    return path


__all__ = [
    "BuiltImage",
    "big_image",
    "busybox_archive",
    "busybox_image",
    "docker_archive",
    "layered_image",
    "write_archive",
]
