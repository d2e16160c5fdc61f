from django.db import migrations

BUILTIN_EVENT_TYPES = [
    ("signup", "Signed up", False),
    ("login", "Logged in", False),
    ("visit", "Visited", False),
    ("add_to_cart", "Added to cart", False),
    ("order", "Ordered", True),
    ("refund", "Refunded", True),
    ("referral_signup", "Signed up through a referral", False),
    ("membership_renewed", "Renewed membership", True),
    ("coupon_redeemed", "Redeemed a coupon", False),
    ("unsubscribe", "Unsubscribed", False),
]


def create(apps, schema_editor):
    EventType = apps.get_model("segments", "EventType")
    for code, name, is_monetary in BUILTIN_EVENT_TYPES:
        EventType.objects.update_or_create(code=code, defaults={"name": name, "is_monetary": is_monetary, "is_builtin": True})


class Migration(migrations.Migration):
    dependencies = [("segments", "0001_initial")]
    operations = [migrations.RunPython(create, migrations.RunPython.noop)]
