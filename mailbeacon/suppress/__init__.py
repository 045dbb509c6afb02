"""Suppressions: the rules that block a send, and the lists as the API sees them."""
