"""The ``tunlab`` command. Exit codes: 0 ok, 1 check failed / verdict not as expected,
2 usage or environment error (the message says how to fix it)."""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import threading
from collections.abc import Callable, Sequence
from typing import Any

from tunlab.errors import PrivilegeError, TunlabError
from tunlab.kernel.host import require_privileges

__all__ = ["build_parser", "cmd_cleanup", "cmd_client", "cmd_demo", "cmd_server", "Handler",
           "main"]

Handler = Callable[[argparse.Namespace], int]


def _load_psk(path: str | None) -> bytes | None:
    if path is None:
        return None
    from tunlab.proto.crypto import load_psk

    return load_psk(path)


def _fast_path(args: argparse.Namespace) -> bool:
    """The fast path (offloads, super-packets) unless --simple, or -v which logs each packet."""
    return not (args.simple or args.verbose)


def _busy_poll(args: argparse.Namespace) -> int:
    """--busy-poll USEC, checked before anything is opened."""
    from tunlab.tunnel.tuning import MAX_BUSY_POLL_US

    usec = args.busy_poll
    if not 0 <= usec <= MAX_BUSY_POLL_US:
        raise TunlabError(f"--busy-poll {usec} is outside 0-{MAX_BUSY_POLL_US} microseconds",
                          "try --busy-poll 200 (0, the default, sleeps after the last packet)")
    if usec and not _fast_path(args):
        raise TunlabError("--busy-poll works on the fast path only, and --simple or -v turns "
                          "it off", "drop --simple and -v, or --busy-poll")
    return usec


def _describe_event(event: Any) -> str:
    """One log line for a tunnel event; packets summarized as the seed's step 5 shows them."""
    if event.data is None:
        return f"{event.kind}: {event.detail}"
    from tunlab.packet.craft import summarize

    if event.kind == "sent":
        inner = summarize(event.data[8:])
        return (f"encapsulated {inner.get('src')} -> {inner.get('dst')} {inner.get('proto')} "
                f"into a {event.size}-byte frame (header {event.data[:8].hex()}), sent over TCP")
    info = summarize(event.data)
    verb = {"read": "read from the device", "written": "decapsulated, written to the device"}
    return (f"{verb.get(event.kind, event.kind)}: {info.get('src')} -> {info.get('dst')} "
            f"{info.get('proto')}, {event.size} bytes")


def _follow_events(endpoint: Any, stop: threading.Event, log: logging.Logger) -> None:
    """Log every event as it happens (``--verbose``): the seed's "look at the output" step."""
    seen = 0.0
    while True:
        stopping = stop.wait(0.1)
        for event in endpoint.events():
            # Connection events are logged by the tunnel itself; add the packets.
            if event.time > seen and event.data is not None:
                seen = event.time
                log.info("%s: %s", endpoint.role, _describe_event(event))
        if stopping:
            return


def _run_endpoint(endpoint: Any, role: str, authenticated: bool) -> int:
    """Run a tunnel endpoint in the foreground until SIGINT/SIGTERM or a fatal device error."""
    stop = threading.Event()
    follower = None
    if endpoint.record_packets:
        follower = threading.Thread(target=_follow_events, args=(
            endpoint, stop, logging.getLogger("tunlab.events")), daemon=True)
        follower.start()
    previous = {sig: signal.signal(sig, lambda *_: stop.set())
                for sig in (signal.SIGINT, signal.SIGTERM)}
    if not authenticated:
        logging.getLogger("tunlab").warning(
            "%s: UNAUTHENTICATED mode, for teaching only: anyone who can reach the port can "
            "inject packets. Use --psk-file FILE on both ends to require a shared key.", role)
    failure: BaseException | None = None
    try:
        endpoint.on_stop(stop.set)  # a fatal error (device removed) ends the wait too
        endpoint.start(wait=False)  # a client connects (and retries) in the background
        stop.wait()  # no timer: an idle tunnel does not wake up
    finally:
        stop.set()
        if follower is not None:
            follower.join(2)
        try:
            endpoint.stop()  # re-raises the first internal failure of a connection
        except Exception as exc:  # noqa: BLE001 - reported below, the device is left as found
            failure = exc
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if failure is not None:
        print(f"error: a connection failed inside tunlab (only that peer was dropped): "
              f"{type(failure).__name__}: {failure}. Please report it with the log above.",
              file=sys.stderr)
        return 1
    if endpoint.error:
        print(f"error: {endpoint.error}", file=sys.stderr)
        return 2
    return 0


def _cmd_endpoint(args: argparse.Namespace, role: str) -> int:
    from tunlab.kernel.tun import TunDevice
    from tunlab.tunnel import TunnelClient, TunnelServer, parse_hostport

    require_privileges(f"tunlab {role}")
    address = parse_hostport(args.listen if role == "server" else args.server)
    psk = _load_psk(args.psk_file)
    busy_poll_us = _busy_poll(args)
    endpoint_class = TunnelServer if role == "server" else TunnelClient
    with TunDevice.open(args.dev, vnet_hdr=_fast_path(args)) as device:
        endpoint = endpoint_class(device, address, psk=psk, record_packets=args.verbose,
                                  busy_poll_us=busy_poll_us)
        return _run_endpoint(endpoint, role, psk is not None)


def cmd_server(args: argparse.Namespace) -> int:
    """``tunlab server``: the vpn-server, foreground until SIGINT/SIGTERM."""
    return _cmd_endpoint(args, "server")


def cmd_client(args: argparse.Namespace) -> int:
    """``tunlab client``: the vpn-client, foreground until SIGINT/SIGTERM."""
    return _cmd_endpoint(args, "client")


def cmd_demo(args: argparse.Namespace) -> int:
    from tunlab.fate.demo import run_demo

    require_privileges("tunlab demo")
    result = run_demo(progress=None if args.json else print)
    if args.json:
        print(json.dumps(result.to_dict(), indent=2))
        return 0
    print()
    for number, hop in enumerate(result.hops, 1):
        print(f"{number}. {hop}")
    fate = result.fate
    if isinstance(fate, dict) and fate.get("explanation"):
        print(f"\nwhy: {fate['explanation']}")
    return 0


def cmd_cleanup(args: argparse.Namespace) -> int:
    """``tunlab cleanup``: remove what killed tunlab runs left, and only that."""
    from tunlab.kernel.netns import cleanup_stale
    from tunlab.kernel.ownership import Outcome
    from tunlab.kernel.tracefs import cleanup_stale_instances
    from tunlab.kernel.tun import restore_stale_devices

    require_privileges("tunlab cleanup")
    report: list[Any] = []
    restore_stale_devices(report)  # before the namespaces holding the devices go
    cleanup_stale(report)
    try:
        cleanup_stale_instances(report)
    except OSError as exc:
        print(f"trace instances not checked: {exc.strerror or exc}")
    for action in report:
        print(action)
    if not any(a.outcome is not Outcome.SKIPPED for a in report):
        print("nothing left over by killed tunlab runs")
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser for every subcommand (exposed for tests and docs)."""
    parser = argparse.ArgumentParser(
        prog="tunlab", description="Learn how Linux moves packets through TUN devices, "
        "routing tables and a user-space VPN tunnel, and why the kernel drops them.")
    parser.add_argument("-v", "--verbose", action="store_true",
                        help="log every packet and event (server, client)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    for role, handler, address, address_help, example, summary in (
            ("server", cmd_server, "--listen",
             "TCP address to accept clients on, e.g. 127.0.0.1:5555", "mytun2",
             "vpn-server: decapsulate frames from TCP into a TUN device, and back"),
            ("client", cmd_client, "--server", "the vpn-server's TCP address", "mytun",
             "vpn-client: encapsulate packets from a TUN device into TCP, and back")):
        endpoint = sub.add_parser(role, help=summary)
        endpoint.add_argument("--dev", required=True,
                              help=f"existing TUN device, e.g. {example}")
        endpoint.add_argument("--simple", action="store_true",
                              help="the teaching path: one read, frame and write per packet "
                              "(no offloads); -v implies it")
        endpoint.add_argument(address, required=True, metavar="HOST:PORT", help=address_help)
        endpoint.add_argument("--psk-file", metavar="FILE", help="pre-shared key (mode 600)")
        endpoint.add_argument("--busy-poll", type=int, default=0, metavar="USEC",
                              help="lower latency for CPU: after the last packet, keep polling "
                              "for up to USEC microseconds before sleeping, like the kernel's "
                              "SO_BUSY_POLL (fast path only; default 0: sleep at once)")
        endpoint.set_defaults(handler=handler)

    demo = sub.add_parser("demo", help="the seed's example goal end to end, in a private "
                          "namespace")
    demo.add_argument("--json", action="store_true", help="print one JSON object")
    demo.set_defaults(handler=cmd_demo)

    cleanup = sub.add_parser("cleanup", help="remove namespaces and trace instances left by "
                             "killed tunlab runs")
    cleanup.set_defaults(handler=cmd_cleanup)

    # Each command group registers its own subcommands; a broken one fails loudly here.
    from tunlab.cli import bench, course, debug, kernelspec

    for group in (debug, bench, course, kernelspec):
        group.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``tunlab`` console script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="tunlab %(message)s", stream=sys.stderr)
    try:
        return int(args.handler(args))
    except PrivilegeError as exc:
        print(f"error: {exc.message}; {exc.fix}", file=sys.stderr)
        return 2
    except TunlabError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        if exc.fix:
            print(f"fix: {exc.fix}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
