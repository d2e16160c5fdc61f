from django.urls import path

from campaigns.api import CouponRedeemView, CustomerOffersView, ReferralCodeView

app_name = "campaigns"
urlpatterns = [
    path("customers/<str:external_id>/offers", CustomerOffersView.as_view(), name="customer-offers"),
    path("customers/<str:external_id>/referral-code", ReferralCodeView.as_view(), name="customer-referral-code"),
    path("coupons/<str:code>/redeem", CouponRedeemView.as_view(), name="coupon-redeem"),
]
