"""The iptables binary, wrapped: every rule the bridge driver adds or removes goes through here.

We run the distribution's ``iptables`` rather than talk nf_tables ourselves:
it is what operators read and debug with (``iptables-save``), and on
Debian 12 it is ``iptables-nft``, so rules land in nf_tables all the same.
A rule is a :class:`Rule` (table, chain, arguments); the driver keeps the
rules it added in its state files so that it can always take them out again.

Two ways to change the ruleset:

* one command per rule (:meth:`IPTables.insert`, :meth:`IPTables.delete`...),
  for start-up and clean-up, where a rule may or may not be there;
* :meth:`IPTables.apply`: many ``-A``/``-I``/``-D`` in one
  ``iptables-restore --noflush`` run, which commits all of them or none.
  Publishing a port uses it, so a failure leaves no half of a mapping behind,
  and it costs one process instead of three.
"""

from __future__ import annotations

import logging
import shutil
import subprocess
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from engine.errors import HostError

LOG = logging.getLogger(__name__)

#: The chain (in ``nat`` and ``filter``) that holds the rules of published
#: ports, Docker's ``DOCKER`` chain under our name.
CHAIN = "ENGINE"

_REMEDY = (
    "is iptables working on this host (iptables -t nat -S)? "
    "Run the daemon with --iptables=false to manage the rules yourself"
)


class IptablesError(HostError):
    """An iptables command failed."""


@dataclass(frozen=True)
class Rule:
    """One iptables rule: ``iptables -t <table> -A <chain> <args...>``."""

    table: str
    chain: str
    args: tuple[str, ...]

    def to_json(self) -> list[str]:
        return [self.table, self.chain, *self.args]

    @classmethod
    def from_json(cls, value: Sequence[str]) -> Rule:
        return cls(str(value[0]), str(value[1]), tuple(str(a) for a in value[2:]))

    def __str__(self) -> str:
        return f"-t {self.table} -A {self.chain} {' '.join(self.args)}"


Runner = Callable[..., "subprocess.CompletedProcess[bytes]"]


class IPTables:
    """Runs ``iptables`` and ``iptables-restore``.

    :param binary: the ``iptables`` program.
    :param restore: the ``iptables-restore`` program.
    :param runner: ``subprocess.run``, or a fake for tests.
    """

    def __init__(
        self, binary: str = "iptables", restore: str = "iptables-restore", runner: Runner = subprocess.run
    ) -> None:
        self.binary = _locate(binary)
        self.restore = _locate(restore)
        self._run = runner

    def available(self) -> bool:
        """Whether both programs are installed."""
        return shutil.which(self.binary) is not None and shutil.which(self.restore) is not None

    def run(self, *args: str, check: bool = True, stdin: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
        """Run ``iptables --wait args...``.

        :raises IptablesError: with iptables' own message, if ``check``.
        """
        # --wait: another program may hold the xtables lock for a moment.
        argv = [self.binary, "--wait", *args]
        try:
            proc = self._run(argv, input=stdin, capture_output=True)
        except OSError as exc:
            raise IptablesError(
                f"cannot run {self.binary}: {exc.strerror}; install iptables or run the daemon with --iptables=false"
            ) from exc
        if check and proc.returncode != 0:
            raise IptablesError(
                f"iptables failed: {' '.join(argv[2:])}: {proc.stderr.decode(errors='replace').strip()}; {_REMEDY}"
            )
        return proc

    # one rule at a time
    def exists(self, rule: Rule) -> bool:
        """Whether ``rule`` is in its chain (``iptables -C``)."""
        return self.run("-t", rule.table, "-C", rule.chain, *rule.args, check=False).returncode == 0

    def insert(self, rule: Rule, position: int = 1) -> None:
        """``iptables -I chain position``, unless the rule is there already."""
        if not self.exists(rule):
            self.run("-t", rule.table, "-I", rule.chain, str(position), *rule.args)

    def append(self, rule: Rule) -> None:
        """``iptables -A``, unless the rule is there already."""
        if not self.exists(rule):
            self.run("-t", rule.table, "-A", rule.chain, *rule.args)

    def delete(self, rule: Rule) -> bool:
        """Delete every copy of ``rule``; whether there was one."""
        found = False
        # -D removes one copy; a crash between -A and the state write can
        # have left two, so loop until -D finds none.
        while self.run("-t", rule.table, "-D", rule.chain, *rule.args, check=False).returncode == 0:
            found = True
        return found

    # chains
    def chain_exists(self, table: str, chain: str) -> bool:
        return self.run("-t", table, "-S", chain, check=False).returncode == 0

    def new_chain(self, table: str, chain: str) -> None:
        """Create ``chain`` empty (flush it if it exists)."""
        if self.chain_exists(table, chain):
            self.run("-t", table, "-F", chain)
        else:
            self.run("-t", table, "-N", chain)

    def remove_chain(self, table: str, chain: str) -> None:
        """Flush and delete ``chain`` if it exists (rules jumping to it must be gone)."""
        if self.chain_exists(table, chain):
            self.run("-t", table, "-F", chain)
            self.run("-t", table, "-X", chain)

    # many rules, one transaction
    def apply(self, ops: Sequence[tuple[str, Rule]]) -> None:
        """Apply ``(op, rule)`` pairs, ``op`` one of ``-A``, ``-I``, ``-D``, all or none.

        :raises IptablesError: nothing was changed.
        """
        if not ops:
            return
        tables: dict[str, list[str]] = {}
        for op, rule in ops:
            if op not in ("-A", "-I", "-D"):
                raise ValueError(f"unsupported iptables operation {op}")
            tables.setdefault(rule.table, []).append(" ".join([op, rule.chain, *map(_quote, rule.args)]))
        text = "".join(
            f"*{table}\n" + "".join(line + "\n" for line in lines) + "COMMIT\n" for table, lines in tables.items()
        )
        argv = [self.restore, "--noflush", "--wait"]
        try:
            proc = self._run(argv, input=text.encode(), capture_output=True)
        except OSError as exc:
            raise IptablesError(
                f"cannot run {self.restore}: {exc.strerror}; install iptables or run the daemon with --iptables=false"
            ) from exc
        if proc.returncode != 0:
            raise IptablesError(
                f"iptables-restore failed: {proc.stderr.decode(errors='replace').strip()} "
                f"(rules: {'; '.join(f'{op} {rule}' for op, rule in ops)}); {_REMEDY}"
            )

    def delete_all(self, rules: Iterable[Rule]) -> None:
        """Delete ``rules`` in one transaction, or one by one if some are missing."""
        rules = list(rules)
        if not rules:
            return
        try:
            self.apply([("-D", rule) for rule in rules])
        except IptablesError:
            # Someone (an operator, a crash before our state write) removed
            # one of them already; -D on a missing rule fails the batch.
            for rule in rules:
                self.delete(rule)


def _locate(program: str) -> str:
    """``program`` by absolute path if found: a daemon started from a unit or
    a login shell of a user may not have the sbin directories on its PATH."""
    return shutil.which(program) or shutil.which(program, path="/usr/sbin:/sbin:/usr/local/sbin") or program


def _quote(arg: str) -> str:
    """Quote an argument for iptables-restore's line parser."""
    if arg and not any(ch in arg for ch in " \t\"'"):
        return arg
    return '"' + arg.replace("\\", "\\\\").replace('"', '\\"') + '"'


# The rules themselves (seed ch. 4 §4.5.2, ch. 6 §3.3.7 and §3.3.9)
def base_rules(bridge: str, subnet: str, *, icc: bool, masquerade: bool, localhost_dnat: bool) -> list[Rule]:
    """The rules ``init`` adds, in the order they end up at the top of their chains.

    :param subnet: the bridge's network, ``172.17.0.0/16``.
    :param masquerade: ``--ip-masq``: containers reach the outside from the host's address.
    :param localhost_dnat: no userland proxy: ``127.0.0.1:port`` is DNATed
        too, which needs the packets' loopback source rewritten on the way
        to the bridge (and ``route_localnet``, set by the driver).
    """
    rules: list[Rule] = []
    if masquerade:
        rules.append(Rule("nat", "POSTROUTING", ("-s", subnet, "!", "-o", bridge, "-j", "MASQUERADE")))
    if localhost_dnat:
        rules.append(
            Rule("nat", "POSTROUTING", ("-m", "addrtype", "--src-type", "LOCAL", "-o", bridge, "-j", "MASQUERADE"))
        )
    # Packets for any local address (not only the bridge's) may be for a
    # published port; PREROUTING sees other hosts and containers, OUTPUT
    # this host's own connections.
    rules.append(Rule("nat", "PREROUTING", ("-m", "addrtype", "--dst-type", "LOCAL", "-j", CHAIN)))
    if localhost_dnat:
        rules.append(Rule("nat", "OUTPUT", ("-m", "addrtype", "--dst-type", "LOCAL", "-j", CHAIN)))
    else:
        # Loopback cannot be DNATed to another interface without
        # route_localnet; the userland proxy answers 127.0.0.1 instead.
        rules.append(
            Rule("nat", "OUTPUT", ("!", "-d", "127.0.0.0/8", "-m", "addrtype", "--dst-type", "LOCAL", "-j", CHAIN))
        )
    rules.append(Rule("filter", "FORWARD", ("-o", bridge, "-j", CHAIN)))
    rules.append(
        Rule("filter", "FORWARD", ("-o", bridge, "-m", "conntrack", "--ctstate", "RELATED,ESTABLISHED", "-j", "ACCEPT"))
    )
    rules.append(Rule("filter", "FORWARD", ("-i", bridge, "!", "-o", bridge, "-j", "ACCEPT")))
    rules.append(Rule("filter", "FORWARD", ("-i", bridge, "-o", bridge, "-j", "ACCEPT" if icc else "DROP")))
    return rules


def port_rules(
    bridge: str, proto: str, host_ip: str, host_port: int, container_ip: str, container_port: int, *, proxy: bool
) -> list[Rule]:
    """The three rules of one published port: DNAT, FORWARD accept, hairpin masquerade.

    :param proxy: a userland proxy serves the port, so connections from the
        bridge itself (a container to a published port) go to it and are
        not DNATed (Docker's ``! -i docker0``).
    """
    dnat: list[str] = []
    if host_ip not in ("", "0.0.0.0"):
        dnat += ["-d", f"{host_ip}/32"]
    if proxy:
        dnat += ["!", "-i", bridge]
    dnat += [
        "-p",
        proto,
        "-m",
        proto,
        "--dport",
        str(host_port),
        "-j",
        "DNAT",
        "--to-destination",
        f"{container_ip}:{container_port}",
    ]
    return [
        Rule("nat", CHAIN, tuple(dnat)),
        Rule(
            "filter",
            CHAIN,
            (
                "-d",
                f"{container_ip}/32",
                "!",
                "-i",
                bridge,
                "-o",
                bridge,
                "-p",
                proto,
                "-m",
                proto,
                "--dport",
                str(container_port),
                "-j",
                "ACCEPT",
            ),
        ),
        # A container reaching its own published port comes back to itself:
        # without this its reply would bypass the NAT and be dropped.
        Rule(
            "nat",
            "POSTROUTING",
            (
                "-s",
                f"{container_ip}/32",
                "-d",
                f"{container_ip}/32",
                "-p",
                proto,
                "-m",
                proto,
                "--dport",
                str(container_port),
                "-j",
                "MASQUERADE",
            ),
        ),
    ]


def link_rules(bridge: str, parent_ip: str, child_ip: str, ports: Iterable[tuple[str, str]]) -> list[Rule]:
    """The ACCEPT pair that lets ``parent`` reach ``child`` on each port when icc is off.

    :param ports: ``(port or "first-last", proto)`` pairs.
    """
    rules: list[Rule] = []
    for port, proto in ports:
        spec = port.replace("-", ":")
        rules.append(
            Rule(
                "filter",
                "FORWARD",
                (
                    "-i",
                    bridge,
                    "-o",
                    bridge,
                    "-p",
                    proto,
                    "-s",
                    parent_ip,
                    "-d",
                    child_ip,
                    "--dport",
                    spec,
                    "-j",
                    "ACCEPT",
                ),
            )
        )
        rules.append(
            Rule(
                "filter",
                "FORWARD",
                (
                    "-i",
                    bridge,
                    "-o",
                    bridge,
                    "-p",
                    proto,
                    "-s",
                    child_ip,
                    "-d",
                    parent_ip,
                    "--sport",
                    spec,
                    "-j",
                    "ACCEPT",
                ),
            )
        )
    return rules
