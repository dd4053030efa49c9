"""Fair share across tenants (DESIGN §8): the claim statement serves tenants
round-robin, priority ordering each tenant's own rows. (A real `jobsvc worker` behind a
deep backlog: tests/system/test_fairshare.py.)"""

from __future__ import annotations

import uuid
from typing import Any

from jobsvc import queue
from tests.helpers import connect, enqueue


def claim(url: str, limit: int, ring: queue.TenantRing) -> list[Any]:
    with connect(url) as conn, conn.transaction():
        jobs, _ = queue.claim(conn, "w", limit, ring)
    return [(j.tenant, j.priority) for j in jobs]


def test_claim_takes_tenants_round_robin_and_priority_within_each(database_url: str) -> None:
    for tenant, priorities in {"a": [0, 0, 5, 0, 0], "b": [1, 2], "c": [0]}.items():
        for p in priorities:
            enqueue(database_url, f"http://images.test/{uuid.uuid4().hex}.png", priority=p, tenant=tenant)
    ring = queue.TenantRing()
    # One of each tenant first (each its highest priority), then a second of each ...
    assert claim(database_url, 5, ring) == [("a", 5), ("b", 2), ("c", 0), ("a", 0), ("b", 1)]
    assert claim(database_url, 5, ring) == [("a", 0), ("a", 0), ("a", 0)]


def test_claim_moves_round_robin_past_the_tenants_it_served(database_url: str) -> None:
    tenants = [f"t{i:02}" for i in range(40)]
    for tenant in tenants:
        for _ in range(2):
            enqueue(database_url, f"http://images.test/{uuid.uuid4().hex}.png", tenant=tenant)
    ring = queue.TenantRing()
    served: list[str] = []
    for _ in range(8):  # 80 rows, 10 per claim: every tenant once, then every one again
        served += [t for t, _ in claim(database_url, 10, ring)]
    assert served == tenants + tenants
