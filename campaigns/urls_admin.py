"""Admin pages of the campaigns app outside the model admin, mounted at ``/admin/playbook/``
(namespace ``playbook``) before the admin site's catch-all."""

from django.urls import path

from campaigns import views_playbook

app_name = "playbook"

urlpatterns = [
    path("", views_playbook.index, name="index"),
    path("playbook.csv", views_playbook.export_csv, name="csv"),
]
