"""Expiry of an X.509 certificate given in DER form."""

from __future__ import annotations

from datetime import UTC, datetime

from cryptography import x509

SECONDS_PER_DAY = 86_400.0


def not_after(der: bytes) -> datetime:
    """The moment a DER-encoded certificate expires (UTC, aware).

    Raises:
        ValueError: the bytes are not a certificate.
    """
    return x509.load_der_x509_certificate(der).not_valid_after_utc


def days_left(expiry: datetime, now: datetime) -> float:
    """Days (fractional, negative once expired) from `now` until `expiry`."""
    return (expiry - now).total_seconds() / SECONDS_PER_DAY


def describe(expiry: datetime, days: float) -> str:
    """A sentence with the expiry date and the days left."""
    when = expiry.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%SZ")
    if days < 0:
        return f"certificate expired on {when} ({-days:.1f} days ago)"
    return f"certificate expires on {when} ({days:.1f} days left)"
