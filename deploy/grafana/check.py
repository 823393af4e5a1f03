#!/usr/bin/env python3
"""Checks the Emporium Grafana dashboards without a Grafana.

    python3 deploy/grafana/check.py [--metrics FILE] [--promtool PATH] [--write-fake FILE]

* loads every dashboards/*.json, asserts unique uids and the keys provisioning relies on;
* extracts every panel target's `expr`, substitutes Grafana's variables ($__rate_interval -> 5m,
  $__interval -> 1m, $__range -> 1h, any template variable -> .*), writes the expressions as
  recording rules into a temporary file and runs `promtool check rules` on it (PromQL syntax);
* prints the metric names the expressions reference, and fails on any name that is not in
  deploy/METRICS.md (when that file is there) or, with --metrics FILE (a saved /metrics text
  exposition), on any name that does not appear in FILE. `up` is added by Prometheus itself and
  is always allowed.

--write-fake FILE writes a fake exposition with every name of METRICS.md (histograms as
_bucket/_sum/_count) to FILE and exits; it is how the name extraction was tested.

Exit status 0 when everything holds, 1 on any problem, 2 on bad usage.
"""
import argparse
import glob
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
DASHBOARDS = os.path.join(HERE, "dashboards")
METRICS_DOC = os.path.join(HERE, "..", "METRICS.md")

PANEL_TYPES = {"timeseries", "stat", "table"}
UNITS = {"reqps", "s", "bytes", "percentunit", "short"}
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
ALWAYS_PRESENT = {"up"}  # synthesised by Prometheus on every scrape

# Grafana's built-in variables and what the checks substitute for them.
BUILTINS = {
    "__rate_interval": "5m",
    "__interval": "1m",
    "__range": "1h",
    "__interval_ms": "60000",
    "__range_s": "3600",
    "__range_ms": "3600000",
}
# $name, ${name}, ${name:format}, [[name]], [[name:format]] ($1 in label_replace is no variable)
VARIABLE = re.compile(r"\$\{(\w+)(?::[^}]*)?\}|\$(?!\d)(\w+)|\[\[(\w+)(?::[^\]]*)?\]\]")
STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
REGEX_STRING = re.compile(r'(?:=~|!~)\s*("(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`)')

# Words that are PromQL syntax, not metric names (compared case-insensitively).
KEYWORDS = {
    "and", "or", "unless", "atan2", "by", "without", "on", "ignoring", "group_left", "group_right",
    "bool", "offset", "inf", "nan", "start", "end",
    "sum", "min", "max", "avg", "group", "stddev", "stdvar", "count", "count_values", "bottomk",
    "topk", "quantile", "limitk", "limit_ratio",
}
CLAUSE = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^()]*\)", re.IGNORECASE)
IDENT = re.compile(r"[A-Za-z_:][A-Za-z0-9_:]*")


class Problems(list):
    def add(self, where, message):
        self.append(f"{where}: {message}")


def var_name(match):
    return match.group(1) or match.group(2) or match.group(3)


def substitute(expr):
    """Grafana variables replaced the way the checks (and the CI test) do."""
    def repl(m):
        name = var_name(m)
        return BUILTINS.get(name, ".*")
    return VARIABLE.sub(repl, expr)


def misplaced_variables(expr):
    """Template variables outside a regex matcher's string (`label=~"$var"`): after
    substitution they would not mean what they mean in Grafana."""
    allowed = [m.span(1) for m in REGEX_STRING.finditer(expr)]
    bad = []
    for m in VARIABLE.finditer(expr):
        if var_name(m) in BUILTINS:
            continue
        if not any(a <= m.start() and m.end() <= b for a, b in allowed):
            bad.append(m.group(0))
    return bad


def metric_names(expr):
    """Identifiers of `expr` that name metrics: string literals, label matchers, range and
    subquery selectors, grouping/matching clauses, numbers and durations removed; then every
    identifier not followed by `(` (a function) and not a PromQL keyword."""
    s = STRING.sub('""', expr)
    s = re.sub(r"#[^\n]*", " ", s)                  # comments
    s = re.sub(r"\{[^{}]*\}", " ", s)               # label matchers (strings already gone)
    s = re.sub(r"\[[^\[\]]*\]", " ", s)             # [5m], [1h:1m]
    s = CLAUSE.sub(" ", s)                          # by (..), on (..), group_left (..) …
    s = re.sub(r"(?<![A-Za-z0-9_:])\d[A-Za-z0-9_.]*", " ", s)   # 0.95, 1e3, 5m, 0x1f
    s = re.sub(r"(?<![A-Za-z0-9_:])\.\d[A-Za-z0-9_]*", " ", s)  # .5
    names = set()
    for m in IDENT.finditer(s):
        word = m.group(0)
        if word.lower() in KEYWORDS:
            continue
        if re.match(r"\s*\(", s[m.end():]):
            continue  # a function call
        names.add(word)
    return names


def documented_names(path):
    """Exposed names from METRICS.md's tables; histograms expand to _bucket/_sum/_count."""
    names = set()
    row = re.compile(r"^\|\s*`([A-Za-z_:][A-Za-z0-9_:]*)`\s*\|\s*(\w+)\s*\|")
    with open(path, encoding="utf-8") as f:
        for line in f:
            m = row.match(line)
            if not m:
                continue
            name, kind = m.groups()
            if kind == "histogram":
                names.update(name + s for s in ("_bucket", "_sum", "_count"))
            else:
                names.add(name)
    return names


def exposed_names(path):
    """Sample names of a Prometheus text exposition (comments and HELP/TYPE lines ignored)."""
    names = set()
    with open(path, encoding="utf-8") as f:
        for line in f:
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            m = IDENT.match(line)
            if m:
                names.add(m.group(0))
    return names


def write_fake(doc, out):
    names = sorted(documented_names(doc))
    with open(out, "w", encoding="utf-8") as f:
        for n in names:
            if n.endswith("_bucket"):
                f.write(f'{n}{{le="+Inf"}} 0\n')
            else:
                f.write(f"{n} 0\n")
    print(f"wrote {len(names)} sample names from {doc} to {out}")


def iter_panels(panels):
    for p in panels or []:
        yield p
        yield from iter_panels(p.get("panels"))  # panels inside collapsed rows


def check_dashboard(path, dash, problems, uids):
    where = os.path.basename(path)
    for key in ("uid", "title", "tags", "schemaVersion", "time", "refresh", "templating", "panels"):
        if key not in dash:
            problems.add(where, f"missing key {key!r}")
    uid = dash.get("uid")
    if uid in uids:
        problems.add(where, f"uid {uid!r} also used by {uids[uid]}")
    uids[uid] = where
    if "emporium" not in dash.get("tags", []):
        problems.add(where, 'tags lack "emporium"')
    if dash.get("schemaVersion") != 39:
        problems.add(where, f"schemaVersion is {dash.get('schemaVersion')!r}, expected 39")
    if dash.get("id") not in (None,):
        problems.add(where, "id must be null (Grafana assigns it)")

    variables = {v.get("name"): v for v in dash.get("templating", {}).get("list", [])}
    ds = variables.get("datasource")
    if not ds or ds.get("type") != "datasource" or ds.get("query") != "prometheus":
        problems.add(where, "templating lacks a prometheus datasource variable named 'datasource'")
    for name in ("job", "instance"):
        v = variables.get(name)
        if not v or v.get("type") != "query":
            problems.add(where, f"templating lacks a query variable {name!r}")
        elif "label_values(up{" not in json.dumps(v.get("query")):
            problems.add(where, f"variable {name!r} is not a label_values(up{{…}}, …) query")

    ids, cells, exprs = set(), [], []
    for p in iter_panels(dash.get("panels")):
        pw = f"{where} panel {p.get('id')} {p.get('title')!r}"
        if p.get("type") == "row":
            continue
        if p.get("id") in ids or not isinstance(p.get("id"), int):
            problems.add(pw, "panel id missing or not unique")
        ids.add(p.get("id"))
        if p.get("type") not in PANEL_TYPES:
            problems.add(pw, f"type {p.get('type')!r} not one of {sorted(PANEL_TYPES)}")
        for key in ("title", "description"):
            if not p.get(key):
                problems.add(pw, f"no {key}")
        if p.get("datasource") != DATASOURCE:
            problems.add(pw, f"datasource is {p.get('datasource')!r}, expected {DATASOURCE}")
        unit = p.get("fieldConfig", {}).get("defaults", {}).get("unit")
        if unit not in UNITS:
            problems.add(pw, f"unit {unit!r} not one of {sorted(UNITS)}")
        if p.get("type") == "timeseries" and not p.get("options", {}).get("legend", {}).get("showLegend"):
            problems.add(pw, "timeseries without a legend")
        g = p.get("gridPos") or {}
        if not all(isinstance(g.get(k), int) for k in ("x", "y", "w", "h")):
            problems.add(pw, f"bad gridPos {g!r}")
        else:
            if g["x"] < 0 or g["w"] <= 0 or g["x"] + g["w"] > 24:
                problems.add(pw, f"gridPos {g} outside the 24 columns")
            for other, og in cells:
                if (g["x"] < og["x"] + og["w"] and og["x"] < g["x"] + g["w"]
                        and g["y"] < og["y"] + og["h"] and og["y"] < g["y"] + g["h"]):
                    problems.add(pw, f"overlaps panel {other}")
            cells.append((p.get("id"), g))
        targets = p.get("targets") or []
        if not targets:
            problems.add(pw, "no targets")
        refs = set()
        for t in targets:
            tw = f"{pw} target {t.get('refId')}"
            if t.get("refId") in refs:
                problems.add(tw, "duplicate refId")
            refs.add(t.get("refId"))
            if t.get("datasource", DATASOURCE) != DATASOURCE:
                problems.add(tw, f"datasource is {t.get('datasource')!r}")
            expr = t.get("expr")
            if not isinstance(expr, str) or not expr.strip():
                problems.add(tw, "no expr")
                continue
            bad = misplaced_variables(expr)
            if bad:
                problems.add(tw, f"template variables outside a regex matcher: {', '.join(bad)}")
            exprs.append((tw, uid, p.get("id"), t.get("refId"), expr))
    return exprs


def run_promtool(promtool, exprs, problems):
    record_of = {}
    lines = ["groups:", "  - name: emporium-dashboards", "    rules:"]
    for i, (where, uid, pid, ref, expr) in enumerate(exprs):
        record = re.sub(r"[^A-Za-z0-9_:]", "_", f"dashboard:{uid}:panel_{pid}_{ref}_{i}")
        record_of[record] = where
        lines.append(f"      - record: {record}")
        lines.append(f"        expr: {json.dumps(substitute(expr))}")  # JSON string = YAML scalar
    with tempfile.TemporaryDirectory() as tmp:
        rules = os.path.join(tmp, "dashboards.rules.yml")
        with open(rules, "w", encoding="utf-8") as f:
            f.write("\n".join(lines) + "\n")
        proc = subprocess.run([promtool, "check", "rules", rules], capture_output=True, text=True)
    output = (proc.stdout + proc.stderr).strip()
    if proc.returncode != 0:
        for line in output.splitlines():
            if not line.strip() or line.startswith("Checking ") or line.strip() == "FAILED:":
                continue
            hit = next((w for r, w in record_of.items() if f'"{r}"' in line), None)
            problems.add("promtool", f"{hit}: {line.strip()}" if hit else line.strip())
        if not any(p.startswith("promtool") for p in problems):
            problems.add("promtool", f"exit status {proc.returncode}")
    return output


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--metrics", metavar="FILE", help="a saved /metrics text exposition")
    ap.add_argument("--promtool", default="promtool", help="promtool to run (default: from PATH)")
    ap.add_argument("--write-fake", metavar="FILE",
                    help="write a fake exposition of METRICS.md's names to FILE and exit")
    args = ap.parse_args()

    if args.write_fake:
        write_fake(METRICS_DOC, args.write_fake)
        return 0

    problems = Problems()
    uids, exprs = {}, []
    paths = sorted(glob.glob(os.path.join(DASHBOARDS, "*.json")))
    if not paths:
        problems.add(DASHBOARDS, "no dashboards")
    for path in paths:
        try:
            with open(path, encoding="utf-8") as f:
                dash = json.load(f)
        except (OSError, ValueError) as e:
            problems.add(os.path.basename(path), f"not loadable JSON: {e}")
            continue
        exprs.extend(check_dashboard(path, dash, problems, uids))

    promtool = shutil.which(args.promtool)
    if not promtool:
        problems.add("promtool", f"{args.promtool!r} not found")
    elif exprs:
        out = run_promtool(promtool, exprs, problems)
        print(f"promtool check rules: {len(exprs)} expressions: "
              f"{out.splitlines()[-1] if out else '(no output)'}")

    used = {}
    for where, _, _, _, expr in exprs:
        for name in metric_names(substitute(expr)):
            used.setdefault(name, where)
    print(f"{len(paths)} dashboards, {len(exprs)} target expressions, {len(used)} metric names referenced:")
    for name in sorted(used):
        print(f"  {name}")

    if os.path.exists(METRICS_DOC):
        documented = documented_names(METRICS_DOC) | ALWAYS_PRESENT
        for name in sorted(set(used) - documented):
            problems.add(used[name], f"{name} is not in deploy/METRICS.md")
    if args.metrics:
        try:
            exposed = exposed_names(args.metrics) | ALWAYS_PRESENT
        except OSError as e:
            problems.add(args.metrics, str(e))
        else:
            missing = sorted(set(used) - exposed)
            for name in missing:
                problems.add(used[name], f"{name} does not appear in {args.metrics}")
            if not missing:
                print(f"every referenced name appears in {args.metrics}")

    if problems:
        print(f"\n{len(problems)} problem(s):", file=sys.stderr)
        for p in problems:
            print(f"  {p}", file=sys.stderr)
        return 1
    print("OK")
    return 0


if __name__ == "__main__":
    sys.exit(main())
