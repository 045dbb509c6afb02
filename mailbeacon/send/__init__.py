"""Sending: intake of the API and SMTP submissions, per-recipient composition (tracking,
DKIM), the delivery worker and the relay."""
