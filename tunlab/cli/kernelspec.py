"""``tunlab kernelspec install``: the "tunlab (no sudo)" Jupyter kernel for users without root."""

from __future__ import annotations

import argparse
import json
from typing import Any

__all__ = ["cmd_kernelspec", "register"]


def cmd_kernelspec(args: argparse.Namespace) -> int:
    """Install the kernel spec (or ``--print`` it) and say which mode this machine has."""
    from tunlab.course.kernelspec import DISPLAY_NAME, IPC_HINT, install, kernel_json
    from tunlab.kernel.doctor import Mode, lab_mode

    if args.print:
        print(json.dumps(kernel_json(), indent=1))
        return 0
    where = install(user=args.user, sys_prefix=args.sys_prefix, prefix=args.prefix)
    print(f"installed the kernel '{DISPLAY_NAME}' in {where}")
    mode = lab_mode(privileged=False)
    if mode.mode is Mode.RECORDINGS:
        print(f"note: this machine does not allow it yet: {mode.why}; {mode.fix}")
    print(f"note: {IPC_HINT}")
    return 0


def register(sub: Any) -> None:
    """Add ``kernelspec install`` to the ``tunlab`` parser."""
    parser = sub.add_parser("kernelspec", help="install the 'tunlab (no sudo)' Jupyter kernel "
                            "(a user namespace: live labs without root)")
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    inst = actions.add_parser("install", help="install the kernel spec")
    where = inst.add_mutually_exclusive_group()
    where.add_argument("--user", action="store_true", help="in ~/.local/share/jupyter")
    where.add_argument("--sys-prefix", action="store_true", help="in this Python environment")
    where.add_argument("--prefix", metavar="DIR", help="under DIR/share/jupyter")
    inst.add_argument("--print", action="store_true", help="print kernel.json, install nothing")
    inst.set_defaults(handler=cmd_kernelspec)
