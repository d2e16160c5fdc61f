"""The demo's tags: rules in every family on data that makes each meaningful, and README's
own example rule (which names the tag VIP) valid and non-empty on the demo's business."""

from __future__ import annotations

import datetime as dt
import io
import json
import re
from pathlib import Path

import pytest
from django.core.management import call_command

from demo import configure
from demo.generator import PRODUCT_LINES, DemoSpec, customer_story, generate
from demo.plan import README_EXAMPLE_RULE, SEGMENTS, TAG_RULES
from segments.models import Segment, Tag, TagRule
from segments.rules import rule_check
from segments.services.recompute import recompute_all

ROOT = Path(__file__).resolve().parents[2]
END = dt.datetime(2025, 6, 2, tzinfo=dt.UTC)


def _readme_rule() -> dict:
    """The first JSON rule block under README's 'Rule segments' paragraph."""
    text = (ROOT / "README.md").read_text()
    section = text[text.index("**Rule segments**") :]
    block = re.search(r"```json\n(.*?)\n```", section, re.S)
    assert block is not None
    return json.loads(block.group(1))


@pytest.mark.pure
def test_readme_example_rule__is_the_demo_segments_rule() -> None:
    assert _readme_rule() == README_EXAMPLE_RULE
    assert any(plan.rule == README_EXAMPLE_RULE for plan in SEGMENTS)


@pytest.mark.pure
def test_demo_tag_rules__every_rule_family__at_least_two_rules() -> None:
    families = [plan.family for plan in TAG_RULES]
    assert {f: families.count(f) >= 2 for f in ("static", "consumption", "behaviour")} == {
        "static": True,
        "consumption": True,
        "behaviour": True,
    }
    assert "VIP" in {plan.code for plan in TAG_RULES}


@pytest.mark.pure
def test_customer_story__orders_and_carts__carry_sku_and_its_product_line() -> None:
    spec = DemoSpec(customers=200, seed=3, end=END)
    seen = set()
    for index in range(200):
        for event in customer_story(spec, index).events:
            if event["type"] in ("order", "add_to_cart"):
                sku, product = event["properties"]["sku"], event["properties"]["product"]
                assert product == PRODUCT_LINES[(int(sku[3:]) - 1) % len(PRODUCT_LINES)]
                seen.add(product)
    assert seen == set(PRODUCT_LINES)


@pytest.mark.django_db
def test_demo_tags__generated_business__every_rule_valid_and_holders_in_every_family(tmp_path: Path) -> None:
    # Given: a small generated business, imported as the demo does
    generate(DemoSpec(customers=600, seed=42, end=END), tmp_path, progress=False)
    configure.marketplace_event_types_ensure()  # the sellers' "sale" type, as run_demo does first
    for command, name in (
        ("import_customers", "customers.csv"),
        ("import_memberships", "memberships.jsonl"),
        ("import_events", "events.jsonl"),
    ):
        call_command(command, str(tmp_path / name), progress=False, stdout=io.StringIO())
    # When: the demo's tag rules and README's example segment are created and recomputed
    assert rule_check(README_EXAMPLE_RULE)[0][0].message == "unknown tag 'VIP'"
    configure.tag_rules_ensure(plans=TAG_RULES)
    assert rule_check(README_EXAMPLE_RULE)[0] == []
    configure.segments_ensure(plans=[p for p in SEGMENTS if p.rule == README_EXAMPLE_RULE])
    outcomes = recompute_all(as_of=END)
    # Then: everything succeeded, every tag rule has holders, and the README segment matches someone
    assert [o.target for o in outcomes if o.status != "succeeded"] == []
    sizes = dict(TagRule.objects.values_list("tag__code", "size"))
    assert sorted(code for code, size in sizes.items() if not size) == []
    assert set(Tag.objects.filter(rule__isnull=False).values_list("family", flat=True)) == {
        "static",
        "consumption",
        "behaviour",
    }
    assert Segment.objects.get(key="readme-example").size > 0
    # ... and a rerun creates nothing
    assert configure.tag_rules_ensure(plans=TAG_RULES) == []
