"""Hold ``tunlab fate`` to the measured table: run each scenario of docs/fate-ipv6-measured.json
through the CLI (``--json --no-verify``) and compare verdict, drop reasons and replies.

Not a pytest module; run as root: ``.venv/bin/python tests/fate_crosscheck_v6.py [--only P]``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

TABLE = Path(__file__).resolve().parent.parent / "docs" / "fate-ipv6-measured.json"
TUNLAB = Path(sys.executable).parent / "tunlab"
NOISE = {133, 143}


def _args(row: dict[str, Any], nft_dir: Path) -> list[str]:
    p, s = row["packet"], row["settings"]
    args = ["fate", "--src", p["src"], "--dst", p["dst"], "--ttl", str(p["ttl"]),
            "--dev", p["dev"], "--json", "--no-verify"]
    proto = {"icmp6": "icmp"}.get(p["proto"], p["proto"])
    args += ["--proto", str(proto)]
    if p["dport"] is not None:
        args += ["--dport", str(p["dport"])]
    if p["len"] > 200:
        args += ["--size", str(p["len"])]
    if p["df"]:
        args.append("--df")
    for key, value in s["sysctls"].items():
        args += ["--set", f"{key}={value}"]
    for route in s["routes"]:
        args += ["--route", route]
    for dev, mtu in s["mtu"].items():
        args += ["--mtu", f"{dev}={mtu}"]
    if s["nft"]:
        path = nft_dir / f"{row['name']}.nft"
        path.write_text(s["nft"])
        args += ["--nft-file", str(path)]
    if row["name"].endswith("-listener"):
        args += ["--listen", str(p["proto"]), str(p["dport"])]
    return args


def _replies(replies: list[dict[str, Any]]) -> list[str]:
    return sorted(str((r["dev"], str(r["proto"]), r.get("icmp_type"), r.get("icmp_code"),
                       r.get("tcp_flags"))) for r in replies
                  if r.get("icmp_type") not in NOISE or r.get("proto") != "icmp6")


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--only", default="")
    args = parser.parse_args()
    rows = [r for r in json.loads(TABLE.read_text()) if r["name"].startswith(args.only)]
    differ = 0
    with tempfile.TemporaryDirectory() as tmp:
        for row in rows:
            run = subprocess.run([str(TUNLAB), *_args(row, Path(tmp))], capture_output=True,
                                 text=True, timeout=60)
            if run.returncode not in (0, 1):
                print(f"{row['name']:38} ERROR {run.stderr.strip()[:200]}")
                differ += 1
                continue
            fate = json.loads(run.stdout)
            want = (row["verdict"], sorted(row["drop_reasons"]), _replies(row["replies"]))
            got = (fate["verdict"], sorted(fate["drop_reasons"]), _replies(fate["replies"]))
            same = want == got
            differ += not same
            print(f"{row['name']:38} {'same' if same else 'DIFFERS'}"
                  + ("" if same else f"\n    measured {want}\n    fate     {got}"), flush=True)
    print(f"{len(rows) - differ} of {len(rows)} agree")
    return 1 if differ else 0


if __name__ == "__main__":
    sys.exit(main())
