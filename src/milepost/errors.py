"""The one exception tree. Each error carries a stable code; the API maps classes to statuses in one place."""

from __future__ import annotations


class MilepostError(Exception):
    """Base of every error Milepost raises on purpose."""

    code = "ERROR"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidSetting(MilepostError):
    """A setting from the environment is malformed."""

    code = "INVALID_SETTING"


class InvalidRequest(MilepostError):
    """Input a user sent is malformed or breaks a rule; nothing was changed."""

    code = "BAD_REQUEST"


class InvalidBatch(InvalidRequest):
    """An Events API request holds a batch that cannot be accepted."""

    def __init__(self, message: str, errors: list[str] | None = None) -> None:
        super().__init__(message)
        self.errors = errors or [message]


class RequestTooLarge(InvalidRequest):
    code = "REQUEST_TOO_LARGE"


class InvalidCriteria(InvalidRequest):
    code = "INVALID_CRITERIA"


class UnknownReference(InvalidCriteria):
    """Criteria name an audience or calculated attribute that does not exist (any more)."""

    code = "UNKNOWN_REFERENCE"


class Unauthorized(MilepostError):
    """No credentials were given."""

    code = "UNAUTHORIZED"


class Forbidden(MilepostError):
    """Credentials were given but are wrong, revoked, or for a disabled input."""

    code = "FORBIDDEN"


class NotFound(MilepostError):
    code = "NOT_FOUND"


class Conflict(MilepostError):
    """The request clashes with the current state (a duplicate name, a rule that refuses it)."""

    code = "CONFLICT"


class JourneyRuleViolation(Conflict):
    code = "JOURNEY_RULE"


class CreditLimitReached(Conflict):
    code = "CREDIT_LIMIT"


class RateLimited(MilepostError):
    code = "RATE_LIMITED"

    def __init__(self, message: str, retry_after_s: int) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class Unavailable(MilepostError):
    """The store cannot accept data right now (disk full, shutting down)."""

    code = "UNAVAILABLE"

    def __init__(self, message: str, retry_after_s: int = 5) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class StoreLocked(MilepostError):
    """Another process holds the store open for writing."""

    code = "STORE_LOCKED"


class EngineError(MilepostError):
    code = "ENGINE_ERROR"


class DeliveryError(MilepostError):
    code = "DELIVERY_ERROR"
