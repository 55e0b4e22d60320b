"""IP packets as bytes, pure: the one checksum and IP checks (:mod:`.validate`), packets built
by hand (:mod:`.build`) or with scapy (:mod:`.craft`), offloads in software (:mod:`.vnet`).
Import the module that does the job; this package exports nothing itself."""

__all__: list[str] = []
