"""Writes slo_test.yml: promtool unit tests for the 16 SLO burn-rate alerts of ../rules/alerts.yml.

The scenarios are regular (every SLO route gets the same traffic shape), so they are generated
rather than typed. Edit this file, then run it (needs PyYAML) and commit both:

    python3 gen_slo_test.py && promtool test rules slo_test.yml

summary and runbook are static text and are taken from alerts.yml; the descriptions (with
the burn rate each scenario must produce) and the labels are spelt out here.
"""
import os

import yaml

HERE = os.path.dirname(os.path.abspath(__file__))

ALERTS = {r["alert"]: r for g in yaml.safe_load(open(os.path.join(HERE, "..", "rules", "alerts.yml")))["groups"]
          for r in g["rules"] if "alert" in r}

INSTANCE = {"orders": "127.0.0.1:8084", "catalog": "127.0.0.1:8082", "identity": "127.0.0.1:8081"}
# key: (alert prefix, slo label, service, method, route, ok status, threshold le, threshold words)
ROUTES = {
    "checkout": ("Checkout", "checkout", "orders", "POST", "/api/v1/orders", "201", "1", "1s"),
    "product": ("ProductReads", "product-reads", "catalog", "GET", "/api/v1/products/{id}", "200", "0.1", "100ms"),
    "listing": ("Search", "search", "catalog", "GET", "/api/v1/products", "200", "0.25", "250ms"),
    "suggest": ("Search", "search", "catalog", "GET", "/api/v1/products/suggest", "200", "0.25", "250ms"),
    "login": ("Login", "login", "identity", "POST", "/api/v1/auth/login", "200", "1", "1s"),
}
LES = ["0.1", "0.25", "1"]
WORDS = {
    "FastBurn": "paging at 14.4x over 1h and 5m, or 6x over 6h and 30m; at 14.4x a 30-day budget lasts 2 days",
    "SlowBurn": "ticket at 3x over 1d and 2h, or 1x over 3d and 6h; at 3x a 30-day budget lasts 10 days",
}


def values(segments):
    """segments: [(samples, increment per sample)] -> expanding notation, from 0 at t=0."""
    out, v = [], 0
    for i, (n, inc) in enumerate(segments):
        if i == 0:
            out.append(f"{v}+{inc}x{n}")
            v += inc * n
        else:
            v += inc
            out.append(f"{v}+{inc}x{n - 1}")
            v += inc * (n - 1)
    return " ".join(out)


def route_series(service, method, route, status, le_thr, segments):
    """segments: [(samples, requests, 5xx, slower than the threshold)], counts per sample interval."""
    job = f"emporium-{service}"
    base = f'job="{job}", instance="{INSTANCE.get(service, "127.0.0.1:8080")}", service="{service}", method="{method}", route="{route}"'
    out = [(f'http_server_requests_total{{{base}, status="{status}"}}', values([(m, n - e) for m, n, e, s in segments]))]
    if any(e for _, _, e, _ in segments):
        out.append((f'http_server_requests_total{{{base}, status="500"}}', values([(m, e) for m, n, e, s in segments])))
    # All requests in one status's histogram: the latency SLI does not look at status.
    for le in LES:
        def inc(n, s, le=le):
            if float(le) < float(le_thr):
                return (n - s) // 2   # some well under the threshold
            if le == le_thr:
                return n - s          # s requests slower than the threshold
            return n                  # all within the next boundaries
        out.append((f'http_server_request_duration_seconds_bucket{{{base}, status="{status}", le="{le}"}}',
                     values([(m, inc(n, s)) for m, n, e, s in segments])))
    out.append((f'http_server_request_duration_seconds_bucket{{{base}, status="{status}", le="+Inf"}}', values([(m, n) for m, n, e, s in segments])))
    out.append((f'http_server_request_duration_seconds_count{{{base}, status="{status}"}}', values([(m, n) for m, n, e, s in segments])))
    return out


def expected(kind, speed, key, value):
    prefix, slo, service, method, route, _, le, thr = ROUTES[key]
    name = f"{prefix}{kind}Budget{speed}"
    labels = {"severity": "page" if speed == "FastBurn" else "ticket", "slo": slo,
              "sli": "availability" if kind == "Error" else "latency",
              "burn": "fast" if speed == "FastBurn" else "slow",
              "service": service, "method": method, "route": route}
    if kind == "Error":
        desc = (f"{method} {route} on {service} answers 5xx at {value}x the rate a 99.9% objective "
                f"allows ({WORDS[speed]}).")
    else:
        labels["le"] = le
        desc = (f"{method} {route} on {service}: requests slower than {thr} are {value}x as frequent "
                f"as a 99% objective allows ({WORDS[speed]}).")
    static = ALERTS[name]["annotations"]
    return name, {"exp_labels": labels,
                  "exp_annotations": {"summary": static["summary"], "description": desc,
                                      "runbook": static["runbook"]}}


NAMES = [f"{p}{k}Budget{s}" for p in ["Checkout", "ProductReads", "Search", "Login"]
         for k in ["Error", "Latency"] for s in ["FastBurn", "SlowBurn"]]
assert set(NAMES) <= set(ALERTS) and len(NAMES) == 16


def scenario(name, series, eval_time, firing, quiet, interval="1m"):
    """firing: {alertname: [exp_alert]}; quiet: alertnames expected not to fire at eval_time."""
    tests = []
    for alert in NAMES:
        if alert in firing:
            tests.append({"eval_time": eval_time, "alertname": alert, "exp_alerts": firing[alert]})
        elif alert in quiet:
            tests.append({"eval_time": eval_time, "alertname": alert, "exp_alerts": []})
    return {"name": name, "interval": interval,
            "input_series": [{"series": s, "values": v} for s, v in series],
            "alert_rule_test": tests}


def collect(pairs):
    out = {}
    for name, exp in pairs:
        out.setdefault(name, []).append(exp)
    return out


tests = []
SLO_KEYS = ["checkout", "product", "suggest", "login"]   # listing stays healthy where noted

# 1. Fast burn: 5% errors (50x) and 20% slow (20x) from t=0; listing healthy.
series = []
for key, (_, _, service, method, route, status, le, _) in ROUTES.items():
    burn = key != "listing"
    series += route_series(service, method, route, status, le, [(30, 100, 5 if burn else 0, 20 if burn else 0)])
firing = collect([expected(k, "FastBurn", key, v) for key in SLO_KEYS for k, v in [("Error", 50), ("Latency", 20)]])
tests.append(scenario(
    "FastBurn pages at 50x (errors) and 20x (latency) on each SLO route; the healthy search listing stays quiet",
    series, "10m", firing, set()))

# 2. Slow burn via 3x over 1d and 2h: 0.5% errors (5x), 5% slow (5x). Fast burn must not fire.
series = []
for key, (_, _, service, method, route, status, le, _) in ROUTES.items():
    series += route_series(service, method, route, status, le, [(40, 200, 1, 10)])
firing = collect([expected(k, "SlowBurn", key, v) for key in ["checkout", "product", "listing", "suggest", "login"]
                  for k, v in [("Error", 5), ("Latency", 5)]])
tests.append(scenario(
    "SlowBurn opens tickets at 5x (3x over 1d and 2h); FastBurn stays quiet below 6x",
    series, "30m", firing, {n for n in NAMES if n.endswith("FastBurn")}))

# 3. Slow burn via 1x over 3d and 6h only: 0.2% errors (2x), 2% slow (2x).
series = []
for key, (_, _, service, method, route, status, le, _) in ROUTES.items():
    series += route_series(service, method, route, status, le, [(40, 500, 1, 10)])
firing = collect([expected(k, "SlowBurn", key, v) for key in ["checkout", "product", "listing", "suggest", "login"]
                  for k, v in [("Error", 2), ("Latency", 2)]])
tests.append(scenario(
    "SlowBurn opens tickets at 2x through its 1x-over-3d-and-6h branch; FastBurn stays quiet",
    series, "30m", firing, {n for n in NAMES if n.endswith("FastBurn")}))

# 4. Healthy: 0.05% errors and 0.5% slow (0.5x), while routes outside the SLOs fail and crawl.
series = []
for key, (_, _, service, method, route, status, le, _) in ROUTES.items():
    series += route_series(service, method, route, status, le, [(40, 2000, 1, 10)])
# Not SLO routes: orders' order list (all 5xx, all slow), the gateway's own view of checkout
# (the SLO is measured at the orders service), and catalog's categories.
series += route_series("orders", "GET", "/api/v1/orders", "200", "1", [(40, 100, 100, 100)])
series += route_series("gateway", "POST", "/api/v1/orders", "201", "1", [(40, 100, 100, 100)])
series += route_series("catalog", "GET", "/api/v1/categories", "200", "0.1", [(40, 100, 100, 100)])
tests.append(scenario(
    "Healthy SLO routes (0.5x) raise nothing, however badly other routes and services do",
    series, "30m", {}, set(NAMES)))

# 5. No traffic at all on the SLO routes: nothing fires (no division by zero).
series = []
for key, (_, _, service, method, route, status, le, _) in ROUTES.items():
    series += [(s, "3+0x40") for s, _ in route_series(service, method, route, status, le, [(40, 1, 1, 1)])]
tests.append(scenario(
    "Routes without traffic raise nothing",
    series, "30m", {}, set(NAMES)))

# 6. Recovery: checkout burns for 20 minutes, then is healthy. FastBurn holds while the 30m
#    window still sees the burn (its value then comes from the 6h window), and ends once the
#    30m window is clean even though the 1h window alone would still page. SlowBurn stays
#    (the budget was spent) until its 2h window is clean.
series = route_series("orders", "POST", "/api/v1/orders", "201", "1", [(20, 100, 5, 20), (40, 100, 0, 0)])
tests.append(scenario(
    "Checkout FastBurn holds through the 6h and 30m windows after recovery (5m window clean)",
    series, "25m",
    collect([expected("Error", "FastBurn", "checkout", 40), expected("Latency", "FastBurn", "checkout", 16)]),
    set()))
tests.append(scenario(
    "Checkout FastBurn ends once its 30m window is clean; SlowBurn stays",
    series, "55m",
    collect([expected("Error", "SlowBurn", "checkout", 18.18), expected("Latency", "SlowBurn", "checkout", 7.273)]),
    {"CheckoutErrorBudgetFastBurn", "CheckoutLatencyBudgetFastBurn"}))

# 7. A sudden burst after hours of calm: only the 14.4x-over-1h-and-5m branch sees it (the
#    6h window, here all 242 minutes, dilutes it under 6x). 12 minutes of 10% errors: 1h 20x,
#    6h 4.96x; 12 minutes of all requests slow: 1h 20x, 6h 4.96x.
series = route_series("orders", "POST", "/api/v1/orders", "201", "1", [(230, 100, 0, 0), (12, 100, 10, 100)])
tests.append(scenario(
    "Checkout FastBurn pages on a 12-minute burst through its 1h and 5m branch alone",
    series, "242m",
    collect([expected("Error", "FastBurn", "checkout", 20), expected("Latency", "FastBurn", "checkout", 20)]),
    set()))

# 8. Only the 3x-over-1d-and-2h branch: errors in the morning (20 minutes), a busy healthy
#    afternoon (220 minutes), errors again on a quiet evening (140 minutes). The 6h window
#    holds the afternoon's good requests but not the morning (0.06x), so the 1x branch stays
#    quiet; the 1d window still holds the morning. One sample per 10 minutes (no 5m rate
#    then, so FastBurn stays quiet). Per 10 minutes: 10000 requests, 500 errors, 5000 slow;
#    10000 fine; 100 with 1 error and 10 slow. 1d: 1014 / 241400 errors = 4.2x,
#    10140 / 241400 slow = 4.2x; 2h: 10x, from 360m (pure evening), firing from 375m.
series = route_series("identity", "POST", "/api/v1/auth/login", "200", "1",
                      [(2, 10000, 500, 5000), (22, 10000, 0, 0), (14, 100, 1, 10)])
tests.append(scenario(
    "Login SlowBurn opens a ticket through its 1d and 2h branch alone",
    series, "380m",
    collect([expected("Error", "SlowBurn", "login", 4.2), expected("Latency", "SlowBurn", "login", 4.2)]),
    {"LoginErrorBudgetFastBurn", "LoginLatencyBudgetFastBurn"}, interval="10m"))

fired = {t["alertname"] for sc in tests for t in sc["alert_rule_test"] if t["exp_alerts"]}
assert fired == set(NAMES), set(NAMES) - fired

doc = {"rule_files": ["../rules/recording.yml", "../rules/alerts.yml"],
       "evaluation_interval": "1m",
       "group_eval_order": ["emporium-http-slo-short", "emporium-http-slo-long", "emporium-http-traffic",
                            "emporium-availability", "emporium-slo", "emporium-events", "emporium-dependencies"],
       "tests": tests}


class Dumper(yaml.SafeDumper):
    pass


def str_rep(dumper, data):
    # Single-quoted series selectors read like PromQL; plain scalars elsewhere.
    style = "'" if ("{" in data or data.startswith("0+")) else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", data, style=style)


Dumper.add_representer(str, str_rep)
header = """# Unit tests for the SLO burn-rate alerts of ../rules/alerts.yml (16 alerts: 4 SLOs x
# availability/latency x fast/slow). GENERATED by gen_slo_test.py: edit that, not this.
#
# Series start at t=0, so the long windows hold only the test's minutes: a burn rate is a
# ratio and needs no days of data. Scenarios (in order): fast burn on every SLO route;
# slow burn through the 3x and through the 1x branch; healthy routes beside failing
# non-SLO routes; no traffic; recovery (FastBurn ends with its short window); a burst only
# the 1h/5m branch sees; a day only the 1d/2h branch sees. Burn rates: 5xx share / 0.001,
# share slower than the threshold / 0.01.
#
# group_eval_order: promtool evaluates groups in this order at each step (unlisted ones in
# random order), so the alerts see this step's recorded ratios. List every group.
#
# Run from this directory: promtool test rules *.yml

"""
text = yaml.dump(doc, Dumper=Dumper, sort_keys=False, width=200, default_flow_style=False)
open(os.path.join(HERE, "slo_test.yml"), "w").write(header + text)
