"""mailbeacon: self-hosted email sending, tracking and delivery insight."""

__version__ = "0.1.0"
