"""Dictionary-encoded segment snapshots, sticky holdout members, conversions that carry
their assignment's phase/variant/snapshot, an ordered phase allocation, one open phase
per experiment.

Existing rows are carried over: each distinct ``Assignment.segment_snapshot`` JSON becomes
a ``SegmentSnapshot``; conversions copy their assignment's phase, variant and snapshot.
"""

import django.core.validators
import django.db.models.deletion
import django.utils.timezone
from decimal import Decimal
from django.db import migrations, models


def canonical_key(layers):
    return "|".join(f"{dimension}={layer}" for dimension, layer in sorted(layers.items()))


def snapshots_forward(apps, schema_editor):
    Assignment = apps.get_model("experiments", "Assignment")
    Conversion = apps.get_model("experiments", "Conversion")
    SegmentSnapshot = apps.get_model("experiments", "SegmentSnapshot")
    ids = {}
    for assignment in Assignment.objects.only("id", "segment_snapshot").iterator(chunk_size=2000):
        layers = {str(k): str(v) for k, v in (assignment.segment_snapshot or {}).items()}
        key = canonical_key(layers)
        if key not in ids:
            ids[key] = SegmentSnapshot.objects.get_or_create(key=key, defaults={"layers": layers})[0].pk
        Assignment.objects.filter(pk=assignment.pk).update(snapshot_id=ids[key])
    for conversion in Conversion.objects.select_related("assignment").iterator(chunk_size=2000):
        a = conversion.assignment
        Conversion.objects.filter(pk=conversion.pk).update(
            phase_id=a.phase_id, variant_id=a.variant_id, snapshot_id=a.snapshot_id
        )


def snapshots_backward(apps, schema_editor):
    Assignment = apps.get_model("experiments", "Assignment")
    for assignment in Assignment.objects.select_related("snapshot").iterator(chunk_size=2000):
        Assignment.objects.filter(pk=assignment.pk).update(segment_snapshot=assignment.snapshot.layers)


class Migration(migrations.Migration):

    dependencies = [
        ("experiments", "0001_initial"),
        ("segments", "0001_initial"),
    ]

    operations = [
        migrations.CreateModel(
            name="SegmentSnapshot",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                ("key", models.TextField(unique=True)),
                ("layers", models.JSONField(default=dict)),
                ("created_at", models.DateTimeField(default=django.utils.timezone.now, editable=False)),
            ],
        ),
        migrations.AlterModelOptions(name="holdout", options={"ordering": ["key"]}),
        migrations.AlterModelOptions(name="namespace", options={"ordering": ["key"]}),
        # Snapshot: nullable first, backfilled, then required; the JSON column goes.
        migrations.AddField(
            model_name="assignment",
            name="snapshot",
            field=models.ForeignKey(
                db_index=False,
                null=True,
                help_text="The customer's layers when assigned (pre-treatment).",
                on_delete=django.db.models.deletion.PROTECT,
                related_name="+",
                to="experiments.segmentsnapshot",
            ),
        ),
        migrations.AddField(
            model_name="conversion",
            name="phase",
            field=models.ForeignKey(
                db_index=False, null=True, on_delete=django.db.models.deletion.CASCADE, related_name="+", to="experiments.phase"
            ),
        ),
        migrations.AddField(
            model_name="conversion",
            name="variant",
            field=models.ForeignKey(
                db_index=False, null=True, on_delete=django.db.models.deletion.CASCADE, related_name="+", to="experiments.variant"
            ),
        ),
        migrations.AddField(
            model_name="conversion",
            name="snapshot",
            field=models.ForeignKey(
                db_index=False,
                null=True,
                on_delete=django.db.models.deletion.PROTECT,
                related_name="+",
                to="experiments.segmentsnapshot",
            ),
        ),
        migrations.RunPython(snapshots_forward, snapshots_backward),
        migrations.AlterField(
            model_name="assignment",
            name="snapshot",
            field=models.ForeignKey(
                db_index=False,
                help_text="The customer's layers when assigned (pre-treatment).",
                on_delete=django.db.models.deletion.PROTECT,
                related_name="+",
                to="experiments.segmentsnapshot",
            ),
        ),
        migrations.AlterField(
            model_name="conversion",
            name="phase",
            field=models.ForeignKey(
                db_index=False, on_delete=django.db.models.deletion.CASCADE, related_name="+", to="experiments.phase"
            ),
        ),
        migrations.AlterField(
            model_name="conversion",
            name="variant",
            field=models.ForeignKey(
                db_index=False, on_delete=django.db.models.deletion.CASCADE, related_name="+", to="experiments.variant"
            ),
        ),
        migrations.AlterField(
            model_name="conversion",
            name="snapshot",
            field=models.ForeignKey(
                db_index=False, on_delete=django.db.models.deletion.PROTECT, related_name="+", to="experiments.segmentsnapshot"
            ),
        ),
        migrations.RemoveField(model_name="assignment", name="segment_snapshot"),
        migrations.AddIndex(
            model_name="conversion",
            index=models.Index(fields=["phase", "metric"], name="conversion_phase_metric_idx"),
        ),
        migrations.AddField(
            model_name="metric",
            name="conversions_watermark",
            field=models.DateTimeField(
                blank=True,
                editable=False,
                help_text="Events received before this instant have been turned into conversions (incremental refresh).",
                null=True,
            ),
        ),
        migrations.AlterField(
            model_name="phase",
            name="weights",
            field=models.JSONField(
                help_text='Ordered allocation in force: [{"variant": key, "weight": "0.5"}, ...] (GrowthBook variation order).'
            ),
        ),
        migrations.AlterField(
            model_name="variant",
            name="payload",
            field=models.JSONField(blank=True, default=dict, help_text="Returned to API clients with the variant key."),
        ),
        migrations.AlterField(
            model_name="variant",
            name="weight",
            field=models.DecimalField(
                decimal_places=4,
                help_text="Share of traffic: 0.5 = 50%.",
                max_digits=5,
                validators=[
                    django.core.validators.MinValueValidator(Decimal("0")),
                    django.core.validators.MaxValueValidator(Decimal("1")),
                ],
            ),
        ),
        migrations.AddField(
            model_name="variant",
            name="is_active",
            field=models.BooleanField(
                default=True,
                editable=False,
                help_text="False once removed by a new phase; kept for the earlier phases' assignments.",
            ),
        ),
        migrations.AddIndex(
            model_name="experiment",
            index=models.Index(fields=["status"], name="experiment_status_idx"),
        ),
        migrations.AddConstraint(
            model_name="phase",
            constraint=models.UniqueConstraint(
                condition=models.Q(("ended_at__isnull", True)), fields=("experiment",), name="phase_one_open_per_experiment"
            ),
        ),
        migrations.CreateModel(
            name="HoldoutMember",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                ("held_out_at", models.DateTimeField(default=django.utils.timezone.now)),
                (
                    "customer",
                    models.ForeignKey(on_delete=django.db.models.deletion.CASCADE, related_name="+", to="segments.customer"),
                ),
                (
                    "experiment",
                    models.ForeignKey(
                        db_index=False,
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="holdout_members",
                        to="experiments.experiment",
                    ),
                ),
                (
                    "holdout",
                    models.ForeignKey(
                        db_index=False,
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="members",
                        to="experiments.holdout",
                    ),
                ),
                (
                    "phase",
                    models.ForeignKey(
                        db_index=False,
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="holdout_members",
                        to="experiments.phase",
                    ),
                ),
                (
                    "snapshot",
                    models.ForeignKey(
                        db_index=False,
                        on_delete=django.db.models.deletion.PROTECT,
                        related_name="+",
                        to="experiments.segmentsnapshot",
                    ),
                ),
            ],
            options={
                "indexes": [models.Index(fields=["holdout", "experiment"], name="holdout_member_holdout_idx")],
                "constraints": [
                    models.UniqueConstraint(fields=("phase", "customer"), name="holdout_member_phase_customer_unique")
                ],
            },
        ),
    ]
