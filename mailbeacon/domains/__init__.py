"""Sending domains with all their settings, and the API keys that act on them."""
