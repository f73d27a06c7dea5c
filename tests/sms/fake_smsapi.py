"""A stateful fake of SMSAPI's REST API (POST /sms.do, GET /profile) on a FakeServer.

Like SMSAPI it refuses a request without the account's `Authorization: Bearer` token (error 101), answers in JSON
for format=json, and with check_idx=1 refuses an idx it accepted within the last 24 hours with error 53 ("Not unique
idx parameter, message with the same idx has been already sent and &check_idx=1."). It remembers every SMS it
accepted, so a test counts deliveries per idx and per number instead of trusting the client's own records.

Numbers can be marked invalid (error 13 with `invalid_numbers`), blacklisted (57) or opted out (59); `fail_next`
queues scripted answers (429, 5xx) for the next requests, which deliver nothing; `accept_delay` makes SMSAPI accept an
SMS at once but answer that late, as when the answer is lost on the way back (the client may be gone by then).
"""

from __future__ import annotations

import asyncio
import itertools
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from aiohttp import web

from tests.providers.fakes import FakeServer, Recorded, Responder

# SMSAPI: check_idx=1 "prevents from sending more than one message with the same idx in last 24h".
IDX_WINDOW = 24 * 3600.0
NOT_UNIQUE_IDX = "Not unique idx parameter, message with the same idx has been already sent and &check_idx=1."


@dataclass(frozen=True)
class Delivery:
    """One SMS the fake accepted."""

    id: str
    idx: str | None
    to: str
    message: str
    sender: str | None
    at: float


@dataclass
class FakeSmsapi:
    """SMSAPI's sms.do and profile, with the state a real account keeps."""

    server: FakeServer
    token: str
    accept_delay: float = 0.0
    idx_window: float = IDX_WINDOW
    clock: Callable[[], float] = time.monotonic
    invalid: set[str] = field(default_factory=set)  # numbers as SMSAPI writes them: digits, no "+"
    blacklisted: set[str] = field(default_factory=set)
    opted_out: set[str] = field(default_factory=set)
    deliveries: list[Delivery] = field(default_factory=list)
    refused_duplicates: list[str] = field(default_factory=list)  # idx values answered with error 53
    _scripted: list[Responder] = field(default_factory=list)
    _accepted_idx: dict[str, float] = field(default_factory=dict)
    _ids: itertools.count = field(default_factory=lambda: itertools.count(1))
    _lock: threading.Lock = field(default_factory=threading.Lock)  # the test thread reads what the loop writes

    def __post_init__(self) -> None:
        self.server.route("POST", "/sms.do", self.sms_do)
        self.server.route("GET", "/profile", self.profile)

    def fail_next(self, *responders: Responder) -> None:
        """Answer the next requests with these (in order) before behaving normally again; they deliver nothing."""
        with self._lock:
            self._scripted.extend(responders)

    def _next_scripted(self) -> Responder | None:
        with self._lock:
            return self._scripted.pop(0) if self._scripted else None

    def per_idx(self) -> Counter[str | None]:
        """Deliveries per idx."""
        with self._lock:
            return Counter(d.idx for d in self.deliveries)

    def per_number(self) -> Counter[str]:
        """Deliveries per number."""
        with self._lock:
            return Counter(d.to for d in self.deliveries)

    def _authorized(self, rec: Recorded) -> bool:
        return rec.headers.get("Authorization") == f"Bearer {self.token}"

    async def sms_do(self, rec: Recorded) -> web.StreamResponse:
        """POST /sms.do: one SMS (this project sends one `to` per request)."""
        scripted = self._next_scripted()
        if scripted is not None:
            return await _answer(scripted, rec)
        if not self._authorized(rec):
            return web.json_response({"error": 101, "message": "Invalid authorization info"}, status=401)
        form = rec.form
        if form.get("format") != "json":
            return web.Response(text="ERROR:8", content_type="text/plain")  # the old plain-text format
        if not form.get("to") or not form.get("message"):
            return web.json_response({"error": 8, "message": "Error in request (Please report)"})
        refusal = self._refusal(form["to"])
        if refusal is not None:
            return web.json_response(refusal)
        delivery = self._accept(form)
        if delivery is None:
            return web.json_response({"error": 53, "message": NOT_UNIQUE_IDX})
        if self.accept_delay:
            await asyncio.sleep(self.accept_delay)  # accepted already: a client gone by now never hears of it
        return web.json_response({"count": 1, "list": [{
            "id": delivery.id, "points": 0.16, "number": delivery.to, "date_sent": int(time.time()),
            "submitted_number": delivery.to, "status": "QUEUE", "error": None, "idx": delivery.idx}]})

    def _refusal(self, to: str) -> dict[str, object] | None:
        """SMSAPI's error for a number it will not text, if any."""
        if not to.isdigit() or to in self.invalid:
            return {"error": 13, "message": "No correct phone numbers",
                    "invalid_numbers": [{"number": to, "submitted_number": to, "message": "Invalid phone number"}]}
        if to in self.blacklisted:
            return {"error": 57, "message": "The number is blacklisted for this user."}
        if to in self.opted_out:
            return {"error": 59, "message": "Number is added to OptOut list"}
        return None

    def _accept(self, form: dict[str, str]) -> Delivery | None:
        """Record the SMS, or None when check_idx=1 finds its idx accepted within the window."""
        idx, now = form.get("idx"), self.clock()
        with self._lock:
            if idx and form.get("check_idx") == "1":
                first = self._accepted_idx.get(idx)
                if first is not None and now - first < self.idx_window:
                    self.refused_duplicates.append(idx)
                    return None
            if idx:
                self._accepted_idx.setdefault(idx, now)
            delivery = Delivery(f"fake-{next(self._ids)}", idx, form["to"], form["message"], form.get("from"), now)
            self.deliveries.append(delivery)
            return delivery

    async def profile(self, rec: Recorded) -> web.StreamResponse:
        """GET /profile: the account, if the token is right."""
        if not self._authorized(rec):
            return web.json_response({"error": 101, "message": "Invalid authorization info"}, status=401)
        return web.json_response({"name": "Nibs", "email": "ops@nibs.example", "points": 100.0,
                                  "payment_type": "prepaid"})


async def _answer(responder: Responder, rec: Recorded) -> web.StreamResponse:
    """A responder's answer, awaited if it is a coroutine."""
    answer = responder(rec)
    return await answer if asyncio.iscoroutine(answer) else answer
