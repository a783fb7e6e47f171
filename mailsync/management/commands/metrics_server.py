"""`manage.py metrics_server --port 9108`: /metrics for a machine that runs only workers.

A qcluster machine has no web server, yet its workers' figures are in its own
PROMETHEUS_MULTIPROC_DIR: this serves them (the same exposition as the web's /metrics,
with the same METRICS_TOKEN / METRICS_ALLOWED_NETWORKS rules) for Prometheus to scrape.
"""

from __future__ import annotations

from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from django.core.handlers.wsgi import WSGIRequest
from django.core.management.base import BaseCommand

from mailsync import metrics
from mailsync.ops_views import metrics_refusal


def application(environ, start_response):
    if environ.get("PATH_INFO", "/") not in ("/", "/metrics"):
        start_response("404 Not Found", [("Content-Type", "text/plain")])
        return [b"Not found: try /metrics\n"]
    refusal = metrics_refusal(WSGIRequest(environ))
    if refusal is not None:
        start_response(f"{refusal.status_code} {refusal.reason_phrase}", list(refusal.items()))
        return [refusal.content]
    start_response("200 OK", [("Content-Type", metrics.CONTENT_TYPE)])
    return [metrics.exposition()]


class QuietHandler(WSGIRequestHandler):
    def log_message(self, format, *args):  # one line per scrape is noise
        pass


class Command(BaseCommand):
    help = "Serve this machine's metrics (workers included) at /metrics, for Prometheus."

    def add_arguments(self, parser):
        parser.add_argument("--host", default="0.0.0.0", help="address to listen on (0.0.0.0)")  # noqa: S104
        parser.add_argument("--port", type=int, default=9108, help="port (9108)")

    def handle(self, *args, host: str, port: int, **options):
        server: WSGIServer = make_server(host, port, application, handler_class=QuietHandler)
        self.stdout.write(f"Serving metrics on http://{host}:{server.server_port}/metrics")
        self.stdout.flush()
        server.serve_forever()
