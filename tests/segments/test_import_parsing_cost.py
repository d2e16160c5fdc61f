"""What the importer pays per line in Python: no per-line JSON decoder, properties encoded
once between the record checks and the COPY line (bench/ingest.py: Python's parsing
competes with PostgreSQL for the same two cores)."""

from __future__ import annotations

import datetime as dt
import json
from unittest import mock

import pytest

from segments.importing import records
from segments.importing.postgres import _copy_line
from segments.importing.records import loads_json, parse_event

pytestmark = pytest.mark.pure

TYPES = {"visit": False, "order": True}
# Every input kind json.loads handles, with what it returns or raises.
INPUTS = [
    b'{"a": 1, "b": "x"}',
    '{"a": [1, 2.5, null, true]}',
    b"\xef\xbb\xbf" + b'{"bom": 1}',  # a UTF-8 BOM in bytes: accepted by json.loads
    '\ufeff{"bom": 1}',  # in a str: json.loads' "Unexpected UTF-8 BOM" error
    '{"a": 1}'.encode("utf-16-le"),  # UTF-16 without a BOM (detect_encoding)
    b'{"s": "\xed\xa0\x80"}',  # a lone surrogate in UTF-8: decoded with surrogatepass
    b'{"n": NaN}',
    b'{"n": Infinity}',
    b'{"x": 1',
    b"\xff\xfe\xfa",
    b'{"a": 1} trailing',
]


def _outcome(call, raw):
    try:
        return ("ok", call(raw))
    except Exception as exc:  # noqa: BLE001 - the exception kind and text are what is compared
        return (type(exc).__name__, str(exc))


def _reference(raw):
    return json.loads(raw, parse_constant=records._reject_constant)


def test_loads_json__many_lines__no_decoder_per_line_and_same_results_as_json_loads() -> None:
    # Given the results json.loads gives for each kind of input
    expected = [_outcome(_reference, raw) for raw in INPUTS]
    # When the importer's loads_json reads 1,000 ordinary lines and each special input
    with mock.patch.object(json.JSONDecoder, "__init__", autospec=True, side_effect=json.JSONDecoder.__init__) as init:
        for n in range(1000):
            loads_json(f'{{"event_id": "e{n}", "properties": {{"page": "home"}}}}'.encode())
        got = [_outcome(loads_json, raw) for raw in INPUTS]
    # Then no decoder was built for the ordinary lines (only for the rare inputs it hands to
    # json.loads), and every result and error is json.loads' own
    assert init.call_count <= 3
    assert got == expected


def test_copy_line__checked_properties__encoded_once_and_each_line_its_own() -> None:
    # Given events whose properties parse_event checks (it encodes them to find NaN, NUL, …)
    lines = [
        {"event_id": f"e{n}", "customer_id": "c1", "type": "visit", "occurred_at": "2025-01-02T03:04:05Z",
         "properties": {"page": "home", "n": n, "text": "tab\there"}}
        for n in range(100)
    ]  # fmt: skip
    iterencode = json.JSONEncoder.iterencode
    with mock.patch.object(json.JSONEncoder, "iterencode", autospec=True, side_effect=iterencode) as counted:
        # When each is parsed and turned into its COPY line
        out = [_copy_line(n, parse_event(line, event_types=TYPES), 1) for n, line in enumerate(lines, 1)]
        # and an event built elsewhere (properties never checked) follows one that was
        other = records.EventInput(
            event_id="x", customer_id="c1", type="visit", occurred_at=dt.datetime(2025, 1, 2, tzinfo=dt.UTC),
            properties={"page": "offers"},
        )  # fmt: skip
        other_line = _copy_line(101, other, 1)
    # Then each checked object was encoded once, the other one on its own, and every line
    # carries its own properties (tab escaped for COPY)
    assert counted.call_count == len(lines) + 1
    assert out[0] == ('1\te0\tc1\t1\t2025-01-02T03:04:05+00:00\t{"page":"home","n":0,"text":"tab\\\\there"}\t\\N\t\n')
    assert '"n":99' in out[99]
    assert '\t{"page":"offers"}\t' in other_line
