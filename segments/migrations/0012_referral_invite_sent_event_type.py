"""A built-in event type for the inviter's side of a referral (docs/domain.md, "Referral").

``referral_signup`` is recorded on the *invited friend*; a growth team's AARRR Referral step
asks whether the *customer* brought someone, so the inviter's action needs its own type:
``referral_invite_sent``, recorded on the inviter when they send or share their personal
referral code (the AARRR preset's Referral step).
"""

from django.db import migrations

CODE = "referral_invite_sent"


def create(apps, schema_editor):
    EventType = apps.get_model("segments", "EventType")
    EventType.objects.update_or_create(
        code=CODE, defaults={"name": "Invited a friend (referral)", "is_monetary": False, "is_builtin": True}
    )


class Migration(migrations.Migration):
    dependencies = [("segments", "0011_bulk_rows_fewer_indexes")]
    operations = [migrations.RunPython(create, migrations.RunPython.noop)]
