"""Errors of the embedded ClickHouse server, carrying ClickHouse's own codes."""

from __future__ import annotations

import re

from deploy.errors import StackError
from schemas.errors import FlywheelError

# ClickHouse error codes the server raises itself (src/Common/ErrorCodes.cpp).
NOT_IMPLEMENTED = 48
UNKNOWN_SETTING = 115
READONLY = 164
UNKNOWN_USER = 192
TOO_MANY_SIMULTANEOUS_QUERIES = 202
QUERY_IS_TOO_LARGE = 229
CANNOT_DECOMPRESS = 271
SESSION_NOT_FOUND = 372
SESSION_IS_LOCKED = 373
INVALID_SESSION_TIMEOUT = 374
AUTHENTICATION_FAILED = 516
ACCESS_DENIED = 497
REQUIRED_PASSWORD = 194
SYNTAX_ERROR = 62
BAD_ARGUMENTS = 36
TIMEOUT_EXCEEDED = 159
UNKNOWN_EXCEPTION = 1002

_NAMES = {
    NOT_IMPLEMENTED: "NOT_IMPLEMENTED",
    UNKNOWN_SETTING: "UNKNOWN_SETTING",
    READONLY: "READONLY",
    UNKNOWN_USER: "UNKNOWN_USER",
    TOO_MANY_SIMULTANEOUS_QUERIES: "TOO_MANY_SIMULTANEOUS_QUERIES",
    QUERY_IS_TOO_LARGE: "QUERY_IS_TOO_LARGE",
    CANNOT_DECOMPRESS: "CANNOT_DECOMPRESS",
    SESSION_NOT_FOUND: "SESSION_NOT_FOUND",
    SESSION_IS_LOCKED: "SESSION_IS_LOCKED",
    INVALID_SESSION_TIMEOUT: "INVALID_SESSION_TIMEOUT",
    AUTHENTICATION_FAILED: "AUTHENTICATION_FAILED",
    ACCESS_DENIED: "ACCESS_DENIED",
    REQUIRED_PASSWORD: "REQUIRED_PASSWORD",
    SYNTAX_ERROR: "SYNTAX_ERROR",
    BAD_ARGUMENTS: "BAD_ARGUMENTS",
    TIMEOUT_EXCEEDED: "TIMEOUT_EXCEEDED",
    UNKNOWN_EXCEPTION: "UNKNOWN_EXCEPTION",
}

# The HTTP status ClickHouse answers for an exception code, as in its
# src/Server/HTTP/exceptionCodeToHTTPStatus.cpp; every other code is a 500.
_STATUS_BY_CODE: dict[int, int] = {
    194: 401,  # REQUIRED_PASSWORD
    # UNKNOWN_USER, WRONG_PASSWORD, AUTHENTICATION_FAILED, SET_NON_GRANTED_ROLE, ACCESS_DENIED
    **dict.fromkeys((192, 193, 516, 512, 497, 164), 403),  # and READONLY
    # BAD_ARGUMENTS, CANNOT_COMPILE_REGEXP, CANNOT_PARSE_{TEXT, ESCAPE_SEQUENCE, QUOTED_STRING,
    # DATE, DATETIME, NUMBER, DOMAIN_VALUE_FROM_STRING, IPV4, IPV6, INPUT_ASSERTION_FAILED, UUID},
    # DUPLICATE_COLUMN, ILLEGAL_COLUMN, UNKNOWN_ELEMENT_IN_AST, UNKNOWN_TYPE_OF_AST_NODE,
    # THERE_IS_NO_COLUMN, TOO_DEEP_AST, TOO_BIG_AST, UNEXPECTED_AST_STRUCTURE, SYNTAX_ERROR,
    # INCORRECT_DATA, TYPE_MISMATCH, VALUE_IS_OUT_OF_RANGE_OF_DATA_TYPE
    **dict.fromkeys(
        (36, 427, 6, 25, 26, 38, 41, 72, 441, 676, 677, 27, 376, 15, 44, 37, 123, 8, 167, 168,
         223, 62, 117, 53, 321),
        400,
    ),
    # UNKNOWN_{TABLE, FUNCTION, IDENTIFIER, TYPE, STORAGE, DATABASE, SETTING,
    # DIRECTION_OF_SORTING, AGGREGATE_FUNCTION, FORMAT, DATABASE_ENGINE, TYPE_OF_QUERY, ROLE}
    **dict.fromkeys((60, 46, 47, 50, 56, 81, 115, 152, 63, 73, 336, 78, 511), 404),
    229: 413,  # QUERY_IS_TOO_LARGE
    # CANNOT_DECOMPRESS, CHECKSUM_DOESNT_MATCH: a bad body is the client's fault; ClickHouse
    # answers 500 for them, the front answers 400 (no 5xx for bad input).
    271: 400,
    40: 400,
    48: 501,  # NOT_IMPLEMENTED
    209: 503,  # SOCKET_TIMEOUT
    76: 503,  # CANNOT_OPEN_FILE
    381: 411,  # HTTP_LENGTH_REQUIRED
    159: 408,  # TIMEOUT_EXCEEDED
    439: 503,  # CANNOT_SCHEDULE_TASK
}

_CODE_RE = re.compile(r"Code: (\d+)\.")
_NAME_RE = re.compile(r"\(([A-Z][A-Z0-9_]+)\)")


# Codes that mean the server, not the request, failed: these stay 500s. ClickHouse
# answers 500 for every code it does not map; the front answers 400 for the rest,
# since they describe the query (a bad cast, a missing column, a type mismatch...),
# and no bad input may get a 5xx.
SERVER_FAULT_CODES = frozenset({
    24, 49, 74, 75, 173, 210, 236, 241, 243, 394, 425, 999, 1000, 1001, 1002,
})


def http_status_for(code: int) -> int:
    """The HTTP status for an exception code: ClickHouse's own where it maps the code,
    500 for a server fault, else 400."""
    if code in _STATUS_BY_CODE:
        return _STATUS_BY_CODE[code]
    return 500 if code in SERVER_FAULT_CODES else 400


class ClickHouseError(FlywheelError):
    """Base class of the embedded ClickHouse server's errors."""


class EngineStartError(ClickHouseError, StackError):
    """The chDB engine could not open its data folder."""


class ServerError(ClickHouseError):
    """A query failed; carries ClickHouse's exception code, name and HTTP status."""

    def __init__(self, code: int, message: str, *, name: str | None = None,
                 http_status: int | None = None) -> None:
        self.code = code
        self.name = name or _NAMES.get(code, "")
        self.http_status = http_status or http_status_for(code)
        self.message = message
        super().__init__(message)

    def body(self, *, version: str) -> str:
        """The response body ClickHouse sends: `Code: N. DB::Exception: ... (NAME) (version V)`."""
        if self.message.startswith("Code: "):
            text = self.message
        else:
            text = f"Code: {self.code}. DB::Exception: {self.message}"
            if self.name:
                text += f" ({self.name})"
        if "(version " not in text:
            text += f" (version {version})"
        return text.rstrip("\n") + "\n"

    @classmethod
    def from_engine(cls, error: BaseException) -> ServerError:
        """Wrap an exception raised by chDB, keeping its code and message."""
        text = str(error)
        start = text.find("Code: ")
        if start > 0:
            text = text[start:]
        match = _CODE_RE.match(text)
        if not match:
            return cls(UNKNOWN_EXCEPTION, f"Code: {UNKNOWN_EXCEPTION}. DB::Exception: {text}")
        names = _NAME_RE.findall(text)
        return cls(int(match.group(1)), text.strip(), name=names[-1] if names else None)
