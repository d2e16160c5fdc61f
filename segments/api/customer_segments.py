"""Placeholder: routes are added with the views."""

urlpatterns: list = []
