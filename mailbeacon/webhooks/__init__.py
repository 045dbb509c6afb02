"""Webhooks: subscriptions, signing keys, and the sender that posts the outbox."""
