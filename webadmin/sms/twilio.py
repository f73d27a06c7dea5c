"""Twilio backend: POST {endpoint}/2010-04-01/Accounts/{sid}/Messages.json with basic auth, one request per SMS.

Twilio answers 201 with the Message resource ({"sid": "SM…", "status": "queued", …}) or an error
{"code": 21211, "message": …, "more_info": …, "status": 400}. Twilio has no idempotency key for creating messages,
so this backend has no `dedupe_window`: an SMS whose outcome is unknown (a timeout, a dropped connection, a 500 or a
gateway's 502/504 that may come after Twilio created the message) is not sent again.
"""

from __future__ import annotations

import re
from typing import Any, ClassVar

import aiohttp

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

DEFAULT_ENDPOINT = "https://api.twilio.com"
INVALID_NUMBER = frozenset({21211, 21214, 21217, 21401, 21614})  # not a valid / reachable mobile number
OPTED_OUT = frozenset({21610})  # the recipient replied STOP
AUTH = frozenset({20003, 20005})  # authentication failed, account not active
CHANNEL = frozenset({21212, 21603, 21606, 21659})  # the From number / sender is wrong for this account
RATE = frozenset({20429, 14107})  # too many requests, SMS rate limit exceeded
SERVICE_SID = re.compile(r"^MG[0-9a-fA-F]{32}$")


def _error_result(sms: OutgoingSms, status: int, data: dict[str, Any]) -> SmsResult:
    """The result of a Twilio error answer, by its `code`."""
    code = data.get("code")
    text = f"Twilio error {code}: {data.get('message') or 'no message'}"
    name = f"TWILIO_{code}"
    if code in INVALID_NUMBER:
        return SmsResult(sms.sms_id, ok=False, error_code=name, error=text, invalid_number=True)
    if code in OPTED_OUT:
        return SmsResult(sms.sms_id, ok=False, error_code=name, error=text, opted_out=True)
    if code in AUTH or status == 401:
        return SmsResult(sms.sms_id, ok=False, error_code=AUTH_REFUSED, error=text)
    if code in CHANNEL:
        return SmsResult(sms.sms_id, ok=False, error_code=name, error=text, channel_error=True)
    if code in RATE:
        return SmsResult(sms.sms_id, ok=False, error_code=name, error=text, retryable=True)
    return SmsResult(sms.sms_id, ok=False, error_code=name, error=text, payload_error=True)


def classify(sms: OutgoingSms, answer: _http.Answer) -> SmsResult:
    """One result from Twilio's answer to one Create Message request."""
    if answer.status == 429 or answer.status >= 500:
        return throttled_result(sms.sms_id, answer, f"HTTP_{answer.status}")
    data = answer.data if isinstance(answer.data, dict) else None
    if 200 <= answer.status < 300:
        if data is not None and data.get("sid"):
            return SmsResult(sms.sms_id, ok=True, provider_message_id=str(data["sid"]))
        return malformed_result(sms.sms_id, answer)
    if data is not None and "code" in data:
        return _error_result(sms, answer.status, data)
    if answer.status in (401, 403):
        return SmsResult(sms.sms_id, ok=False, error_code=AUTH_REFUSED, error=answer.describe())
    return malformed_result(sms.sms_id, answer)


class TwilioBackend(SmsBackend):
    """Twilio Programmable Messaging."""

    type_name: ClassVar[str] = "twilio"
    label: ClassVar[str] = "Twilio"
    sender_help: ClassVar[str] = "Your Twilio number in E.164 (+15005550006) or a Messaging Service SID (MG…)."
    credential_fields: ClassVar[tuple[CredentialField, ...]] = (
        CredentialField("account_sid", "Account SID", help="AC followed by 32 hex digits (Twilio Console)."),
        CredentialField("auth_token", "Auth token", kind="secret", secret=True),
    )

    def _account_url(self) -> str:
        base = (self.options.endpoint or DEFAULT_ENDPOINT).rstrip("/")
        return f"{base}/2010-04-01/Accounts/{self.credentials.get('account_sid', '')}"

    def _headers(self) -> dict[str, str]:
        """Basic auth (account SID : auth token) and JSON answers."""
        sid, token = str(self.credentials.get("account_sid", "")), str(self.credentials.get("auth_token", ""))
        return {"Authorization": aiohttp.encode_basic_auth(sid, token), "Accept": "application/json"}

    def form(self, sms: OutgoingSms) -> dict[str, str]:
        """The Create Message form fields for one SMS."""
        fields = {"To": sms.to, "Body": sms.text}
        sender = self.sender or ""
        fields["MessagingServiceSid" if SERVICE_SID.match(sender) else "From"] = sender
        return fields

    async def send_one(self, sms: OutgoingSms) -> SmsResult:
        """POST one Create Message request."""
        try:
            session = await self._http.get()
            answer = await _http.request(session, "POST", f"{self._account_url()}/Messages.json", self.options,
                                         data=self.form(sms), headers=self._headers())
        except _http.TRANSPORT_ERRORS as exc:
            return transport_result(sms.sms_id, exc)
        return classify(sms, answer)

    async def test_connection(self) -> ConnectionCheck:
        """Fetch the account resource (GET /2010-04-01/Accounts/{sid}.json): checks SID and token, sends nothing."""
        try:
            session = await self._http.get()
            answer = await _http.request(session, "GET", f"{self._account_url()}.json", self.options,
                                         headers=self._headers())
        except _http.TRANSPORT_ERRORS as exc:
            return ConnectionCheck(ok=False, message=f"Twilio unreachable: {type(exc).__name__}")
        data = answer.data if isinstance(answer.data, dict) else {}
        if answer.status == 200 and data.get("sid"):
            status = data.get("status", "unknown")
            ok = status == "active"
            message = f"Twilio accepted the credentials; the account is {status}."
            return ConnectionCheck(ok=ok, message=message, details={"status": 200})
        reason = f"error {data.get('code')}: {data.get('message')}" if "code" in data else answer.describe()
        return ConnectionCheck(ok=False, message=f"Twilio refused the check: {reason}",
                               details={"status": answer.status})
