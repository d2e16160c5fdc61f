"""Admin pages of the lift report, mounted at ``/admin/reports/`` (namespace ``reports``)
before the admin site's catch-all. The API route lives in ``experiments.reports.api``
(mounted under ``/api/v1/``, namespace ``v1:reports``)."""

from django.urls import path

from experiments.reports import views

app_name = "reports"

urlpatterns = [
    path("", views.index, name="index"),
    path("planner/", views.power_planner, name="planner"),
    path("experiments/<slug:key>/", views.experiment_report, name="experiment"),
    path("experiments/<slug:key>/report.csv", views.experiment_report_csv, name="experiment-csv"),
    path("experiments/<slug:key>/report.json", views.experiment_report_json, name="experiment-json"),
    path("experiments/<slug:key>/timeseries.json", views.experiment_timeseries, name="experiment-timeseries"),
]
