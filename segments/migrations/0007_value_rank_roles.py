"""Value pyramid dimensions (kind ``value_rank``) and customer roles (buyer, seller, …) with
role-scoped dimensions. The two usual sides of a two-sided platform are created; growth
users can add more in the admin."""

import django.db.models.deletion
import django.utils.timezone
from django.db import migrations, models


ROLES = [("buyer", "Buyer"), ("seller", "Seller")]


def create_roles(apps, schema_editor):
    Role = apps.get_model("segments", "Role")
    for key, name in ROLES:
        Role.objects.get_or_create(key=key, defaults={"name": name})


def remove_roles(apps, schema_editor):
    apps.get_model("segments", "Role").objects.filter(key__in=[key for key, _ in ROLES]).delete()


class Migration(migrations.Migration):
    dependencies = [
        ("segments", "0005_recompute_schedule"),
    ]

    operations = [
        migrations.CreateModel(
            name="Role",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                ("key", models.SlugField(max_length=32, unique=True)),
                ("name", models.CharField(max_length=100)),
            ],
            options={
                "ordering": ["key"],
            },
        ),
        migrations.AlterField(
            model_name="dimension",
            name="kind",
            field=models.CharField(
                choices=[
                    ("rfm", "RFM value tiers"),
                    ("lifecycle", "Lifecycle stages"),
                    ("journey", "Key-path journey"),
                    ("level", "Membership levels"),
                    ("expiry", "Membership expiry windows"),
                    ("value_rank", "Value pyramid (rank by value)"),
                ],
                max_length=16,
            ),
        ),
        migrations.AddField(
            model_name="dimension",
            name="role",
            field=models.ForeignKey(
                blank=True,
                help_text="Only customers holding this role are layered (and ranked) by the dimension; empty: everyone.",
                null=True,
                on_delete=django.db.models.deletion.PROTECT,
                related_name="dimensions",
                to="segments.role",
            ),
        ),
        migrations.CreateModel(
            name="CustomerRole",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                ("since", models.DateTimeField(default=django.utils.timezone.now)),
                (
                    "customer",
                    models.ForeignKey(
                        db_index=False,
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="customer_roles",
                        to="segments.customer",
                    ),
                ),
                (
                    "role",
                    models.ForeignKey(
                        db_index=False,
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="customer_roles",
                        to="segments.role",
                    ),
                ),
            ],
            options={
                "indexes": [models.Index(fields=["role", "customer"], name="customer_role_role_idx")],
                "constraints": [models.UniqueConstraint(fields=("customer", "role"), name="customer_role_unique")],
            },
        ),
        migrations.RunPython(create_roles, remove_roles),
    ]
