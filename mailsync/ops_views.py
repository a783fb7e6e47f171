"""Endpoints for machines: /metrics for Prometheus, /health/ for load balancers."""

from __future__ import annotations

import hmac
import ipaddress

from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET

from . import health, metrics


def metrics_refusal(request: HttpRequest) -> HttpResponse | None:
    """Why this request may not read the metrics, or None. Open with DEBUG on; otherwise
    every rule that is configured must pass, and with none configured nobody passes."""
    if settings.DEBUG:
        return None
    token, networks = settings.METRICS_TOKEN, settings.METRICS_ALLOWED_NETWORKS
    if not token and not networks:
        return HttpResponse(
            "Metrics are closed: set METRICS_TOKEN or METRICS_ALLOWED_NETWORKS.\n",
            status=403,
            content_type="text/plain",
        )
    if networks:
        try:
            address = ipaddress.ip_address(request.META.get("REMOTE_ADDR", ""))
        except ValueError:
            address = None
        if address is None or not any(address in network for network in networks):
            return HttpResponse("Not from an allowed network.\n", status=403)
    if token:
        given = request.headers.get("Authorization", "")
        if not hmac.compare_digest(given.encode(), f"Bearer {token}".encode()):
            response = HttpResponse("A bearer token is required.\n", status=401)
            response["WWW-Authenticate"] = 'Bearer realm="metrics"'
            return response
    return None


@never_cache
@require_GET
def metrics_view(request: HttpRequest) -> HttpResponse:
    refusal = metrics_refusal(request)
    if refusal is not None:
        return refusal
    return HttpResponse(metrics.exposition(), content_type=metrics.CONTENT_TYPE)


@never_cache
@require_GET
def health_view(request: HttpRequest) -> JsonResponse:
    """200 when every check passes, 503 otherwise; `?only=database,broker` runs a subset
    (a web node's load balancer should not drop it because the workers are down)."""
    only = [name for name in request.GET.get("only", "").split(",") if name]
    unknown = [name for name in only if name not in health.CHECKS]
    if unknown:
        return JsonResponse(
            {"status": "error", "error": f"unknown check(s): {', '.join(unknown)}"}, status=400
        )
    ok, checks = health.run_checks(only or None)
    return JsonResponse(
        {"status": "ok" if ok else "fail", "checks": checks}, status=200 if ok else 503
    )
