"""CSV and JSON exports: formula-injection escaping, undefined values in words, no NaN."""

from __future__ import annotations

import csv
import datetime as dt
import io
import json

import pytest

from experiments.reports.assemble import report_build
from experiments.reports.exports import CSV_COLUMNS, csv_cell, report_csv, report_filename, report_json
from segments.models import Layer
from tests.experiments.report_builders import PHASE_START, Group, dimension_create, experiment_create, populate

NOW = PHASE_START + dt.timedelta(days=8)  # after the 7-day windows of exposures on day 0 have closed


@pytest.mark.pure
@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ('=HYPERLINK("http://evil")', '\'=HYPERLINK("http://evil")'),
        ("+1+1", "'+1+1"),
        ("-2+3", "'-2+3"),
        ("@SUM(A1:A9)", "'@SUM(A1:A9)"),
        ("\tcmd", "'\tcmd"),
        ("\rcmd", "'\rcmd"),
        ("plain words", "plain words"),
        ("a=b", "a=b"),
        ("", ""),
        (None, ""),
    ],
)
def test_csv_cell__text__formula_prefixes_neutralised(value: object, expected: str) -> None:
    assert csv_cell(value) == expected


@pytest.mark.pure
def test_csv_cell__numbers_and_booleans__numbers_stay_numbers() -> None:
    assert csv_cell(-0.0125) == -0.0125
    assert csv_cell(-3) == -3
    assert csv_cell(True) == "yes"
    assert csv_cell(False) == "no"


@pytest.mark.django_db
def test_report_csv__hostile_layer_name_and_undefined_values__escaped_and_in_words() -> None:
    # Given a layer whose display name is a spreadsheet formula, and a layer where the
    # control never converted (relative lift undefined)
    dimension_create("tier", ["new", "vip"])
    Layer.objects.filter(key="vip").update(name='=HYPERLINK("http://evil.example","click")')
    experiment = experiment_create()
    populate(
        experiment,
        [
            Group("control", 300, {"order": 30}, {"tier": "new"}),
            Group("treatment", 300, {"order": 24}, {"tier": "new"}),
            Group("control", 200, {}, {"tier": "vip"}),
            Group("treatment", 200, {"order": 3}, {"tier": "vip"}),
        ],
    )
    report = report_build(experiment_key="offer-test", now=NOW)

    text = report_csv(report)

    rows = list(csv.DictReader(io.StringIO(text)))
    assert list(rows[0]) == list(CSV_COLUMNS)
    assert [(r["dimension"], r["layer"]) for r in rows] == [
        ("(all customers)", "All customers"),
        ("tier", "New"),
        ("tier", '\'=HYPERLINK("http://evil.example","click")'),
    ]
    vip = rows[2]
    assert vip["relative_lift"].startswith("undefined: The control arm has no conversions")
    assert vip["relative_lift_ci_low"].startswith("undefined:")
    assert float(vip["absolute_lift"]) == pytest.approx(3 / 200)
    new = rows[1]
    assert float(new["absolute_lift"]) == pytest.approx(-0.02)  # a negative number, not escaped text
    assert new["verdict"] == "inconclusive"
    assert new["adjustment"] == "holm"
    assert "layers of Tier" in new["family"]
    for row in rows:
        for value in row.values():
            assert value.lower() not in ("nan", "inf", "-inf", "infinity")
            assert not value.startswith(("=", "+", "@", "\t", "\r")) or value.startswith("'")


@pytest.mark.django_db
def test_report_json__no_traffic__strict_json_with_reasons() -> None:
    experiment_create()
    report = report_build(experiment_key="offer-test", now=NOW)

    data = json.loads(report_json(report))

    lift = data["metrics"][0]["overall"]["lifts"][0]
    assert lift["relative_lift"] is None
    assert lift["undefined"]["relative_lift"]["code"] == "no_traffic"
    assert lift["verdict"]["label"] == "not enough data"
    assert report_filename(report, "json") == "offer-test-report-phase1-holm.json"
