from __future__ import annotations

from typing import Any

from django.apps import AppConfig


class ExperimentsConfig(AppConfig):
    name = "experiments"
    verbose_name = "Experiments"

    def ready(self) -> None:
        # Cache invalidation, not domain logic: whatever writes an experiment's hash
        # inputs (services, admin, fixtures, the shell), every process re-reads them.
        from django.db.models.signals import m2m_changed, post_delete, post_save

        from experiments.models import Experiment, Holdout, Namespace, Phase, Variant
        from experiments.selectors import experiment_configs_invalidate

        def invalidate(**_: Any) -> None:
            experiment_configs_invalidate()

        for model in (Experiment, Variant, Phase, Namespace, Holdout):
            post_save.connect(invalidate, sender=model, dispatch_uid=f"experiments.config.save.{model.__name__}")
            post_delete.connect(invalidate, sender=model, dispatch_uid=f"experiments.config.delete.{model.__name__}")
        for name in ("include_segments", "exclude_segments", "include_layers", "exclude_layers"):
            m2m_changed.connect(
                invalidate, sender=getattr(Experiment, name).through, dispatch_uid=f"experiments.config.m2m.{name}"
            )
