"""Changes to a fate experiment, as data: a sysctl set, a route added or removed, an nft
command, a listening socket, a device's MTU, or what the sender does differently.

A fix (:class:`~tunlab.fate.report.Fix`) is a list of changes. :meth:`Change.apply` makes the
changed :class:`~tunlab.fate.request.FateRequest` (which is how a fix is verified: the same
packet in a fresh lab with the change in place); :meth:`Change.command` is what a person types
on a real host, and :meth:`Change.fate_args` the ``tunlab fate`` arguments that apply it, both
for display and JSON only.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from tunlab.fate.request import FateRequest

__all__ = ["AddRoute", "Change", "ClearDf", "DeleteRoute", "Listen", "NftCommand",
           "SetMtu", "SetSysctl", "SetTtl", "apply_all", "from_args"]


class Change(Protocol):
    """One change to the lab or to the packet."""

    def apply(self, request: FateRequest) -> FateRequest:
        """``request`` with this change made."""
        ...

    def command(self) -> str:
        """What a person types on a real host to make it."""
        ...

    def fate_args(self) -> list[str]:
        """The ``tunlab fate`` arguments that make it in the lab."""
        ...


@dataclass(frozen=True)
class SetSysctl:
    """``sysctl -w KEY=VALUE`` (``--set KEY=VALUE``)."""

    key: str
    value: str

    def apply(self, request: FateRequest) -> FateRequest:
        sysctls = dict(request.sysctls)  # as ``--set`` again on the command line: last wins
        sysctls[self.key] = str(self.value)
        return replace(request, sysctls=tuple(sysctls.items()))

    def command(self) -> str:
        return f"sysctl -w {self.key}={self.value}"

    def fate_args(self) -> list[str]:
        return ["--set", f"{self.key}={self.value}"]


@dataclass(frozen=True)
class AddRoute:
    """``ip route add SPEC`` (``--route SPEC``)."""

    spec: str

    def apply(self, request: FateRequest) -> FateRequest:
        return replace(request, routes=(*request.routes, self.spec))

    def command(self) -> str:
        return f"ip route add {self.spec}"

    def fate_args(self) -> list[str]:
        return ["--route", self.spec]


@dataclass(frozen=True)
class DeleteRoute:
    """``ip route del SPEC`` (``--route-del SPEC``)."""

    spec: str

    def apply(self, request: FateRequest) -> FateRequest:
        return replace(request, routes_deleted=(*request.routes_deleted, self.spec))

    def command(self) -> str:
        return f"ip route del {self.spec}"

    def fate_args(self) -> list[str]:
        return ["--route-del", self.spec]


@dataclass(frozen=True)
class NftCommand:
    """An ``nft`` command run after the ruleset (``--nft-cmd``), e.g. an accept rule inserted
    before the rule that refused the packet."""

    line: str

    def apply(self, request: FateRequest) -> FateRequest:
        return replace(request, nft_commands=(*request.nft_commands, self.line))

    def command(self) -> str:
        return f"nft {self.line}"

    def fate_args(self) -> list[str]:
        return ["--nft-cmd", self.line]


@dataclass(frozen=True)
class Listen:
    """A program listening on PROTO port PORT (``--listen PROTO PORT``)."""

    proto: str
    port: int

    def apply(self, request: FateRequest) -> FateRequest:
        from tunlab.fate.request import Listener

        return replace(request, listeners=(*request.listeners, Listener(self.proto, self.port)))

    def command(self) -> str:
        flag = "u" if self.proto == "udp" else ""
        return f"nc -l{flag} {self.port}   # or any server bound to {self.proto} port {self.port}"

    def fate_args(self) -> list[str]:
        return ["--listen", self.proto, str(self.port)]


@dataclass(frozen=True)
class SetMtu:
    """``ip link set dev DEV mtu N`` (``--mtu DEV=N``)."""

    dev: str
    mtu: int

    def apply(self, request: FateRequest) -> FateRequest:
        mtus = dict(request.mtus)  # as ``--mtu`` again on the command line: last wins
        mtus[self.dev] = self.mtu
        return replace(request, mtus=tuple(mtus.items()))

    def command(self) -> str:
        return f"ip link set dev {self.dev} mtu {self.mtu}"

    def fate_args(self) -> list[str]:
        return ["--mtu", f"{self.dev}={self.mtu}"]


@dataclass(frozen=True)
class SetTtl:
    """The sender uses another TTL / hop limit (``--ttl N``); ``how`` is its command."""

    ttl: int
    how: str

    def apply(self, request: FateRequest) -> FateRequest:
        return replace(request, ttl=self.ttl)

    def command(self) -> str:
        return f"{self.how}   # on the sender"

    def fate_args(self) -> list[str]:
        return ["--ttl", str(self.ttl)]


@dataclass(frozen=True)
class ClearDf:
    """The sender clears don't-fragment (``--no-df``); ``how`` is its command."""

    how: str

    def apply(self, request: FateRequest) -> FateRequest:
        return replace(request, df=False)

    def command(self) -> str:
        return f"{self.how}   # on the sender"

    def fate_args(self) -> list[str]:
        return ["--no-df"]


def apply_all(request: FateRequest, changes: tuple[Change, ...] | list[Change]) -> FateRequest:
    """``request`` with every change made, in order."""
    for change in changes:
        request = change.apply(request)
    return request


def from_args(args: list[str], commands: list[str]) -> tuple[Change, ...]:
    """The changes that ``args`` (a fix's ``fate_args``, as JSON and recordings keep them)
    make, one per entry of ``commands`` (the fix's commands, which hold the sender's own)."""
    out: list[Change] = []
    rest = list(args)
    for command in commands:
        how = command.split("   # on the sender")[0]
        option = rest.pop(0)
        if option == "--set":
            key, _, value = rest.pop(0).partition("=")
            out.append(SetSysctl(key, value))
        elif option == "--route":
            out.append(AddRoute(rest.pop(0)))
        elif option == "--route-del":
            out.append(DeleteRoute(rest.pop(0)))
        elif option == "--nft-cmd":
            out.append(NftCommand(rest.pop(0)))
        elif option == "--listen":
            proto, port = rest.pop(0), rest.pop(0)
            out.append(Listen(proto, int(port)))
        elif option == "--mtu":
            dev, _, mtu = rest.pop(0).partition("=")
            out.append(SetMtu(dev, int(mtu)))
        elif option == "--ttl":
            out.append(SetTtl(int(rest.pop(0)), how))
        elif option == "--no-df":
            out.append(ClearDf(how))
        else:
            raise ValueError(f"{option} is not an option a fix uses")
    if rest:
        raise ValueError(f"arguments left over: {rest}")
    return tuple(out)

