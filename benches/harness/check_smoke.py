"""Fails unless the newest --quick run of the harness measured real forwarding.

For every throughput scenario, every switch that ran must have at least one usable window and a
non-zero median rate; no scenario may have ended in an error. This is what keeps the harness from
rotting: it is run by scripts/test.sh after `benches/run.sh --quick`.
"""
import glob
import json
import os
import sys

results = os.path.join(os.path.dirname(__file__), "..", "results")
runs = []
for f in glob.glob(os.path.join(results, "*.json")):
    try:
        d = json.load(open(f))
    except (OSError, ValueError):
        continue
    if d.get("meta", {}).get("mode") == "quick":
        runs.append((d["meta"].get("timestamp", ""), f, d))
if not runs:
    sys.exit("check_smoke: no --quick run found in %s" % results)
_, path, run = max(runs)
problems = []
for s in run.get("summary", []):
    if "error" in s:
        problems.append("%s: %s" % (s.get("id"), s["error"]))
        continue
    if s.get("kind") != "tput":
        continue
    for sw in ("evsd", "ovs", "testpmd"):
        r = s.get(sw)
        if r is None:
            continue
        if not r.get("used") or not (r.get("median") or 0) > 0:
            problems.append("%s: %s forwarded nothing (%s)" % (s.get("id"), sw, r))
if problems:
    print("check_smoke: %s" % path)
    for p in problems:
        print("  " + p)
    sys.exit(1)
print("check_smoke: %s: %d scenarios, every switch forwarded" % (os.path.basename(path), len(run.get("summary", []))))
