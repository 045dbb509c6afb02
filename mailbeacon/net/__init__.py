"""What the network doors share: connection limits, body limits, forwarded client
addresses, throttles."""
