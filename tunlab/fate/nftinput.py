"""The nftables text ``tunlab fate`` hands to ``nft -f`` (``--nft-file``, ``--nft-rule``,
``--nft-cmd``), refused where nft would read another file.

``tunlab fate`` runs as root. Where an admin lets people run ``sudo tunlab``, an ``include
"FILE"`` anywhere in that text, or a second command after a ``;`` or a newline, would have nft
read FILE as root and echo each of its lines it cannot parse. So an ``include`` is refused
everywhere, a one-line option is exactly one nft command, and ``--nft-file`` is read with the
rights of the user who ran sudo (:func:`tunlab.safefiles.read_as_invoker`). Granting ``sudo
tunlab`` still grants root (SECURITY.md); this only keeps the plain ways of reading files shut.
"""

from __future__ import annotations

import os
import re

from tunlab.errors import TunlabError
from tunlab.safefiles import read_as_invoker

__all__ = ["check_command", "check_ruleset", "MAX_RULESET", "read_ruleset"]

MAX_RULESET = 1024 * 1024
"""The largest ruleset file taken (a host firewall is a few KB)."""
# any case, anywhere, even inside a word or a comment: a false refusal costs a rephrase, a
# missed one a file read as root
_INCLUDE = re.compile(r"include", re.IGNORECASE)


def check_ruleset(text: str, option: str) -> str:
    """``text`` (a whole ruleset) unchanged, or a TunlabError if it holds an ``include``."""
    if _INCLUDE.search(text):
        raise TunlabError(f"{option}: `include` is refused (it would make nft read another "
                          "file as root)",
                          "put the included file's rules into the ruleset itself")
    if "\0" in text:
        raise TunlabError(f"{option}: the ruleset holds a NUL byte", "give nft -f text")
    return text


def check_command(text: str, option: str) -> str:
    """One nft command (``--nft-rule``, ``--nft-cmd``): no ``include``, ``;`` or newline."""
    for bad, name in (("\n", "a newline"), ("\r", "a carriage return"), (";", "a `;`")):
        if bad in text:
            raise TunlabError(f"{option} {text!r} holds {name}: one option is one nft command",
                              f"give each command its own {option}, or a ruleset with "
                              "--nft-file")
    return check_ruleset(text, option)


def read_ruleset(path: str | os.PathLike[str]) -> str:
    """The ruleset in ``path``, read with the rights of the user who ran sudo, and checked."""
    data = read_as_invoker(path, MAX_RULESET)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise TunlabError(f"{os.fspath(path)} is not a text file",
                          "give an nftables ruleset file (nft -f syntax)") from None
    return check_ruleset(text, f"--nft-file {os.fspath(path)}")
