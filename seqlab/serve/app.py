"""The HTTP face: OpenAI-compatible endpoints on FastAPI, decoding through the Batcher.

Endpoints: ``GET /`` (a page to try strategies, see ``page.html``), ``GET /health``,
``GET /v1/seqlab/strategies``, ``GET /v1/models``, ``GET /v1/models/{id}``,
``POST /v1/completions`` and ``POST /v1/chat/completions`` (both stream with
server-sent events when ``stream`` is true). Errors are OpenAI's error bodies,
``{"error": {"message", "type", "param", "code"}}``, with a 4xx status for a bad
request. Every request is checked in full (strategy, options, sampling, prompt
length) before it joins a batch, so one bad request never fails its companions.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from importlib import resources

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, StreamingResponse
from starlette.exceptions import HTTPException

from seqlab.config import ConfigError
from seqlab.decoding import STRATEGIES, PromptError, check_request
from seqlab.serve.batcher import Batcher, Done, End, Failed, Job, Text
from seqlab.serve.schema import ChatRequest, CompletionRequest
from seqlab.serve.sessions import Sessions


class APIError(Exception):
    """A request the server refuses, as OpenAI reports it."""

    def __init__(self, status: int, message: str, type_: str = "invalid_request_error",
                 param: str | None = None, code: str | None = None):
        super().__init__(message)
        self.status, self.message, self.type, self.param, self.code = status, message, type_, param, code

    def response(self) -> JSONResponse:
        return JSONResponse({"error": {"message": self.message, "type": self.type,
                                       "param": self.param, "code": self.code}},
                            status_code=self.status)


@dataclass
class ServerConfig:
    """What ``seqlab serve`` was started with.

    Attributes:
        name: the model id clients send as ``model``.
        strategy, options: the default strategy and its options (a request's ``seqlab``
            field overrides both).
        max_tokens: the budget of a chat request that gives none (also capped by the
            model's maximum length).
    """

    name: str
    strategy: str = "sample"
    options: dict = field(default_factory=dict)
    max_tokens: int = 512


class Server:
    """The model, its tokenizer, the batcher and the request logic behind the endpoints."""

    def __init__(self, model, tokenizer, cfg: ServerConfig, draft=None, max_rows: int = 32,
                 window_s: float = 0.005, sessions: int = 64):
        self.model, self.tokenizer, self.cfg, self.draft = model, tokenizer, cfg, draft
        self.sessions = Sessions(sessions)
        self.batcher = Batcher(model, tokenizer, draft, max_rows=max_rows, window_s=window_s,
                               sessions=self.sessions)
        self.created = int(time.time())

    # -- turning a request into a job ---------------------------------------------------
    def job(self, body, prompts: list[list[int]], budget: int | None) -> Job:
        """A validated Job for ``prompts`` (each repeated ``body.n`` times), or APIError."""
        if body.model != self.cfg.name:
            raise APIError(404, f"the model {body.model!r} does not exist; this server serves "
                                f"{self.cfg.name!r} (GET /v1/models lists it)", param="model",
                           code="model_not_found")
        problem = body.unsupported()
        if problem:
            raise APIError(400, problem)
        ext = body.seqlab
        strategy = ext.strategy or self.cfg.strategy
        if strategy not in STRATEGIES:
            raise APIError(400, f"unknown strategy {strategy!r}; known strategies: "
                                f"{', '.join(sorted(STRATEGIES))}", param="seqlab.strategy")
        options = dict(self.cfg.options) if ext.strategy in (None, self.cfg.strategy) else {}
        options.update(ext.options)
        spec = STRATEGIES[strategy]
        sampling = {"temperature": body.temperature, "top_p": body.top_p, "top_k": ext.top_k,
                    "min_p": ext.min_p, "seed": body.seed}
        if spec.samples == "always" and body.temperature is None:
            sampling["temperature"] = 1.0        # OpenAI's default
        if spec.samples == "never" or not sampling["temperature"]:
            # greedy: OpenAI clients often send a seed or top_p=1 with temperature 0
            sampling["seed"] = None
            if sampling["top_p"] == 1.0:
                sampling["top_p"] = None
        sampling = {k: v for k, v in sampling.items() if v is not None}
        if budget is None:
            budget = self.cfg.max_tokens
            limit = self.model.max_length
            if limit is not None:
                budget = max(0, min(budget, limit - max(len(p) for p in prompts)))
        rows = [p for p in prompts for _ in range(body.n)]
        try:
            check_request(self.model, rows, strategy, budget,
                          draft=self.draft if spec.needs_draft else None,
                          **sampling, **options)
        except PromptError as e:
            raise APIError(400, str(e), param="prompt", code="context_length_exceeded"
                           if "maximum length" in str(e) else None) from None
        except ConfigError as e:
            if spec.needs_draft and self.draft is None:
                raise APIError(400, f"strategy {strategy!r} needs a draft model and this server "
                                    "was started without one (seqlab serve MODEL --draft DRAFT)",
                               param="seqlab.strategy") from None
            raise APIError(400, str(e), param="seqlab") from None
        cached = None
        if ext.session is not None:
            if self.model.capabilities.source:
                raise APIError(400, "this model reads each prompt as a new source (an encoder-"
                                    "decoder), so there is no conversation to continue: drop "
                                    "seqlab.session", param="seqlab.session")
            if len(rows) != 1:
                raise APIError(400, "a session holds one conversation: send one prompt with n = 1",
                               param="seqlab.session")
            cached = self.sessions.cached(ext.session, rows[0])
        return Job(rows, budget, strategy, options, sampling, body.stops,
                   asyncio.get_running_loop(), session=ext.session, cached=cached)

    def completion_prompts(self, body: CompletionRequest) -> tuple[list[list[int]], list[str] | None]:
        """Token ids of each prompt of a completion request, and their text (None when the
        prompts are ids)."""
        p = body.prompt
        if isinstance(p, str):
            texts = [p]
        elif p and all(isinstance(x, str) for x in p):
            texts = list(p)
        else:
            rows = [p] if p and isinstance(p[0], int) else list(p)
            if not rows or not all(rows):
                raise APIError(400, "prompt is empty; give text or at least one token id",
                               param="prompt")
            return rows, None
        ids = [self.tokenizer.encode(t) for t in texts]
        if not all(ids):
            raise APIError(400, "prompt is empty; give at least one character", param="prompt")
        return ids, texts

    def chat_prompt(self, body: ChatRequest) -> list[int]:
        template = getattr(self.tokenizer, "apply_chat_template", None)
        if template is None or not getattr(self.tokenizer, "chat_template", None):
            raise APIError(400, f"the model {self.cfg.name!r} has no chat template; use "
                                "/v1/completions with a prompt of your own")
        messages = [{**m.model_dump(exclude_none=True), "content": m.text()}
                    for m in body.messages]
        return self.tokenizer.encode(template(messages, add_generation_prompt=True))

    def model_card(self) -> dict:
        return {"id": self.cfg.name, "object": "model", "created": self.created,
                "owned_by": "seqlab"}


async def _events(job: Job, request: Request) -> AsyncIterator:
    """The job's events until Done or Failed (None if the client went away first)."""
    while True:
        try:
            event = await asyncio.wait_for(job.events.get(), timeout=0.25)
        except asyncio.TimeoutError:
            if await request.is_disconnected():
                return
            continue
        yield event
        if isinstance(event, (Done, Failed)):
            return


def _sse(obj) -> str:
    return f"data: {json.dumps(obj, ensure_ascii=False)}\n\n"


def create_app(server: Server) -> FastAPI:
    """The FastAPI application of ``server`` (its batcher starts and stops with the app)."""
    from contextlib import asynccontextmanager

    @asynccontextmanager
    async def lifespan(app):
        server.batcher.start()
        yield
        server.batcher.close()

    app = FastAPI(title="seqlab", lifespan=lifespan)

    @app.exception_handler(APIError)
    async def _api_error(request, exc: APIError):
        return exc.response()

    @app.exception_handler(RequestValidationError)
    async def _invalid(request, exc: RequestValidationError):
        first = exc.errors()[0]
        where = ".".join(str(x) for x in first.get("loc", ()) if x != "body")
        msg = first.get("msg", "invalid value")
        if first.get("type") == "extra_forbidden":
            msg = "unknown field; see the OpenAI API reference, or put seqlab options in 'seqlab'"
        return APIError(400, f"{where}: {msg}" if where else msg, param=where or None).response()

    @app.exception_handler(HTTPException)
    async def _http(request, exc: HTTPException):
        kind = "not_found_error" if exc.status_code == 404 else "invalid_request_error"
        message = f"{request.method} {request.url.path}: {exc.detail}"
        return APIError(exc.status_code, message, kind).response()

    @app.get("/", response_class=HTMLResponse)
    async def page():
        return (resources.files("seqlab.serve") / "page.html").read_text(encoding="utf-8")

    @app.get("/v1/seqlab/strategies")
    async def strategies():
        """The strategies, their options with defaults, and what this server defaults to."""
        return {"model": server.cfg.name, "default": server.cfg.strategy,
                "draft": server.draft is not None,
                "strategies": {name: {"samples": spec.samples, "needs_draft": spec.needs_draft,
                                      "options": spec.Config().to_dict()}
                               for name, spec in sorted(STRATEGIES.items())}}

    @app.get("/health")
    async def health():
        return {"status": "ok", "model": server.cfg.name, "waiting_rows": server.batcher.waiting_rows,
                "batches": server.batcher.batches, "sessions": len(server.sessions),
                "sessions_evicted": server.sessions.evicted,
                "session_bytes": server.sessions.nbytes()}

    @app.get("/v1/models")
    async def models():
        return {"object": "list", "data": [server.model_card()]}

    @app.get("/v1/models/{model_id}")
    async def model(model_id: str):
        if model_id != server.cfg.name:
            raise APIError(404, f"the model {model_id!r} does not exist", param="model",
                           code="model_not_found")
        return server.model_card()

    @app.post("/v1/completions")
    async def completions(body: CompletionRequest, request: Request):
        ids, texts = server.completion_prompts(body)
        job = server.job(body, ids, body.max_tokens)   # checks the ids too
        if texts is None:
            texts = [server.tokenizer.decode_bytes(r).decode("utf-8", "replace") for r in ids]
        echo = [texts[i // body.n] if body.echo else "" for i in range(len(job.rows))]
        return await _respond(server, job, request, body, "cmpl", "text_completion", echo)

    @app.post("/v1/chat/completions")
    async def chat(body: ChatRequest, request: Request):
        job = server.job(body, [server.chat_prompt(body)], body.budget)
        return await _respond(server, job, request, body, "chatcmpl", "chat.completion", None)

    return app


async def _respond(server: Server, job: Job, request: Request, body, prefix: str, kind: str,
                   echo: list[str] | None):
    """Run ``job``; a JSON response, or a server-sent event stream when ``body.stream``."""
    chat = echo is None
    rid, created, name = f"{prefix}-{uuid.uuid4().hex[:24]}", int(time.time()), server.cfg.name
    prompt_tokens = sum(len(r) for r in job.rows[::body.n])
    server.batcher.submit(job)

    def usage(tokens: int) -> dict:
        return {"prompt_tokens": prompt_tokens, "completion_tokens": tokens,
                "total_tokens": prompt_tokens + tokens}

    if body.stream:
        include_usage = bool(body.stream_options and body.stream_options.include_usage)

        def chunk(choices, **extra):
            return _sse({"id": rid, "object": kind + (".chunk" if chat else ""),
                         "created": created, "model": name, "choices": choices, **extra})

        def piece(i, text, finish=None):
            if chat:
                return {"index": i, "delta": {"content": text} if text else {},
                        "logprobs": None, "finish_reason": finish}
            return {"index": i, "text": text, "logprobs": None, "finish_reason": finish}

        async def stream():
            try:
                async for text in _stream():
                    yield text
            finally:   # the client left (or all is sent): its rows end at their next token
                job.cancelled = True

        async def _stream():
            tokens = 0
            if chat:
                yield chunk([{"index": i, "delta": {"role": "assistant", "content": ""},
                              "logprobs": None, "finish_reason": None}
                             for i in range(len(job.rows))])
            else:
                for i, e in enumerate(echo):
                    if e:
                        yield chunk([piece(i, e)])
            async for event in _events(job, request):
                if isinstance(event, Text):
                    yield chunk([piece(event.row, event.text)])
                elif isinstance(event, End):
                    tokens += event.tokens
                    yield chunk([piece(event.row, "", event.finish_reason)])
                elif isinstance(event, Failed):
                    yield _sse({"error": {"message": event.message, "type": "server_error",
                                          "param": None, "code": None}})
                    return
                elif isinstance(event, Done):
                    if include_usage:
                        yield chunk([], usage=usage(tokens), seqlab=event.stats)
            yield "data: [DONE]\n\n"

        return StreamingResponse(stream(), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache"})

    texts = [""] * len(job.rows)
    finish = ["stop"] * len(job.rows)
    tokens, stats = 0, {}
    try:
        async for event in _events(job, request):
            if isinstance(event, Text):
                texts[event.row] += event.text
            elif isinstance(event, End):
                finish[event.row] = event.finish_reason
                tokens += event.tokens
            elif isinstance(event, Failed):
                raise APIError(500, event.message, "server_error")
            elif isinstance(event, Done):
                stats = event.stats
    finally:
        job.cancelled = True
    if chat:
        choices = [{"index": i, "message": {"role": "assistant", "content": t},
                    "logprobs": None, "finish_reason": f}
                   for i, (t, f) in enumerate(zip(texts, finish))]
    else:
        choices = [{"index": i, "text": e + t, "logprobs": None, "finish_reason": f}
                   for i, (e, t, f) in enumerate(zip(echo, texts, finish))]
    return {"id": rid, "object": kind, "created": created, "model": name, "choices": choices,
            "usage": usage(tokens), "seqlab": stats}


__all__ = ["APIError", "Server", "ServerConfig", "create_app"]
