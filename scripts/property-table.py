#!/usr/bin/env python3
"""Prints the README's property table from `gst-inspect-1.0 regiondrop` output on stdin."""
import re
import sys

text = sys.stdin.read()
section = text.split("Element Properties:", 1)[1]
rows, cur = [], None
for line in section.splitlines():
    m = re.match(r"^  ([a-z][a-z0-9-]*)\s+: (.*)$", line)
    if m:
        cur = {"name": m.group(1), "blurb": m.group(2), "type": "", "default": "", "flags": ""}
        rows.append(cur)
        continue
    if cur is None:
        continue
    s = line.strip()
    if s.startswith("flags:"):
        cur["flags"] = s[len("flags:"):].strip()
    elif "Default:" in s and not cur["type"]:
        kind = s.split(".")[0].split(" Default")[0].split(" Range")[0]
        cur["type"] = kind.replace('"', "")
        cur["default"] = s.split("Default:", 1)[1].strip()
        rng = re.search(r"Range:\s*(.*?)\s*Default", s)
        if rng:
            cur["type"] += " (" + re.sub(r"\s+", " ", rng.group(1)) + ")"
skip = {"name", "parent", "qos"}
print("| property | type | default | access | description |")
print("|---|---|---|---|---|")
for r in rows:
    if r["name"] in skip:
        continue
    access = "read-only" if "writable" not in r["flags"] else (
        "live" if "PLAYING" in r["flags"] else "before start")
    print(f"| `{r['name']}` | {r['type']} | `{r['default']}` | {access} | {r['blurb'].replace('|', '/')} |")
