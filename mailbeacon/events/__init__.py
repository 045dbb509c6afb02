"""The event vocabulary (events, failure categories, bounce reasons) and the one funnel
that writes events with their stats and webhook fan-out; querying them."""
