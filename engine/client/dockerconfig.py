"""The docker CLI's credentials file, ``$DOCKER_CONFIG/config.json`` (default ``~/.docker``).

``engine login`` writes, and every pull and push reads, the same file the
docker CLI does, so one login serves both::

    {"auths": {"127.0.0.1:5000": {"auth": "<base64 of user:password>"},
               "https://index.docker.io/v1/": {"auth": "...", "identitytoken": "..."}}}

Credential helpers (``credsStore``) are not run: entries must be in the file.
"""

from __future__ import annotations

import base64
import json
import os
from typing import Any

from engine.reference import INDEX_SERVER, host_of

CONFIG_FILE = "config.json"


def encode_header(conf: dict[str, str]) -> str:
    """Base64url JSON for an ``X-Registry-Auth`` header (``e30=`` for no credentials).

    The daemon reads it with :meth:`engine.registry.auth.AuthConfig.from_header`.
    """
    return base64.urlsafe_b64encode(json.dumps(conf, separators=(",", ":")).encode()).decode()


def config_dir() -> str:
    """``$DOCKER_CONFIG``, else ``~/.docker``."""
    return os.environ.get("DOCKER_CONFIG") or os.path.join(os.path.expanduser("~"), ".docker")


def load() -> dict[str, Any]:
    """The whole file as a dict (empty when missing or unreadable)."""
    try:
        with open(os.path.join(config_dir(), CONFIG_FILE)) as fh:
            doc = json.load(fh)
    except (OSError, ValueError):
        return {}
    return doc if isinstance(doc, dict) else {}


def save(doc: dict[str, Any]) -> str:
    """Write the file atomically with mode 0600 (it holds passwords); returns its path."""
    directory = config_dir()
    os.makedirs(directory, mode=0o700, exist_ok=True)
    path = os.path.join(directory, CONFIG_FILE)
    tmp = f"{path}.{os.getpid()}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "w") as fh:
            json.dump(doc, fh, indent="\t")
            fh.write("\n")
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def server_key(server: str | None) -> str:
    """The ``auths`` key for a login server: the Hub's index URL, or ``host[:port]`` as Docker writes it."""
    host = host_of(server or "")
    return INDEX_SERVER if host == "docker.io" else host


def store(server: str, username: str, password: str, identity_token: str = "") -> str:
    """Record credentials for ``server``; returns the file's path."""
    doc = load()
    auths = doc.setdefault("auths", {})
    entry: dict[str, str] = {"auth": base64.b64encode(f"{username}:{password}".encode()).decode()}
    if identity_token:
        # With a token the password is not kept, as the docker CLI does.
        entry = {"auth": base64.b64encode(f"{username}:".encode()).decode(), "identitytoken": identity_token}
    auths[server_key(server)] = entry
    return save(doc)


def erase(server: str) -> bool:
    """Forget the credentials for ``server``; whether there were any."""
    doc = load()
    auths = doc.get("auths") or {}
    key = server_key(server)
    if key not in auths:
        return False
    del auths[key]
    doc["auths"] = auths
    save(doc)
    return True


def credentials(domain: str) -> dict[str, str]:
    """The AuthConfig to send for registry ``domain`` (empty without one)."""
    auths = load().get("auths") or {}
    keys = [domain, f"https://{domain}", f"http://{domain}"]
    if domain == "docker.io":
        keys = [INDEX_SERVER, "index.docker.io", "docker.io", *keys]
    for key in keys:
        entry = auths.get(key)
        if not isinstance(entry, dict):
            continue
        conf: dict[str, str] = {"serveraddress": key}
        if entry.get("auth"):
            try:
                user, _, password = base64.b64decode(entry["auth"]).decode(errors="replace").partition(":")
            except ValueError:
                continue
            conf.update(username=user, password=password)
        if entry.get("identitytoken"):
            conf["identitytoken"] = entry["identitytoken"]
        if len(conf) > 1:
            return conf
    return {}


def auth_header(domain: str) -> str:
    """``X-Registry-Auth`` for ``domain``: base64url JSON, ``e30=`` (``{}``) without credentials."""
    return encode_header(credentials(domain))
