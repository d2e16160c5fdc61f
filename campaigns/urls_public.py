"""Public, unauthenticated routes (mounted at the site root): the unsubscribe link and
preference page, and the providers' webhooks. See ``campaigns.views_optout``."""

from django.urls import path

from campaigns import views_optout

app_name = "optout"
urlpatterns = [
    path("u/<str:token>", views_optout.unsubscribe, name="unsubscribe"),
    path("u/<str:token>/preferences", views_optout.preferences, name="preferences"),
    path("anymail/mailgun/tracking/", views_optout.MailgunTrackingWebhook.as_view(), name="mailgun-tracking"),
    path("webhooks/sms/inbound", views_optout.sms_inbound, name="sms-inbound"),
]
