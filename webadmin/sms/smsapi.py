"""SMSAPI backend (the seed's provider): POST {endpoint}/sms.do with a bearer token, one request per SMS.

The form fields are SMSAPI's: to, message, from, format=json, encoding, normalize, and idx + check_idx=1. The idx
is the SMS row's UUID, so a retry after an unknown outcome is refused by SMSAPI with error 53 instead of being sent
again: that answer means "already accepted" and is recorded as sent. SMSAPI documents the check as covering the last
24 hours, which is this backend's `dedupe_window`. One request per SMS (SMSAPI accepts a comma list in `to`, but then
an error such as 13 "no correct phone numbers" cannot be pinned on one number).

Answers: {"count": 1, "list": [{"id", "points", "number", "status", ...}]} or {"error": <code>, "message": …,
"invalid_numbers": [...]}; SMSAPI's error codes decide the class below.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any, ClassVar

from webadmin.providers import _http
from webadmin.sms.base import (
    AUTH_REFUSED,
    ConnectionCheck,
    CredentialField,
    OutgoingSms,
    SmsBackend,
    SmsResult,
    malformed_result,
    throttled_result,
    transport_result,
)

ENDPOINTS = {"smsapi.pl": "https://api.smsapi.pl", "smsapi.com": "https://api.smsapi.com"}
INVALID_NUMBER = frozenset({13})  # no correct phone numbers (invalid or blacklisted)
OPTED_OUT = frozenset({57, 59})  # the number is on the account's blacklist / the OptOut list
ALREADY_SENT = frozenset({53})  # idx not unique: an SMS with this idx was accepted before (check_idx=1)
AUTH = frozenset({101, 102, 105})  # bad or missing token, bad login, IP not allowed
CHANNEL = frozenset({14, 103, 110, 1000, 1001})  # bad sender name, no points, service not on the account
RETRY = frozenset({8, 52, 201, 202, 203, 999})  # request/system errors, too many requests or attempts


def _code(data: dict[str, Any]) -> int | None:
    """SMSAPI's error code as a number (it sends numbers, sometimes as strings)."""
    try:
        return int(data["error"])
    except (KeyError, TypeError, ValueError):
        return None


def _error_result(sms: OutgoingSms, data: dict[str, Any]) -> SmsResult:
    """The result of an {"error": code, "message": …} answer."""
    code = _code(data)
    text = f"SMSAPI error {data.get('error')}: {data.get('message') or 'no message'}"
    name = f"SMSAPI_{code if code is not None else 'ERROR'}"
    if code in ALREADY_SENT:
        return SmsResult(sms.sms_id, ok=True, error=f"{text} (accepted earlier with the same idx)")
    if code in OPTED_OUT:
        return SmsResult(sms.sms_id, ok=False, error_code=name, error=text, opted_out=True)
    if code in INVALID_NUMBER or data.get("invalid_numbers"):
        return SmsResult(sms.sms_id, ok=False, error_code=name, error=text, invalid_number=True)
    if code in AUTH:
        return SmsResult(sms.sms_id, ok=False, error_code=AUTH_REFUSED, error=text)
    if code in CHANNEL:
        return SmsResult(sms.sms_id, ok=False, error_code=name, error=text, channel_error=True)
    if code in RETRY:
        return SmsResult(sms.sms_id, ok=False, error_code=name, error=text, retryable=True)
    return SmsResult(sms.sms_id, ok=False, error_code=name, error=text, payload_error=True)


def classify(sms: OutgoingSms, answer: _http.Answer) -> SmsResult:
    """One result from SMSAPI's answer to one sms.do request."""
    if answer.status == 429 or answer.status >= 500:
        return throttled_result(sms.sms_id, answer, f"HTTP_{answer.status}")
    data = answer.data
    if isinstance(data, dict) and "error" in data:
        return _error_result(sms, data)
    if answer.status in (401, 403):
        return SmsResult(sms.sms_id, ok=False, error_code=AUTH_REFUSED, error=answer.describe())
    entries = data.get("list") if isinstance(data, dict) else None
    if 200 <= answer.status < 300 and isinstance(entries, list) and entries and isinstance(entries[0], dict):
        provider_id = entries[0].get("id")
        if provider_id:
            return SmsResult(sms.sms_id, ok=True, provider_message_id=str(provider_id))
    return malformed_result(sms.sms_id, answer)


class SmsapiBackend(SmsBackend):
    """SMSAPI REST (smsapi.pl or smsapi.com) with an OAuth bearer token."""

    type_name: ClassVar[str] = "smsapi"
    label: ClassVar[str] = "SMSAPI"
    dedupe_window: ClassVar[timedelta | None] = timedelta(hours=24)  # check_idx=1: "the same idx in last 24h"
    sender_help: ClassVar[str] = ("A sender name registered in your SMSAPI account (up to 11 letters and digits); "
                                  "blank uses the account's default.")
    credential_fields: ClassVar[tuple[CredentialField, ...]] = (
        CredentialField("token", "API token", kind="secret", secret=True,
                        help="An OAuth token from the SMSAPI customer panel (API tokens), allowed to send SMS."),
        CredentialField("account", "Account", kind="choice", choices=tuple(ENDPOINTS),
                        help="smsapi.pl for Polish accounts, smsapi.com for international ones."),
        CredentialField("normalize", "Replace national characters", kind="choice", choices=("no", "yes"),
                        required=False, help="“yes” sends ą as a, ł as l …: more text fits in one SMS."),
    )

    def _base(self) -> str:
        account = str(self.credentials.get("account") or "smsapi.pl")
        return (self.options.endpoint or ENDPOINTS.get(account, ENDPOINTS["smsapi.pl"])).rstrip("/")

    def _headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.credentials.get('token', '')}", "Accept": "application/json"}

    def form(self, sms: OutgoingSms) -> dict[str, str]:
        """The sms.do form fields for one SMS."""
        fields = {"to": sms.to.lstrip("+"), "message": sms.text, "format": "json", "encoding": "utf-8",
                  "idx": sms.uuid.replace("-", ""), "check_idx": "1"}
        if self.sender:
            fields["from"] = self.sender
        if self.credentials.get("normalize") == "yes":
            fields["normalize"] = "1"
        return fields

    async def send_one(self, sms: OutgoingSms) -> SmsResult:
        """POST one sms.do request."""
        try:
            session = await self._http.get()
            answer = await _http.request(session, "POST", f"{self._base()}/sms.do", self.options,
                                         data=self.form(sms), headers=self._headers())
        except _http.TRANSPORT_ERRORS as exc:
            return transport_result(sms.sms_id, exc)
        return classify(sms, answer)

    async def test_connection(self) -> ConnectionCheck:
        """Read the account profile (GET /profile): checks the token without sending anything."""
        try:
            session = await self._http.get()
            answer = await _http.request(session, "GET", f"{self._base()}/profile", self.options,
                                         headers=self._headers())
        except _http.TRANSPORT_ERRORS as exc:
            return ConnectionCheck(ok=False, message=f"SMSAPI unreachable: {type(exc).__name__}")
        data = answer.data if isinstance(answer.data, dict) else {}
        if answer.status == 200 and answer.json_ok and "error" not in data:
            points = data.get("points")
            extra = f" Points left: {points}." if points is not None else ""
            return ConnectionCheck(ok=True, message=f"SMSAPI accepted the token.{extra}", details={"status": 200})
        reason = f"error {data.get('error')}: {data.get('message')}" if "error" in data else answer.describe()
        return ConnectionCheck(ok=False, message=f"SMSAPI refused the check: {reason}",
                               details={"status": answer.status})
