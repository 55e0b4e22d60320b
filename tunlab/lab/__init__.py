"""Labs in private network namespaces: the seed's one host, two hosts over veth
(:mod:`.topology`), lesson 07's three-host VPN network (:mod:`.vpn`), and measurements of a
lab (:mod:`.measure`)."""

from tunlab.lab.topology import (
    SEED_DEVICES,
    TUNNEL_ADDRESSES,
    TUNNEL_PORT,
    UNDERLAY,
    UPLINK,
    SeedLab,
    TwoHostLab,
    cleanup_leftovers,
    script_path,
)

__all__ = ["SEED_DEVICES", "TUNNEL_ADDRESSES", "TUNNEL_PORT", "UNDERLAY", "UPLINK", "SeedLab",
           "TwoHostLab", "cleanup_leftovers", "script_path"]
