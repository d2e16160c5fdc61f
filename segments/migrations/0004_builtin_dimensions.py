"""The built-in dimensions with their layers and tier tags (family "tier").

Frozen copies of the defaults in segments/dimensions/*.py (a migration must not change
when the code does). Layer keys are stable: other code refers to them as
"<dimension>:<layer>", e.g. "rfm:important_value", "expiry:expiring_soon".
"""

from django.db import migrations

ORDERS = {"event": "order", "agg": "count", "op": "gte"}

BUILTIN = [
    (
        "rfm",
        "RFM value tiers",
        "rfm",
        {"window_days": 90, "event_type": "order", "scoring": {"r": "quintiles", "f": "quintiles", "m": "quintiles"}},
        [
            ("important_value", "Important value"),
            ("important_development", "Important development"),
            ("important_retention", "Important retention"),
            ("important_win_back", "Important win-back"),
            ("general_value", "General value"),
            ("general_development", "General development"),
            ("general_retention", "General retention"),
            ("general_win_back", "General win-back"),
            ("no_purchase", "No purchase in window"),
        ],
    ),
    (
        "lifecycle",
        "Lifecycle stages",
        "lifecycle",
        {
            "activity_event_types": ["login", "visit", "add_to_cart", "order"],
            "purchase_event_type": "order",
            "new_days": 30,
            "activity_window_days": 30,
            "core_min_events": 10,
            "core_min_purchases": 2,
            "churn_warning_days": 30,
            "churned_days": 90,
            "warning_below_events": None,
        },
        [
            ("visitor", "Visitor / potential"),
            ("new", "New"),
            ("active", "Active"),
            ("core", "Core"),
            ("churn_warning", "Churn warning"),
            ("churned", "Churned"),
        ],
    ),
    (
        "journey",
        "Purchase journey",
        "journey",
        {
            "milestones": [
                {"key": "new", "name": "New", "rule": None},
                {"key": "first_purchase", "name": "First purchase", "rule": {**ORDERS, "value": 1}},
                {"key": "repeat_buyer", "name": "Repeat buyer", "rule": {**ORDERS, "value": 2}},
                {
                    "key": "vip",
                    "name": "VIP",
                    "rule": {
                        "all": [
                            {**ORDERS, "value": 5},
                            {"event": "order", "agg": "sum", "window": {"last_days": 365}, "op": "gte", "value": 1000},
                        ]
                    },
                },
            ]
        },
        [("new", "New"), ("first_purchase", "First purchase"), ("repeat_buyer", "Repeat buyer"), ("vip", "VIP")],
    ),
    (
        "level",
        "Membership levels",
        "level",
        {
            "measure": {"event_type": "order", "agg": "sum", "window_days": 365},
            "levels": [
                {"key": "basic", "name": "Basic", "min": 0},
                {"key": "silver", "name": "Silver", "min": 200, "validity_days": 365},
                {"key": "gold", "name": "Gold", "min": 1000, "validity_days": 365},
                {"key": "platinum", "name": "Platinum", "min": 3000, "validity_days": 365},
                {"key": "diamond", "name": "Diamond", "min": 10000, "validity_days": 365},
            ],
        },
        [("basic", "Basic"), ("silver", "Silver"), ("gold", "Gold"), ("platinum", "Platinum"), ("diamond", "Diamond")],
    ),
    (
        "expiry",
        "Membership expiry windows",
        "expiry",
        {"plans": [], "expired_within_days": 90, "expiring_within_days": 90},
        [
            ("expired_recently", "Expired within the last 3 months"),
            ("expiring_soon", "Expiring within the next 3 months"),
            ("valid", "Valid for more than 3 months"),
            ("none", "No current membership"),
        ],
    ),
]


def create(apps, schema_editor):
    Dimension = apps.get_model("segments", "Dimension")
    Layer = apps.get_model("segments", "Layer")
    Tag = apps.get_model("segments", "Tag")
    for key, name, kind, config, layers in BUILTIN:
        dimension, created = Dimension.objects.get_or_create(
            key=key, defaults={"name": name, "kind": kind, "config": config}
        )
        if not created:
            continue
        for position, (layer_key, layer_name) in enumerate(layers):
            tag, _ = Tag.objects.get_or_create(
                code=f"{key}.{layer_key}"[:32],
                defaults={
                    "name": f"{name}: {layer_name}"[:100],
                    "family": "tier",
                    "source": "computed",
                    "description": f"Computed: the customer is in layer '{layer_key}' of dimension '{key}'.",
                },
            )
            Layer.objects.create(dimension=dimension, key=layer_key, name=layer_name, position=position, tag=tag)


def remove(apps, schema_editor):
    Dimension = apps.get_model("segments", "Dimension")
    Tag = apps.get_model("segments", "Tag")
    keys = [key for key, *_ in BUILTIN]
    Tag.objects.filter(layer__dimension__key__in=keys).delete()
    Dimension.objects.filter(key__in=keys).delete()


class Migration(migrations.Migration):
    dependencies = [("segments", "0003_engine_validity_and_runs")]
    operations = [migrations.RunPython(create, remove)]
