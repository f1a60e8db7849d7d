"""Notifications: mails to key owners and admins, signed webhooks, from the audit log.

Producers only write audit rows (``keys.service.record_audit``); the worker here, on one
replica at a time, turns them (and keys nearing expiry) into outbox rows, one per recipient
and channel, and delivers those with retries. Nothing here runs on the verification path.
"""
