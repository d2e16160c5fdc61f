"""200 concurrent first requests for one never-seen customer, through a real server
process (gunicorn, 2 workers x 8 threads) on the test database: one assignment row, one
variant in every answer, no 5xx. Runs on SQLite and on PostgreSQL."""

from __future__ import annotations

import json
import threading
import urllib.error
import urllib.request
from collections import Counter

import pytest

from access.services import api_key_create
from experiments.models import Assignment
from segments.models import Customer

pytestmark = pytest.mark.django_db(transaction=True, serialized_rollback=True)

REQUESTS = 200


def test_assignments_api__200_concurrent_first_requests__one_row_one_variant_no_5xx(
    app_server, make_experiment
) -> None:
    make_experiment("race", weights=("0.34", "0.33", "0.33"))
    customer = Customer.objects.create(external_id="never-seen-before")
    _, key = api_key_create(name="race", scopes=["offers:read"])
    url = f"{app_server}/api/v1/customers/{customer.external_id}/assignments"
    start = threading.Barrier(REQUESTS)
    statuses: Counter[int] = Counter()
    variants: Counter[str | None] = Counter()
    lock = threading.Lock()

    def hit() -> None:
        request = urllib.request.Request(url, headers={"Authorization": f"Api-Key {key}"})
        start.wait()
        try:
            with urllib.request.urlopen(request, timeout=60) as response:
                status, body = response.status, json.loads(response.read())
        except urllib.error.HTTPError as error:
            status, body = error.code, {}
        with lock:
            statuses[status] += 1
            if status == 200:
                variants[body["results"][0]["variant"]] += 1

    threads = [threading.Thread(target=hit) for _ in range(REQUESTS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)

    assert statuses == {200: REQUESTS}
    assert len(variants) == 1 and None not in variants
    rows = list(Assignment.objects.filter(customer=customer).values_list("variant__key", "exposure_count"))
    assert rows == [(next(iter(variants)), REQUESTS)]
