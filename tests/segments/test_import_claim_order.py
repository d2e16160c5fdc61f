"""The parallel COPY writers' claim order (segments.importing.postgres._ClaimOrder), with
real threads: chunks claim in file order, whatever order their writers get ready in."""

from __future__ import annotations

import threading

import pytest

from segments.importing.postgres import _ClaimOrder

pytestmark = pytest.mark.pure


def test_claim_order__later_chunk_ready_first__claims_after_the_earlier_one() -> None:
    order, claims = _ClaimOrder(), []

    def chunk(seq: int) -> None:
        order.wait(seq)
        claims.append(seq)
        order.done(seq)

    # Given chunks 2 and 1 ready before chunk 0
    threads = [threading.Thread(target=chunk, args=(seq,)) for seq in (2, 1)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=0.2)
    assert claims == []  # both still wait for chunk 0
    # When chunk 0 claims
    chunk(0)
    for thread in threads:
        thread.join(timeout=5)
    # Then they follow in file order
    assert claims == [0, 1, 2]


def test_claim_order__earlier_chunk_failed__later_chunks_stop_instead_of_waiting() -> None:
    order, outcomes = _ClaimOrder(), []

    def chunk(seq: int) -> None:
        try:
            order.wait(seq)
            outcomes.append((seq, "claimed"))
        except RuntimeError:
            outcomes.append((seq, "stopped"))

    thread = threading.Thread(target=chunk, args=(1,))
    thread.start()
    order.fail()  # chunk 0's writer failed before its turn ended
    thread.join(timeout=5)
    assert outcomes == [(1, "stopped")]
