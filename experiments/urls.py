from experiments import api

app_name = "experiments"
urlpatterns = [*api.urlpatterns]
