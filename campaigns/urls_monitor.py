"""Monitoring pages (``campaigns.views_monitor``), mounted at ``/admin/monitor/`` (namespace
``monitor``) before the admin site's catch-all."""

from django.urls import path

from campaigns import views_monitor

app_name = "monitor"

urlpatterns = [
    path("campaigns/<int:pk>/", views_monitor.campaign, name="campaign"),
    path("customers/<str:external_id>/", views_monitor.customer, name="customer"),
]
