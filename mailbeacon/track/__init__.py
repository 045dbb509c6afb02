"""Tracking: the pixel, click and unsubscribe doors, bot verdicts, enrichment, and the
recorder that stores hits (group commit or journal)."""
