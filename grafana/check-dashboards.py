#!/usr/bin/env python3
"""Reads each dashboard given (default: grafana/dashboards/*.json) into Grafana's own
dashboard model, from the grafana-foundation-sdk package, and writes it back out. What
the model does not know (a misspelt key, an option in the wrong place, a panel type
Grafana does not have) is lost on the way back: the script lists every such key and
exits 1. Keys Grafana reads that this version of the model does not describe are
listed in KNOWN below, each with the reason.

    python3 -m pip install 'grafana-foundation-sdk==1769699998!10.1.0'
    python3 grafana/check-dashboards.py [FILE.json ...]

Prints one line per dashboard ("ok: …" or the problems); tests/grafana.rs runs it.
"""

import glob
import json
import os
import re
import sys

from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.cog.plugins import register_default_plugins
from grafana_foundation_sdk.cog import runtime
from grafana_foundation_sdk.models.dashboard import Dashboard

# Paths (with [] for any list index) that Grafana reads but the model leaves out.
KNOWN = {
    # The built-in "Annotations & Alerts" entry Grafana adds to every dashboard.
    ".annotations.list[].builtIn": "Grafana's own annotation marker",
    # InfluxQL annotations: the InfluxDB data source reads these (the model describes
    # only Grafana's built-in annotation target).
    ".annotations.list[].query": "InfluxDB annotation query (legacy field, still read)",
    ".annotations.list[].textColumn": "InfluxDB annotation column",
    ".annotations.list[].titleColumn": "InfluxDB annotation column",
    ".annotations.list[].tagsColumn": "InfluxDB annotation column",
    ".annotations.list[].target.refId": "InfluxDB annotation query",
    ".annotations.list[].target.query": "InfluxDB annotation query",
    ".annotations.list[].target.rawQuery": "InfluxDB annotation query",
    ".annotations.list[].target.resultFormat": "InfluxDB annotation query",
    # The variable editor's copy of the query text.
    ".templating.list[].definition": "query variable editor text",
    # Panel and option keys newer than the model.
    ".panels[].maxPerRow": "repeated panels per row (Grafana 8+)",
    ".panels[].options.wideLayout": "stat panel layout (Grafana 10.2+)",
}


def lost(written, read, path, out):
    """Appends to `out` every path of `written` that `read` lacks or changed."""
    if isinstance(written, dict):
        if not isinstance(read, dict):
            out.append(f"{path}: read back as {type(read).__name__}")
            return
        for k, v in written.items():
            p = f"{path}.{k}"
            if k not in read:
                out.append(p)
            else:
                lost(v, read[k], p, out)
    elif isinstance(written, list):
        if not isinstance(read, list) or len(read) != len(written):
            out.append(f"{path}: list read back changed")
            return
        for i, (w, r) in enumerate(zip(written, read)):
            lost(w, r, f"{path}[{i}]", out)
    elif written != read:
        out.append(f"{path}: {written!r} read back as {read!r}")


def check(file):
    with open(file, encoding="utf-8") as f:
        written = json.load(f)
    problems = []
    known_panels = set(runtime.Runtime().panelcfg_variants)
    for p in written.get("panels", []):
        if p.get("type") != "row" and p.get("type") not in known_panels:
            problems.append(f"panel {p.get('title')!r}: unknown type {p.get('type')!r}")
    model = Dashboard.from_json(written)
    read = json.loads(json.dumps(model, cls=JSONEncoder))
    paths = []
    lost(written, read, "", paths)
    for p in paths:
        generic = re.sub(r"\[\d+\]", "[]", p)
        if generic not in KNOWN:
            problems.append(f"{p}: not in Grafana's dashboard model")
    return problems


def main():
    register_default_plugins()
    here = os.path.dirname(os.path.abspath(__file__))
    files = sys.argv[1:] or sorted(glob.glob(os.path.join(here, "dashboards", "*.json")))
    failed = False
    for file in files:
        problems = check(file)
        if problems:
            failed = True
            print(f"{file}: {len(problems)} problems")
            for p in problems:
                print(f"  {p}")
        else:
            print(f"ok: {file}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
