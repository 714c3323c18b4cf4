"""The gateway's HTTP API: `POST /v1/telemetry` and `GET /v1/feed`, each with an enterprise's bearer token."""

from __future__ import annotations

import math
import time
import zlib

import httpx
import orjson
from fastapi import FastAPI, HTTPException, Request, Response
from fastapi.responses import HTMLResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from config.settings import Settings
from sensors.registry import Registry

from .feed import report
from .feed_store import FeedStore
from .forward import Forwarder
from .intake import split_body
from .limits import RateLimiter
from .page import feed_page
from .token_topic import TokenFollower

NDJSON_TYPES = ("application/x-ndjson", "application/ndjson", "application/jsonl")


def create_app(
    settings: Settings, registry: Registry, tokens: TokenFollower, forwarder: Forwarder, feeds: FeedStore
) -> FastAPI:
    """The FastAPI app; the caller owns the producer, the token table (kept current from Kafka) and the feed."""
    # An unknown token may be one issued a moment ago: wait for the follower's next rounds, once.
    fresh_s = 3 * settings.ingest_tokens_wait_ms / 1000
    app = FastAPI(title="safewatch ingest gateway", docs_url=None, redoc_url=None)
    limiter = RateLimiter(settings.ingest_rate_per_s, settings.ingest_burst_s)

    async def enterprise_of(request: Request) -> str:
        scheme, _, secret = request.headers.get("authorization", "").partition(" ")
        challenge = {"WWW-Authenticate": 'Bearer realm="safewatch"'}
        if scheme.lower() != "bearer" or not secret.strip():
            raise HTTPException(401, "an enterprise token is required: Authorization: Bearer <token>", challenge)
        token = tokens.table.verify(secret.strip())
        if token is None:
            await tokens.caught_up(fresh_s)
            token = tokens.table.verify(secret.strip())
        if token is None:
            raise HTTPException(401, "unknown or revoked token", challenge)
        if token.enterprise_id not in registry.enterprises:
            raise HTTPException(403, f"enterprise {token.enterprise_id} is not in the registry any more")
        return token.enterprise_id

    @app.post("/v1/telemetry", status_code=202)
    async def telemetry(request: Request) -> Response:
        """One frame or reading, a JSON array of them, or NDJSON; 202 with one result per item."""
        received = time.monotonic()
        enterprise_id = await enterprise_of(request)
        body = await _read_body(request, settings)
        ndjson = request.headers.get("content-type", "").split(";")[0].strip().lower() in NDJSON_TYPES
        items = split_body(body, ndjson)
        if len(items) > settings.ingest_max_items:
            raise HTTPException(413, f"{len(items)} items in one request; at most {settings.ingest_max_items}")
        wait = limiter.take(enterprise_id, len(items), time.monotonic())
        if wait > 0:
            raise HTTPException(
                429,
                f"enterprise {enterprise_id} is over {settings.ingest_rate_per_s:g} items/s; retry in {wait:.1f} s",
                {"Retry-After": str(math.ceil(wait))},
            )
        outcomes = forwarder.check_items(enterprise_id, items)
        await forwarder.forward([(enterprise_id, "http", outcomes)], [received])
        accepted = sum(o.status == "accepted" for o in outcomes)
        result = {
            "accepted": accepted,
            "refused": len(outcomes) - accepted,
            "results": [o.as_result() for o in outcomes],
        }
        return Response(_json(result), status_code=202, media_type="application/json")

    state = (
        "every gateway's counts as stored in InfluxDB (written every "
        f"{settings.feed_flush_s:g} s), plus what this gateway took in since its last write"
    )

    # async: the unflushed part is read on the event loop that writes it, never from a worker thread.
    async def feed_report(request: Request) -> dict:
        enterprise_id = await enterprise_of(request)
        now = int(time.time() * 1000)
        try:
            seen = await feeds.seen(enterprise_id, now)
        except (httpx.HTTPError, RuntimeError) as exc:
            raise HTTPException(503, f"the feed's store (InfluxDB) did not answer: {exc}") from None
        return report(enterprise_id, registry, seen, now, settings.feed_silent_periods, state)

    @app.get("/v1/feed")
    async def feed_json(request: Request) -> Response:
        """The feed health of the token's enterprise (never another's), the same from every gateway."""
        return Response(_json(await feed_report(request)), media_type="application/json")

    @app.get("/v1/feed.html", response_class=HTMLResponse)
    async def feed_html(request: Request) -> HTMLResponse:
        """The same as a page."""
        return HTMLResponse(feed_page(await feed_report(request)))

    @app.get("/metrics")
    def metrics() -> Response:
        """Prometheus: items per enterprise and result, accept → Kafka latency."""
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    @app.get("/healthz")
    def healthz() -> dict:
        return {"ok": True}

    return app


def _json(obj: dict) -> bytes:
    # A final newline, so `curl` output ends its line in a terminal and in a script.
    return orjson.dumps(obj, option=orjson.OPT_APPEND_NEWLINE)


async def _read_body(request: Request, settings: Settings) -> bytes:
    """The body, within the size limits (413), gunzipped if it says gzip (415 for other encodings)."""
    limit = settings.ingest_max_body_bytes
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise HTTPException(413, f"body of {int(declared):,} bytes; at most {limit:,}")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise HTTPException(413, f"body over {limit:,} bytes")
        chunks.append(chunk)
    body = b"".join(chunks)
    encoding = request.headers.get("content-encoding", "identity").strip().lower()
    if encoding in ("", "identity"):
        return body
    if encoding != "gzip":
        raise HTTPException(415, f"content-encoding {encoding!r} not supported; send gzip or none")
    inflated_limit = settings.ingest_max_inflated_bytes
    inflater = zlib.decompressobj(wbits=31)
    try:
        out = inflater.decompress(body, inflated_limit + 1)
    except zlib.error as exc:
        raise HTTPException(400, f"body is not valid gzip: {exc}") from None
    if len(out) > inflated_limit or inflater.unconsumed_tail:
        raise HTTPException(413, f"body inflates to over {inflated_limit:,} bytes")
    if not inflater.eof:
        raise HTTPException(400, "gzip body is cut short")
    return out
