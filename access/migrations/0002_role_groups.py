"""Create the ``growth`` and ``marketer`` groups. Their permissions are synced after
every migrate by ``access.roles.sync_role_permissions`` (a model's permissions exist only
once its app has migrated, so a migration cannot assign them reliably)."""

from django.db import migrations


def create(apps, schema_editor):
    Group = apps.get_model("auth", "Group")
    for name in ("growth", "marketer"):
        Group.objects.get_or_create(name=name)


class Migration(migrations.Migration):
    dependencies = [("access", "0001_initial"), ("auth", "0012_alter_user_first_name_max_length")]
    operations = [migrations.RunPython(create, migrations.RunPython.noop)]
