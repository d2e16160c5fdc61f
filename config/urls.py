from django.contrib import admin
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from config.health import healthz, readyz

# The admin is the product's console: name it, and drop "View site" (there is no public site:
# the link led to a 404).
admin.site.site_header = "Growth experimentation platform"
admin.site.site_title = "Growth platform"
admin.site.index_title = "Segments, experiments and campaigns"
admin.site.site_url = None

api_v1 = [
    path("", include("segments.urls")),
    path("", include("experiments.urls")),
    path("", include("campaigns.urls")),
    path("", include(("experiments.reports.api", "reports"))),
]

urlpatterns = [
    path("healthz", healthz, name="healthz"),
    path("readyz", readyz, name="readyz"),
    path("api/v1/", include((api_v1, "api"), namespace="v1")),
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="schema"), name="swagger-ui"),
    # Lift report pages, admin-styled; before the admin's catch-all.
    path("admin/reports/", include("experiments.reports.urls", namespace="reports")),
    # The tier playbook (campaigns x layers, from the lift reports); admin-styled, likewise.
    path("admin/playbook/", include("campaigns.urls_admin", namespace="playbook")),
    # Growth analytics (retention cohorts, step funnels); admin-styled, likewise.
    # Campaign monitoring and customer timelines; admin-styled, likewise.
    path("admin/monitor/", include("campaigns.urls_monitor", namespace="monitor")),
    path("admin/analytics/", include("segments.analytics.views", namespace="analytics")),
    path("admin/", admin.site.urls),
    # Unsubscribe links, the preference page and provider webhooks (no session, no login).
    path("", include("campaigns.urls_public", namespace="optout")),
]

# Under /api/ these answer in the API's JSON error shape; elsewhere Django's own pages.
handler400 = "access.exceptions.handler400"
handler403 = "access.exceptions.handler403"
handler404 = "access.exceptions.handler404"
handler500 = "access.exceptions.handler500"
