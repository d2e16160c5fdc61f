from campaigns.models.campaigns import Campaign, CampaignQuerySet, CampaignVersion, Content, Treatment
from campaigns.models.consent import Suppression, Topic, TopicOptOut
from campaigns.models.delivery import AudienceBatch, CapSlot, ChannelPolicy, Delivery, Recipient
from campaigns.models.mailbox import MailboxMessage
from campaigns.models.offers import Coupon, Offer
from campaigns.models.referrals import Referral, ReferralAudit, ReferralCode

__all__ = [
    "AudienceBatch",
    "Campaign",
    "CampaignQuerySet",
    "CampaignVersion",
    "CapSlot",
    "ChannelPolicy",
    "Content",
    "Coupon",
    "Delivery",
    "MailboxMessage",
    "Offer",
    "Recipient",
    "Referral",
    "ReferralAudit",
    "ReferralCode",
    "Suppression",
    "Topic",
    "TopicOptOut",
    "Treatment",
]
