"""tunlab: a hands-on lab for TUN devices, routing tables, a user-space VPN tunnel and the
reasons the Linux kernel drops packets. Everything runs in private network namespaces."""

__version__ = "0.1.0"

__all__ = ["__version__"]
