from segments.api import customer_segments, ingestion

app_name = "segments"
urlpatterns = [*ingestion.urlpatterns, *customer_segments.urlpatterns]
