"""The services publish tasks by name (no campaigns.services -> campaigns.tasks import)."""

from __future__ import annotations

from typing import Any

from celery import current_app

from campaigns.services import outbox


def test_task_publish__task_not_loaded_in_this_process__sent_by_name(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    sent: list[tuple[str, Any, Any]] = []
    monkeypatch.setattr(current_app, "send_task", lambda name, args, **options: sent.append((name, args, options)))
    outbox.task_publish("campaigns.not_loaded_here", args=(7,), priority=6)
    assert sent == [("campaigns.not_loaded_here", [7], {"priority": 6})]


def test_task_publish__registered_task__its_apply_async_used(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from campaigns.tasks import deliveries_send

    published: list[tuple[Any, Any]] = []
    monkeypatch.setattr(deliveries_send, "apply_async", lambda args, **options: published.append((args, options)))
    monkeypatch.setattr(current_app, "send_task", lambda *a, **k: published.append(("send_task", a)))
    outbox.task_publish(outbox.TASK_DELIVERIES_SEND, args=[[1, 2]], countdown=3)
    assert published == [([[1, 2]], {"countdown": 3})]
