from django.apps import AppConfig


class CampaignsConfig(AppConfig):
    name = "campaigns"
    verbose_name = "Campaigns"

    def ready(self) -> None:
        # Provider webhooks (django-anymail's views check the signature and normalize the
        # event): bounces and complaints suppress the address.
        from anymail.signals import tracking

        from campaigns.services.suppression import on_tracking

        tracking.connect(on_tracking, dispatch_uid="campaigns.suppression.on_tracking")
