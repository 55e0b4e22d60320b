"""Asking Linux, one reader per fact: namespaces (:mod:`.netns`), who made what
(:mod:`.ownership`), TUN devices (:mod:`.tun`), sysctls, counters, drop reasons (:mod:`.tracefs`),
martian lines, routes, nftables (:mod:`.nft`), the host's privileges (:mod:`.host`) and the
doctor. Import the module that does the job; this package exports nothing itself."""

__all__: list[str] = []
