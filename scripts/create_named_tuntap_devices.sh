#!/usr/bin/env bash
# Create the seed's two TUN devices, with addresses, up:
#   mytun   10.0.0.1/24   (the vpn-client attaches here)
#   mytun2  10.0.2.1/24   (the vpn-server attaches here and releases decapsulated packets)
# Idempotent: a second run finds everything in place and changes nothing.
#   --delete   remove both devices instead
# Run it inside a lab namespace (`ip netns exec NAME bash this-script`) to keep the host untouched;
# tunlab does exactly that.
set -euo pipefail

DEVICES=("mytun 10.0.0.1/24" "mytun2 10.0.2.1/24")

usage() { echo "usage: $0 [--delete]" >&2; exit 2; }

mode=create
case "${1:-}" in
  "") ;;
  --delete) mode=delete ;;
  -h|--help) echo "usage: $0 [--delete]"; echo "creates mytun 10.0.0.1/24 and mytun2 10.0.2.1/24"; exit 0 ;;
  *) usage ;;
esac

if [ "$(id -u)" -ne 0 ]; then
  echo "error: creating TUN devices needs root; run: sudo bash $0 ${1:-}" >&2
  exit 2
fi
if ! command -v ip >/dev/null; then
  echo "error: the ip command is missing; install it: apt-get install iproute2" >&2
  exit 2
fi
if [ ! -c /dev/net/tun ]; then
  echo "error: /dev/net/tun is missing; load the module: modprobe tun" >&2
  exit 2
fi

for entry in "${DEVICES[@]}"; do
  read -r dev addr <<<"$entry"
  if [ "$mode" = delete ]; then
    if ip link show "$dev" >/dev/null 2>&1; then
      ip link del "$dev"
      echo "deleted $dev"
    else
      echo "$dev: not present"
    fi
    continue
  fi
  if ip link show "$dev" >/dev/null 2>&1; then
    if ! ip -d link show "$dev" | grep -q 'tun type tun'; then
      echo "error: $dev exists but is not a TUN device; remove it first: ip link del $dev" >&2
      exit 1
    fi
    echo "$dev: exists"
  else
    ip tuntap add dev "$dev" mode tun
    echo "$dev: created"
  fi
  if ip -o -4 addr show dev "$dev" | grep -q " ${addr} "; then
    echo "$dev: has $addr"
  else
    ip addr add "$addr" dev "$dev"
    echo "$dev: added $addr"
  fi
  if ip -o link show "$dev" | grep -q '[<,]UP[,>]'; then
    echo "$dev: up"
  else
    ip link set "$dev" up
    echo "$dev: set up"
  fi
done
