"""docs/grafana-dashboard.json only queries metrics that /metrics exposes."""

from __future__ import annotations

import json
import re

import pytest

from mailsync import health
from tests.cluster import ROOT

pytestmark = pytest.mark.django_db

DASHBOARD = ROOT / "docs" / "grafana-dashboard.json"
# A metric name in PromQL: an identifier not followed by "(" (a function) and not a
# label name inside braces or by()/without().
_IDENTIFIER = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
_LABELS = re.compile(r"\{[^}]*\}|\b(?:by|without)\s*\([^)]*\)")
_NOT_METRICS = {"sum", "max", "min", "avg", "rate", "increase", "histogram_quantile", "by", "le"}


def metric_names(expr: str) -> set[str]:
    expr = _LABELS.sub(" ", re.sub(r"\[[^\]]*\]", " ", expr))
    names = set()
    for match in _IDENTIFIER.finditer(expr):
        following = expr[match.end() :].lstrip()[:1]
        if following != "(" and match.group() not in _NOT_METRICS:
            names.add(match.group())
    return names


def test_metric_names_are_read_from_promql():
    assert metric_names(
        'sum by (method, status) (rate(mailsync_gmail_requests_total{status!="200"}[5m]))'
    ) == {"mailsync_gmail_requests_total"}
    assert metric_names(
        "histogram_quantile(0.95, sum by (le) (rate(mailsync_sync_lag_seconds_bucket[15m])))"
    ) == {"mailsync_sync_lag_seconds_bucket"}


def test_every_metric_the_dashboard_queries_is_exposed(scrape):
    health.beat("mailsync")  # heartbeat ages exist once a cluster has run
    dashboard = json.loads(DASHBOARD.read_text())
    exprs = [target["expr"] for panel in dashboard["panels"] for target in panel["targets"]]
    queried = set().union(*(metric_names(expr) for expr in exprs))
    exposed = {name for name, _labels in scrape()}

    assert len(dashboard["panels"]) >= 10
    assert queried, "the dashboard queries nothing"
    assert queried <= exposed, f"not exposed: {sorted(queried - exposed)}"
    titles = " ".join(panel["title"].lower() for panel in dashboard["panels"])
    for topic in ("sync lag", "throughput", "quota", "errors", "queue depth"):
        assert topic in titles
