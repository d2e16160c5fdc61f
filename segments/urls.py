from segments.api import analytics, customer_segments, ingestion

app_name = "segments"
urlpatterns = [*ingestion.urlpatterns, *customer_segments.urlpatterns, *analytics.urlpatterns]
