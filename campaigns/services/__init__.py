"""Writes of the campaigns app, one module per area:

- ``lifecycle``: validate, schedule, launch, pause, resume, finish; audience resolution.
- ``decide``: a batch's decisions (assignment, treatment, channels, send policy, outbox rows).
- ``policy``: the send policy (consent, quiet hours, frequency caps, rate limits).
- ``outbox``: publishing delivery ids; the sweeper.
- ``delivery``: claiming and sending deliveries through channel backends.
- ``offers``: coupon pools and redemption; a customer's offers.
- ``referrals``: referral codes, attribution and rewards.
- ``triggers``: event and layer-entry triggers.
- ``render``: message context and previews.
- ``assignments`` / ``events``: the experiments engine and the event stream, as campaigns use them.
"""
