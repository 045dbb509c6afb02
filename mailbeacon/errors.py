"""The one exception tree of mailbeacon.

MailbeaconError
 ├── ConfigError(ValueError)          a setting has a value we cannot use
 ├── TokenError(ValueError)           a tracking token is malformed, forged or altered
 ├── MailboxError(OSError)            a bounce mailbox cannot be reached or read
 │                                    (defined in mailbeacon.inbound.mailbox)
 └── ApiError                         carries an HTTP status; rendered as {"message": ...}
      ├── BadRequest(ValueError)      400: the request is malformed
      ├── Unauthorized                401: missing or wrong API key
      ├── Forbidden                   403: the key may not do this (its domain or role)
      ├── NotFound(LookupError)       404: no such domain, event page, ...
      └── PayloadTooLarge             413: request body over the configured limit
"""

from __future__ import annotations


class MailbeaconError(Exception):
    """Root of every error mailbeacon raises on purpose."""


class ConfigError(MailbeaconError, ValueError):
    """A setting is missing or has a value mailbeacon cannot use."""


class TokenError(MailbeaconError, ValueError):
    """A tracking token did not decode or its signature did not verify."""


class ApiError(MailbeaconError):
    """An error answered to an API client with an HTTP status and a message."""

    status = 500

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class BadRequest(ApiError, ValueError):
    status = 400


class Unauthorized(ApiError):
    status = 401


class Forbidden(ApiError):
    status = 403


class NotFound(ApiError, LookupError):
    status = 404


class PayloadTooLarge(ApiError):
    status = 413
