#!/usr/bin/env bash
# One command from a fresh Debian machine (as root) to a working lab:
#   sudo bash scripts/setup.sh lab     install what is missing, then open JupyterLab on a copy of
#                                      the course in tunlab-notebooks/ (`make lab`)
#   sudo bash scripts/setup.sh test    install what is missing, then run the whole test suite
#   sudo bash scripts/setup.sh         only install
# Installs only what is missing: Debian packages (apt-get), then .venv with tunlab and its extras.
set -euo pipefail
cd "$(dirname "$0")/.."

target="${1:-}"
case "$target" in ""|lab|test|bench) ;; *) echo "usage: $0 [lab|test|bench]" >&2; exit 2 ;; esac

if [ "$(id -u)" -ne 0 ]; then
  echo "error: the lab creates network namespaces and TUN devices, which needs root." >&2
  echo "fix: sudo bash $0 $target" >&2
  exit 2
fi

# command -> Debian package that provides it
declare -A NEEDED=(
  [make]=make [ip]=iproute2 [ping]=iputils-ping [iperf3]=iperf3 [nft]=nftables
  [tcpdump]=tcpdump [modprobe]=kmod [sysctl]=procps [nstat]=iproute2
  [chromium-headless-shell]=chromium-headless-shell [python3]=python3
  [wireguard-go]=wireguard-go [npm]=npm [runuser]=util-linux [useradd]=passwd
)
missing=()
for cmd in "${!NEEDED[@]}"; do
  command -v "$cmd" >/dev/null 2>&1 || missing+=("${NEEDED[$cmd]}")
done
if ! python3 -c 'import ensurepip, venv' >/dev/null 2>&1; then
  missing+=(python3-venv)
fi
if [ "${#missing[@]}" -gt 0 ]; then
  mapfile -t missing < <(printf '%s\n' "${missing[@]}" | sort -u)
  echo "==> installing Debian packages: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
[ -c /dev/net/tun ] || modprobe tun || { echo "error: no /dev/net/tun (modprobe tun failed)" >&2; exit 2; }

exec make --no-print-directory ${target:-setup}
