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
import os
import shutil
import subprocess
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from engine.errors import HostError

LOG = logging.getLogger(__name__)

#: The chain (in ``nat`` and ``filter``) that holds the rules of published
#: ports, Docker's ``DOCKER`` chain under our name.
CHAIN = "ENGINE"
#: ``filter`` chain with each network's forwarding rules (Docker 28's
#: ``DOCKER-FORWARD``); FORWARD jumps to it after the isolation stage, so a
#: network made later still comes after the isolation rules.
FORWARD_CHAIN = "ENGINE-FORWARD"
#: Docker's two-stage isolation between networks: stage 1 sends what leaves
#: a bridge for another interface to stage 2, which drops it if that
#: interface is another network's bridge; internal networks drop in stage 1
#: whatever leaves or enters their subnet.
ISOLATION_1 = "ENGINE-ISOLATION-STAGE-1"
ISOLATION_2 = "ENGINE-ISOLATION-STAGE-2"
#: Our chains, per table.
CHAINS = {"nat": (CHAIN,), "filter": (CHAIN, FORWARD_CHAIN, ISOLATION_1, ISOLATION_2)}

_REMEDY = (
    "is iptables working on this host (iptables -t nat -S)? "
    "Run the daemon with --iptables=false to manage the rules yourself"
)


class IptablesError(HostError):
    """An iptables command failed."""


@dataclass(frozen=True)
class Rule:
    """One iptables rule: ``iptables -t <table> -A <chain> <args...>`` (``ip6tables`` when ``family`` is 6)."""

    table: str
    chain: str
    args: tuple[str, ...]
    family: int = 4

    def to_json(self) -> list[str]:
        # An IPv6 rule's table is written "ip6:nat": files of versions
        # without IPv6 read the same way as before.
        table = self.table if self.family == 4 else f"ip6:{self.table}"
        return [table, self.chain, *self.args]

    @classmethod
    def from_json(cls, value: Sequence[str]) -> Rule:
        table, family = str(value[0]), 4
        if table.startswith("ip6:"):
            table, family = table[4:], 6
        return cls(table, str(value[1]), tuple(str(a) for a in value[2:]), family)

    def __str__(self) -> str:
        prefix = "" if self.family == 4 else "(ip6) "
        return f"{prefix}-t {self.table} -A {self.chain} {' '.join(self.args)}"


Runner = Callable[..., "subprocess.CompletedProcess[bytes]"]


class IPTables:
    """Runs ``iptables`` and ``iptables-restore`` (and their ``ip6tables`` twins for IPv6 rules).

    :param binary: the ``iptables`` program.
    :param restore: the ``iptables-restore`` program.
    :param runner: ``subprocess.run``, or a fake for tests.
    :param binary6: the ``ip6tables`` program.
    :param restore6: the ``ip6tables-restore`` program.
    """

    def __init__(
        self,
        binary: str = "iptables",
        restore: str = "iptables-restore",
        runner: Runner = subprocess.run,
        binary6: str = "ip6tables",
        restore6: str = "ip6tables-restore",
    ) -> None:
        self.binary = _locate(binary)
        self.restore = _locate(restore)
        self.binary6 = _locate(binary6)
        self.restore6 = _locate(restore6)
        self._run = runner

    def _programs(self, family: int) -> tuple[str, str]:
        return (self.binary, self.restore) if family == 4 else (self.binary6, self.restore6)

    def available(self, family: int = 4) -> bool:
        """Whether both programs (of the IP ``family``) are installed."""
        return all(shutil.which(p) is not None for p in self._programs(family))

    def run(
        self, *args: str, check: bool = True, stdin: bytes | None = None, family: int = 4
    ) -> subprocess.CompletedProcess[bytes]:
        """Run ``iptables --wait args...`` (``ip6tables`` for ``family`` 6).

        :raises IptablesError: with iptables' own message, if ``check``.
        """
        binary = self._programs(family)[0]
        # --wait: another program may hold the xtables lock for a moment.
        argv = [binary, "--wait", *args]
        try:
            proc = self._run(argv, input=stdin, capture_output=True)
        except OSError as exc:
            raise IptablesError(
                f"cannot run {binary}: {exc.strerror}; install iptables or run the daemon with --iptables=false"
            ) from exc
        if check and proc.returncode != 0:
            raise IptablesError(
                f"{os.path.basename(binary)} failed: {' '.join(argv[2:])}: "
                f"{proc.stderr.decode(errors='replace').strip()}; {_REMEDY}"
            )
        return proc

    # one rule at a time
    def exists(self, rule: Rule) -> bool:
        """Whether ``rule`` is in its chain (``iptables -C``)."""
        return self.run("-t", rule.table, "-C", rule.chain, *rule.args, check=False, family=rule.family).returncode == 0

    def insert(self, rule: Rule, position: int = 1) -> None:
        """``iptables -I chain position``, unless the rule is there already."""
        if not self.exists(rule):
            self.run("-t", rule.table, "-I", rule.chain, str(position), *rule.args, family=rule.family)

    def append(self, rule: Rule) -> None:
        """``iptables -A``, unless the rule is there already."""
        if not self.exists(rule):
            self.run("-t", rule.table, "-A", rule.chain, *rule.args, family=rule.family)

    def delete(self, rule: Rule) -> bool:
        """Delete every copy of ``rule``; whether there was one."""
        found = False
        # -D removes one copy; a crash between -A and the state write can
        # have left two, so loop until -D finds none.
        while self.run("-t", rule.table, "-D", rule.chain, *rule.args, check=False, family=rule.family).returncode == 0:
            found = True
        return found

    # chains
    def chain_exists(self, table: str, chain: str, family: int = 4) -> bool:
        return self.run("-t", table, "-S", chain, check=False, family=family).returncode == 0

    def new_chain(self, table: str, chain: str, family: int = 4) -> None:
        """Create ``chain`` empty (flush it if it exists)."""
        if self.chain_exists(table, chain, family):
            self.run("-t", table, "-F", chain, family=family)
        else:
            self.run("-t", table, "-N", chain, family=family)

    def remove_chain(self, table: str, chain: str, family: int = 4) -> None:
        """Flush and delete ``chain`` if it exists (rules jumping to it must be gone)."""
        if self.chain_exists(table, chain, family):
            self.run("-t", table, "-F", chain, family=family)
            self.run("-t", table, "-X", chain, family=family)

    # many rules, one transaction
    def apply(self, ops: Sequence[tuple[str, Rule]]) -> None:
        """Apply ``(op, rule)`` pairs, ``op`` one of ``-A``, ``-I``, ``-D``, all or none (per IP family).

        :raises IptablesError: nothing was changed (IPv4 rules of a batch
            whose IPv6 part failed stay applied: the caller takes them out).
        """
        by_family: dict[int, list[tuple[str, Rule]]] = {}
        for op, rule in ops:
            if op not in ("-A", "-I", "-D"):
                raise ValueError(f"unsupported iptables operation {op}")
            by_family.setdefault(rule.family, []).append((op, rule))
        done: list[tuple[str, Rule]] = []
        for family, batch in sorted(by_family.items()):
            try:
                self._restore(family, batch)
            except IptablesError:
                if done:
                    self._restore(4, [("-D" if op != "-D" else "-A", r) for op, r in done])
                raise
            done = batch

    def _restore(self, family: int, ops: Sequence[tuple[str, Rule]]) -> None:
        tables: dict[str, list[str]] = {}
        for op, rule in ops:
            tables.setdefault(rule.table, []).append(" ".join([op, rule.chain, *map(_quote, rule.args)]))
        text = "".join(
            f"*{table}\n" + "".join(line + "\n" for line in lines) + "COMMIT\n" for table, lines in tables.items()
        )
        restore = self._programs(family)[1]
        argv = [restore, "--noflush", "--wait"]
        try:
            proc = self._run(argv, input=text.encode(), capture_output=True)
        except OSError as exc:
            raise IptablesError(
                f"cannot run {restore}: {exc.strerror}; install iptables or run the daemon with --iptables=false"
            ) from exc
        if proc.returncode != 0:
            raise IptablesError(
                f"{os.path.basename(restore)} failed: {proc.stderr.decode(errors='replace').strip()} "
                f"(rules: {'; '.join(f'{op} {rule}' for op, rule in ops)}); {_REMEDY}"
            )

    def all_present(self, rules: Iterable[Rule]) -> bool:
        """Whether every one of ``rules`` is in its chain: ``-C`` lines in one
        ``iptables-restore --noflush`` run per IP family, which changes nothing."""
        by_family: dict[int, list[tuple[str, Rule]]] = {}
        for rule in rules:
            by_family.setdefault(rule.family, []).append(("-C", rule))
        try:
            for family, batch in sorted(by_family.items()):
                self._restore(family, batch)
        except IptablesError:
            return False
        return True

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


# The rules themselves (seed ch. 4 §4.5.2, ch. 6 §3.3.7 and §3.3.9; libnetwork's bridge for networks)
BUILTIN_CHAINS = ("PREROUTING", "INPUT", "FORWARD", "OUTPUT", "POSTROUTING")


def loopback(family: int) -> str:
    return "127.0.0.0/8" if family == 4 else "::1/128"


def shared_rules(*, localhost_dnat: bool, family: int = 4) -> list[Rule]:
    """The rules every network shares: the jumps into our chains, in the order they end up at the top.

    :param localhost_dnat: no userland proxy: connections to ``127.0.0.1:port`` are DNATed too.
    """
    rules = [Rule("nat", "PREROUTING", ("-m", "addrtype", "--dst-type", "LOCAL", "-j", CHAIN), family)]
    # Packets for any local address (not only a bridge's) may be for a
    # published port; PREROUTING sees other hosts and containers, OUTPUT
    # this host's own connections.
    if localhost_dnat and family == 4:
        rules.append(Rule("nat", "OUTPUT", ("-m", "addrtype", "--dst-type", "LOCAL", "-j", CHAIN), family))
    else:
        # Loopback cannot be DNATed to another interface without
        # route_localnet; the userland proxy answers 127.0.0.1 instead.
        rules.append(
            Rule(
                "nat",
                "OUTPUT",
                ("!", "-d", loopback(family), "-m", "addrtype", "--dst-type", "LOCAL", "-j", CHAIN),
                family,
            )
        )
    rules.append(Rule("filter", "FORWARD", ("-j", ISOLATION_1), family))
    rules.append(Rule("filter", "FORWARD", ("-j", FORWARD_CHAIN), family))
    return rules


def network_rules(
    bridge: str,
    subnet: str,
    *,
    icc: bool,
    masquerade: bool,
    localhost_dnat: bool = False,
    internal: bool = False,
    family: int = 4,
) -> list[Rule]:
    """One network's NAT and forwarding rules (``masquerade``: its containers reach out from the host's address).

    :param subnet: the network's subnet, ``172.18.0.0/16``.
    :param localhost_dnat: no userland proxy: ``127.0.0.1:port`` is DNATed to
        containers, which needs the packets' loopback source rewritten on the
        way to the bridge (and ``route_localnet``, set by the driver).
    :param internal: no way out: no masquerade, no forwarding to other interfaces.
    """
    rules: list[Rule] = []
    if masquerade and not internal:
        rules.append(Rule("nat", "POSTROUTING", ("-s", subnet, "!", "-o", bridge, "-j", "MASQUERADE"), family))
    if localhost_dnat and family == 4 and not internal:
        rules.append(
            Rule("nat", "POSTROUTING", ("-m", "addrtype", "--src-type", "LOCAL", "-o", bridge, "-j", "MASQUERADE"))
        )
    if not internal:
        rules.append(Rule("filter", FORWARD_CHAIN, ("-o", bridge, "-j", CHAIN), family))
        rules.append(
            Rule(
                "filter",
                FORWARD_CHAIN,
                ("-o", bridge, "-m", "conntrack", "--ctstate", "RELATED,ESTABLISHED", "-j", "ACCEPT"),
                family,
            )
        )
        rules.append(Rule("filter", FORWARD_CHAIN, ("-i", bridge, "!", "-o", bridge, "-j", "ACCEPT"), family))
    rules.append(Rule("filter", FORWARD_CHAIN, ("-i", bridge, "-o", bridge, "-j", "ACCEPT" if icc else "DROP"), family))
    if internal:
        rules.append(Rule("filter", ISOLATION_1, ("-i", bridge, "!", "-d", subnet, "-j", "DROP"), family))
        rules.append(Rule("filter", ISOLATION_1, ("-o", bridge, "!", "-s", subnet, "-j", "DROP"), family))
    else:
        rules.append(Rule("filter", ISOLATION_1, ("-i", bridge, "!", "-o", bridge, "-j", ISOLATION_2), family))
        rules.append(Rule("filter", ISOLATION_2, ("-o", bridge, "-j", "DROP"), family))
    return rules


def add_ops(rules: Sequence[Rule]) -> list[tuple[str, Rule]]:
    """How to add ``rules`` so they end up in the order given: at the top of a built-in chain
    (before the host firewall's own rules), at the end of one of ours."""
    builtin = [r for r in rules if r.chain in BUILTIN_CHAINS]
    own = [r for r in rules if r.chain not in BUILTIN_CHAINS]
    return [("-I", r) for r in reversed(builtin)] + [("-A", r) for r in own]


def port_rules(
    bridge: str,
    proto: str,
    host_ip: str,
    host_port: int,
    container_ip: str,
    container_port: int,
    *,
    proxy: bool,
    family: int = 4,
) -> list[Rule]:
    """The three rules of one published port: DNAT, FORWARD accept, hairpin masquerade.

    :param proxy: a userland proxy serves the port, so connections from the
        bridge itself (a container to a published port) go to it and are
        not DNATed (Docker's ``! -i docker0``).
    :param family: 6 for the ``ip6tables`` rules of a container's IPv6 address.
    """
    host = f"{container_ip}/32" if family == 4 else f"{container_ip}/128"
    to = f"{container_ip}:{container_port}" if family == 4 else f"[{container_ip}]:{container_port}"
    dnat: list[str] = []
    if host_ip not in ("", "0.0.0.0", "::"):
        dnat += ["-d", f"{host_ip}/32" if family == 4 else f"{host_ip}/128"]
    if proxy:
        dnat += ["!", "-i", bridge]
    match = ["-p", proto, "-m", proto]
    dnat += [*match, "--dport", str(host_port), "-j", "DNAT", "--to-destination", to]
    return [
        Rule("nat", CHAIN, tuple(dnat), family),
        Rule(
            "filter",
            CHAIN,
            ("-d", host, "!", "-i", bridge, "-o", bridge, *match, "--dport", str(container_port), "-j", "ACCEPT"),
            family,
        ),
        # A container reaching its own published port comes back to itself:
        # without this its reply would bypass the NAT and be dropped.
        Rule(
            "nat",
            "POSTROUTING",
            ("-s", host, "-d", host, *match, "--dport", str(container_port), "-j", "MASQUERADE"),
            family,
        ),
    ]


def link_rules(bridge: str, parent_ip: str, child_ip: str, ports: Iterable[tuple[str, str]]) -> list[Rule]:
    """The ACCEPT pair that lets ``parent`` reach ``child`` on each port when icc is off (inserted at the top of
    :data:`FORWARD_CHAIN`, before the icc DROP).

    :param ports: ``(port or "first-last", proto)`` pairs.
    """
    rules: list[Rule] = []
    for port, proto in ports:
        spec = port.replace("-", ":")
        rules.append(
            Rule(
                "filter",
                FORWARD_CHAIN,
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
                FORWARD_CHAIN,
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
