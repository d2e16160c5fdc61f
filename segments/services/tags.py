"""Writes of tags: computed tag rules (one door: ``tag_rule_create`` / ``tag_rule_update``),
manual tags (``tag_create``) and setting them on customers by hand (``customer_tag_add`` /
``customer_tag_remove``).

**The code scheme** (one for everyone, never free text): one to eight capital letters
naming the fact, optionally followed by a number without leading zeros (a count, a level
or a grade), e.g. ``F3`` (repurchased three times), ``TP2`` (bought product TP twice),
``A`` (high value), ``VIP``, ``CT1`` (city tier 1), ``PS`` (price-sensitive). Tier tags
are named by their layer instead (``rfm.important_value``, written by the dimension's
recompute) and have no rule.

**Computed vs manual.** A tag rule's holders are recomputed set-based
(``segments.services.materialize.tag_write``): customers who start matching gain a
*computed* row, computed rows of customers who stop matching are removed; both moves are
kept in ``TagHistory``. A *manual* row (who set it, when) is never changed or removed by
a recompute: a customer holding the tag by hand keeps it whatever the rule says, and is
not given a second, computed row.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterator
from typing import Any

from django.contrib.auth.models import AbstractBaseUser
from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone

from segments.models import Customer, CustomerTag, Tag, TagHistory, TagRule
from segments.rules import rule_check

TAG_CODE_RE = re.compile(r"^[A-Z]{1,8}(?:0|[1-9][0-9]{0,3})?$")
TAG_CODE_HELP = (
    "One to eight capital letters, optionally followed by a number without leading zeros: "
    "F3 (repurchased three times), TP2 (bought product TP twice), A (high value), VIP, CT1."
)
RULE_FAMILIES = (Tag.Family.STATIC, Tag.Family.CONSUMPTION, Tag.Family.BEHAVIOUR)


def tag_code_validate(*, code: Any) -> None:
    """Raise ``ValidationError({"code": ...})`` unless ``code`` follows the scheme."""
    if not isinstance(code, str) or not TAG_CODE_RE.match(code):
        raise ValidationError({"code": [f"{code!r} does not follow the tag code scheme. {TAG_CODE_HELP}"]})


def tag_family_validate(*, family: Any) -> None:
    if family == Tag.Family.TIER:
        raise ValidationError(
            {
                "family": [
                    "tier tags are computed by dimensions (one per layer); "
                    "a tag rule is static, consumption or behaviour"
                ]
            }
        )
    if family not in RULE_FAMILIES:
        raise ValidationError({"family": [f"unknown family {family!r}; use one of: {', '.join(RULE_FAMILIES)}"]})


def _tag_refs(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        if isinstance(node.get("tag"), str):
            yield node["tag"]
        for value in node.values():
            yield from _tag_refs(value)
    elif isinstance(node, list):
        for item in node:
            yield from _tag_refs(item)


def tag_rule_dependencies() -> dict[str, set[str]]:
    """``{code: codes of computed tags its rule reads}`` over every tag rule."""
    rules = TagRule.objects.values_list("tag__code", "rule")
    computed = {code for code, _ in rules}
    return {code: set(_tag_refs(rule)) & computed for code, rule in rules}


def tag_rule_order(codes: list[str]) -> list[str]:
    """``codes`` ordered so a rule that reads another computed tag runs after it (stable by
    code otherwise); cycles are refused when rules are saved."""
    deps = tag_rule_dependencies()
    ordered: list[str] = []
    placed: set[str] = set()

    def visit(code: str, stack: tuple[str, ...]) -> None:
        if code in placed or code in stack:
            return
        for dep in sorted(deps.get(code, ())):
            visit(dep, (*stack, code))
        placed.add(code)
        ordered.append(code)

    for code in sorted(codes):
        visit(code, ())
    wanted = set(codes)
    return [code for code in ordered if code in wanted]


def tag_rule_validate(*, code: str, rule: Any) -> None:
    """Raise ``ValidationError({"rule": [...]})``: every problem of the rule (with its path),
    a rule reading its own tag, or a cycle through other tag rules."""
    issues, _ = rule_check(rule)
    if issues:
        raise ValidationError({"rule": [str(issue) for issue in issues]})
    deps = tag_rule_dependencies()
    deps[code] = set(_tag_refs(rule)) & (set(deps) | {code})
    if code in deps[code]:
        raise ValidationError({"rule": [f"rule: the rule of {code} cannot read the tag {code} itself"]})
    # Depth-first search for a path from one of this rule's dependencies back to it.
    stack, seen = [(dep, (code, dep)) for dep in sorted(deps[code])], set()
    while stack:
        current, path = stack.pop()
        if current == code:
            raise ValidationError({"rule": [f"rule: tag rules would read each other in a cycle: {' → '.join(path)}"]})
        if current in seen:
            continue
        seen.add(current)
        stack.extend((dep, (*path, dep)) for dep in sorted(deps.get(current, ())))


@transaction.atomic
def tag_create(*, code: str, name: str, family: str, description: str = "") -> Tag:
    """A manual tag (set on customers by hand): the same code scheme and families as tag
    rules; tier tags come from the dimensions."""
    tag_code_validate(code=code)
    tag_family_validate(family=family)
    if Tag.objects.filter(code=code).exists():
        raise ValidationError({"code": [f"a tag with code {code!r} already exists"]})
    tag = Tag(code=code, name=name, family=family, source=Tag.Source.MANUAL, description=description)
    tag.full_clean()
    tag.save()
    return tag


@transaction.atomic
def tag_rule_create(
    *,
    code: str,
    name: str,
    family: str,
    rule: dict[str, Any],
    description: str = "",
    is_active: bool = True,
    created_by: AbstractBaseUser | None = None,
) -> TagRule:
    """A computed tag: the tag (source "computed") and the rule that decides its holders.
    Holders are written by the next recompute (``tag_rule_recompute``)."""
    tag_code_validate(code=code)
    tag_family_validate(family=family)
    if Tag.objects.filter(code=code).exists():
        raise ValidationError({"code": [f"a tag with code {code!r} already exists"]})
    tag_rule_validate(code=code, rule=rule)
    tag = Tag(code=code, name=name, family=family, source=Tag.Source.COMPUTED, description=description)
    tag.full_clean()
    tag.save()
    tag_rule = TagRule(tag=tag, rule=rule, is_active=is_active, created_by=created_by)
    tag_rule.full_clean()
    tag_rule.save()
    return tag_rule


@transaction.atomic
def tag_rule_update(
    *,
    tag_rule: TagRule,
    name: str | None = None,
    family: str | None = None,
    rule: dict[str, Any] | None = None,
    description: str | None = None,
    is_active: bool | None = None,
) -> TagRule:
    """Change a tag rule. The code is fixed once created: rules and segments name it."""
    tag = tag_rule.tag
    if family is not None:
        tag_family_validate(family=family)
        tag.family = family
    if name is not None:
        tag.name = name
    if description is not None:
        tag.description = description
    if rule is not None:
        tag_rule_validate(code=tag.code, rule=rule)
        tag_rule.rule = rule
    if is_active is not None:
        tag_rule.is_active = is_active
    tag.full_clean()
    tag.save()
    tag_rule.full_clean()
    tag_rule.save()
    return tag_rule


# --- Manual tags -----------------------------------------------------------------------------


def customer_tags_lock() -> None:
    """Serialize manual tag writes with tag rule recomputes (PostgreSQL; SQLite has one
    writer at a time anyway, taken at BEGIN IMMEDIATE).

    A recompute works on a REPEATABLE READ snapshot: a manual tag committed after it was
    taken would be invisible to it, and its insert of a computed row would then collide
    with the manual one (the run fails). Both sides take this lock first thing in their
    transaction, before any snapshot, so each sees the other's committed rows. SHARE ROW
    EXCLUSIVE conflicts with itself and with row writes, not with reads; manual edits are
    rare and a tag recompute's transaction short, so the wait is short.
    """
    from django.db import connection

    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute(f"LOCK TABLE {CustomerTag._meta.db_table} IN SHARE ROW EXCLUSIVE MODE")


@transaction.atomic
def customer_tag_add(
    *, customer: Customer, tag: Tag, by: AbstractBaseUser | None, at: dt.datetime | None = None
) -> CustomerTag:
    """Set ``tag`` on ``customer`` by hand (kept until a person removes it).

    Already held by hand: nothing changes. Held from a rule: the row becomes manual (who,
    when); in the history the computed period closes and a manual one opens at ``at``.
    """
    at = at or timezone.now()
    customer_tags_lock()
    row = CustomerTag.objects.select_for_update().filter(customer=customer, tag=tag).first()
    if row is not None and row.source == Tag.Source.MANUAL:
        return row
    if tag.family == Tag.Family.TIER:
        raise ValidationError({"tag": [f"{tag.code} is a tier tag: the dimension's recompute sets it"]})
    TagHistory.objects.filter(customer=customer, tag=tag, lost_at__isnull=True).update(lost_at=at)
    TagHistory.objects.create(customer=customer, tag=tag, source=Tag.Source.MANUAL, gained_at=at, changed_by=by)
    if row is None:
        return CustomerTag.objects.create(
            customer=customer, tag=tag, source=Tag.Source.MANUAL, assigned_by=by, assigned_at=at
        )
    row.source, row.assigned_by, row.assigned_at = Tag.Source.MANUAL, by, at
    row.save(update_fields=["source", "assigned_by", "assigned_at"])
    return row


@transaction.atomic
def customer_tag_remove(
    *, customer: Customer, tag: Tag, by: AbstractBaseUser | None, at: dt.datetime | None = None
) -> bool:
    """Take ``tag`` off ``customer`` (manual or computed); false when they did not hold it.
    A tag rule that still matches gives a computed tag back at its next recompute."""
    at = at or timezone.now()
    customer_tags_lock()
    deleted, _ = CustomerTag.objects.filter(customer=customer, tag=tag).delete()
    if deleted:
        TagHistory.objects.filter(customer=customer, tag=tag, lost_at__isnull=True).update(lost_at=at, changed_by=by)
    return bool(deleted)
