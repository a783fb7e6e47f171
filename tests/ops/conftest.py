"""Reading /metrics the way Prometheus does."""

from __future__ import annotations

import pytest
from prometheus_client.parser import text_string_to_metric_families


def parse_metrics(text: str) -> dict[tuple[str, tuple], float]:
    """{(sample name, sorted label pairs): value} for every sample of an exposition."""
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def total(samples: dict, name: str, **labels: str) -> float:
    """The sum of `name` over the samples whose labels include `labels`."""
    wanted = set(labels.items())
    return sum(
        value
        for (sample, pairs), value in samples.items()
        if sample == name and wanted <= set(pairs)
    )


@pytest.fixture
def scrape(client, settings):
    """GET /metrics as Prometheus would in production (tests run with DEBUG off)."""
    settings.METRICS_TOKEN = "scraper-token"

    def get() -> dict[tuple[str, tuple], float]:
        response = client.get("/metrics", HTTP_AUTHORIZATION="Bearer scraper-token")
        assert response.status_code == 200, response.content[:300]
        return parse_metrics(response.content.decode())

    return get
