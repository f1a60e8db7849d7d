"""Leaked keys: reports from GitHub's secret scanning partner program or an organisation's
own scanners (``POST /v1/leaks``), and ``apikm keys scan`` over text.

Every reported apikm key is revoked with reason ``leaked`` and a ``leak_reported`` audit row
(details: url, source, reporter) is written for it, which the notifier turns into mail and
webhooks for the owner and admins.
"""
