"""A container's security options: checked at create, translated for the exec driver at start.

moby splits this between create (``parseSecurityOpt``, ``generateSecurityOpt``,
the default masked paths) and start (``WithSeccomp``, runc's sysctl
checks). The engine makes every check at create, where a bad request is a
400 and leaves nothing behind, with dockerd's and runc's words:

* ``HostConfig.SecurityOpt``: ``no-new-privileges[=bool]``,
  ``seccomp=<profile JSON>|unconfined|builtin``, ``apparmor=<name>``,
  ``label=<...>`` (``key:value`` is the deprecated spelling); anything else is
  ``invalid --security-opt 2: "foo=bar"``;
* the seccomp profile: Docker's JSON format, checked whole (``Decoding
  seccomp profile failed: ...``);
* ``HostConfig.Sysctls``: only those the container's own namespaces hold
  (:mod:`engine.security.sysctls`).

At create the host config also gets what dockerd stores: Docker's masked and
read-only paths when none were given (so a later engine with other defaults
does not change the container), and ``label=disable`` for privileged
containers and those sharing the host's IPC or PID namespace.

The daemon's own options: ``--seccomp-profile`` (a file, or ``unconfined``)
replaces the built-in default profile, ``--no-new-privileges`` sets
no_new_privs for every new container unless its options say otherwise.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from engine.errors import InvalidParameter
from engine.security import paths, seccomp, sysctls

LOG = logging.getLogger(__name__)

__all__ = ["SecurityOptions", "SecurityPolicy", "parse_security_opt"]

UNCONFINED = "unconfined"
#: What newer dockerd accepts for the default profile (``seccomp=builtin``).
BUILTIN = "builtin"

_GO_TRUE = ("1", "t", "T", "TRUE", "true", "True")
_GO_FALSE = ("0", "f", "F", "FALSE", "false", "False")


@dataclass
class SecurityOptions:
    """``HostConfig.SecurityOpt`` parsed."""

    #: None: not given (the daemon's default applies).
    no_new_privileges: bool | None = None
    #: "": the daemon's default profile; ``unconfined``; else a profile's JSON.
    seccomp: str = ""
    apparmor: str = ""
    labels: list[str] = field(default_factory=list)


def parse_security_opt(options: list[str] | None) -> SecurityOptions:
    """moby's ``parseSecurityOpt`` rules and messages.

    :raises InvalidParameter: ``invalid --security-opt 1: "x"`` (no value) or
        ``invalid --security-opt 2: "x=y"`` (unknown option, bad boolean).
    """
    out = SecurityOptions()
    if options is not None and not isinstance(options, list):
        raise InvalidParameter("invalid SecurityOpt: want a list of strings")
    for opt in options or []:
        if not isinstance(opt, str):
            raise InvalidParameter(f"invalid --security-opt 1: {opt!r}: want a string")
        if opt == "no-new-privileges":
            out.no_new_privileges = True
            continue
        if opt == "disable":
            out.labels.append("disable")
            continue
        if "=" in opt:
            key, _, value = opt.partition("=")
        elif ":" in opt:
            key, _, value = opt.partition(":")  # the pre-17.04 spelling
        else:
            raise InvalidParameter(f'invalid --security-opt 1: "{opt}"')
        if key == "label":
            out.labels.append(value)
        elif key == "apparmor":
            out.apparmor = value
        elif key == "seccomp":
            out.seccomp = "" if value == BUILTIN else value
        elif key == "no-new-privileges" and value in _GO_TRUE + _GO_FALSE:
            out.no_new_privileges = value in _GO_TRUE
        else:
            raise InvalidParameter(f'invalid --security-opt 2: "{opt}"')
    return out


def _private_ipc(hc: dict[str, Any]) -> bool:
    return (hc.get("IpcMode") or "") != "host"


def _private_net(hc: dict[str, Any]) -> bool:
    # A container:<id> mode is checked again at start, where the namespace is known.
    return (hc.get("NetworkMode") or "default") != "host"


class SecurityPolicy:
    """The daemon's security defaults, and what they make of a container's options.

    :param config: the daemon's :class:`~engine.daemon.config.Config`
        (``seccomp_profile``, ``no_new_privileges``).
    :param seccomp_unsupported: None when the exec driver applies seccomp
        profiles, else why not (:meth:`ExecDriver.seccomp_support`).
    :raises InvalidParameter: ``--seccomp-profile`` cannot be read or is not a valid profile.
    """

    def __init__(self, config: Any, seccomp_unsupported: str | None) -> None:
        self.seccomp_unsupported = seccomp_unsupported
        self.no_new_privileges_default = bool(getattr(config, "no_new_privileges", False))
        path = getattr(config, "seccomp_profile", "") or ""
        self.profile_name = path or "default"
        if not path or path == BUILTIN:
            self.profile_name = "default"
            self.default_profile = seccomp.default_profile()
        elif path == UNCONFINED:
            self.default_profile = ""
        else:
            try:
                with open(path) as fh:
                    self.default_profile = fh.read()
            except OSError as exc:
                raise InvalidParameter(f"opening seccomp profile ({path}) failed: {exc.strerror}") from None
            seccomp.load_profile(self.default_profile)

    # ---- create

    def check_create(self, hc: dict[str, Any]) -> None:
        """Check the security options of a new container and store dockerd's defaults in ``hc``.

        :raises InvalidParameter: a bad security option, seccomp profile or sysctl.
        """
        opts = parse_security_opt(hc.get("SecurityOpt"))
        if opts.seccomp not in ("", UNCONFINED):
            if self.seccomp_unsupported is not None:
                raise InvalidParameter(
                    "seccomp is not enabled in your kernel, cannot run a custom seccomp profile "
                    f"({self.seccomp_unsupported})"
                )
            seccomp.load_profile(opts.seccomp)
        sysctl_map = hc.get("Sysctls") or {}
        if not isinstance(sysctl_map, dict):
            raise InvalidParameter("invalid Sysctls: want an object of name: value")
        for key, value in sysctl_map.items():
            if not isinstance(value, str):
                raise InvalidParameter(f"invalid value for sysctl {key}: want a string")
            sysctls.check(
                key,
                private_ipc=_private_ipc(hc),
                private_net=_private_net(hc),
                private_uts=(hc.get("UTSMode") or "") != "host",
            )
        privileged = bool(hc.get("Privileged"))
        if hc.get("MaskedPaths") is None and not privileged:
            hc["MaskedPaths"] = list(paths.default_masked_paths())
        if hc.get("ReadonlyPaths") is None and not privileged:
            hc["ReadonlyPaths"] = list(paths.DEFAULT_READONLY_PATHS)
        security_opt = list(hc.get("SecurityOpt") or [])
        if not any(o.split("=", 1)[0] == "label" for o in security_opt) and (
            privileged or hc.get("IpcMode") == "host" or hc.get("PidMode") == "host"
        ):
            # moby's generateSecurityOpt: no SELinux confinement when the host's namespaces are shared.
            hc["SecurityOpt"] = [*security_opt, "label=disable"]

    # ---- start

    def seccomp_profile(self, hc: dict[str, Any]) -> str:
        """The profile (JSON) the container runs under; "" for none (privileged, ``unconfined``).

        A container created with the default gets the daemon's current default.
        """
        if hc.get("Privileged"):
            return ""
        chosen = parse_security_opt(hc.get("SecurityOpt")).seccomp
        if chosen == UNCONFINED:
            return ""
        if chosen:
            return chosen
        if self.seccomp_unsupported is not None:
            LOG.debug("no seccomp profile: %s", self.seccomp_unsupported)
            return ""
        return self.default_profile

    def no_new_privileges(self, hc: dict[str, Any]) -> bool:
        """Whether the container's processes get no_new_privs."""
        chosen = parse_security_opt(hc.get("SecurityOpt")).no_new_privileges
        return self.no_new_privileges_default if chosen is None else chosen

    # ---- /info

    def info_options(self) -> list[str]:
        """``SecurityOptions`` of ``/info``, as dockerd lists them."""
        out = []
        if self.seccomp_unsupported is None:
            out.append(f"name=seccomp,profile={self.profile_name}")
        if self.no_new_privileges_default:
            out.append("name=no-new-privileges")
        return out

    def info_warnings(self) -> list[str]:
        """Warnings of ``/info`` about the security defaults."""
        if self.seccomp_unsupported is None and self.profile_name != "default":
            return ["WARNING: daemon is not using the default seccomp profile"]
        return []
