#!/usr/bin/env python3
"""Markdown tables of the benchmark JSON lines scripts/gpu-check.sh wrote: usage gpu-summary.py OUT_DIR."""
import json
import pathlib
import sys


def rows(path):
    out = []
    for line in path.read_text().splitlines():
        line = line.strip()
        if line.startswith("{"):
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                pass
    return out


def fmt(v, nd=3):
    return "—" if v is None else (f"{v:.{nd}f}" if isinstance(v, float) else str(v))


def main():
    out = pathlib.Path(sys.argv[1] if len(sys.argv) > 1 else "/tmp/gpu-check")
    mains, fracs, other = [], [], []
    for p in sorted(out.glob("*.json")):
        for r in rows(p):
            kind = fracs if "fraction" in r else mains if "backend" in r else other
            kind.append((p.stem, r))
    if mains:
        print("| run | backend | precision | dense ms | sparse ms | speedup | efficiency | active | agreement_map50 | CPU ms dense / sparse |")
        print("|---|---|---|---|---|---|---|---|---|---|")
        for name, r in mains:
            print(f"| {name} | {r.get('backend')} | {r.get('precision', '—')} | {fmt(r.get('dense_ms'))} | "
                  f"{fmt(r.get('sparse_ms'))} | {fmt(r.get('speedup'), 2)} | {fmt(r.get('efficiency'), 2)} | "
                  f"{fmt(r.get('active_fraction'), 3)} | {fmt(r.get('agreement_map50'), 4)} | "
                  f"{fmt(r.get('dense_cpu_ms'))} / {fmt(r.get('sparse_cpu_ms'))} |")
    if fracs:
        print()
        print("| run | fraction | dense ms | sparse ms | speedup | efficiency | auto ms |")
        print("|---|---|---|---|---|---|---|")
        for name, r in fracs:
            print(f"| {name} | {fmt(r.get('fraction'), 2)} | {fmt(r.get('dense_ms'))} | {fmt(r.get('sparse_ms'))} | "
                  f"{fmt(r.get('speedup'), 2)} | {fmt(r.get('efficiency'), 2)} | {fmt(r.get('auto_ms'))} |")
    streams = [(p.stem, r) for p in sorted(out.glob("streams*.txt")) for r in rows(p)]
    if streams:
        print()
        print("| run | streams | mode | frames/s in all | per stream | ms per frame | active | CPU ms a frame |")
        print("|---|---|---|---|---|---|---|---|")
        for name, r in streams:
            print(f"| {name} | {r.get('streams')} | {r.get('mode')} | {fmt(r.get('fps_total'), 1)} | "
                  f"{fmt(r.get('fps_per_stream'), 1)} | {fmt(r.get('ms_per_frame'))} | {fmt(r.get('active_fraction'), 3)} | "
                  f"{fmt(r.get('cpu_ms_per_frame'))} |")
    for name, r in other:
        print(f"\n{name}: {json.dumps(r)}")


if __name__ == "__main__":
    main()
