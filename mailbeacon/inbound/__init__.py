"""Returning mail: a pure parser of bounces, complaints and auto-replies (one module per
report format), and the receiver and mailbox poller that act on them."""
