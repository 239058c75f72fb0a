"""The request bodies the server accepts: OpenAI's fields plus a ``seqlab`` extension.

Validated by pydantic; a field the server does not know is refused (as OpenAI's API
does), so a misspelt option never passes silently. Fields OpenAI defines that seqlab
does not implement (logprobs, penalties, tools) are refused with a message that says so.

The ``seqlab`` object chooses the decoding strategy and its options per request; an
OpenAI client sends it with ``extra_body={"seqlab": {...}}``:

    {"strategy": "prompt-lookup", "options": {"max_ngram": 3}}
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SeqlabOptions(_Strict):
    """seqlab's extension fields of a request."""

    strategy: str | None = Field(None, description="a seqlab decoding strategy (default: the "
                                                   "server's)")
    options: dict[str, Any] = Field(default_factory=dict,
                                    description="the strategy's options, e.g. {'num_beams': 4}")
    top_k: int | None = None
    min_p: float | None = None
    session: str | None = Field(None, min_length=1, max_length=200,
                                description="keep the decode state for this session's next "
                                            "request (see seqlab.serve.sessions)")


class StreamOptions(_Strict):
    include_usage: bool = False


class _Generation(_Strict):
    """Fields shared by completions and chat completions."""

    model: str
    max_tokens: int | None = Field(None, ge=0)
    temperature: float | None = Field(None, ge=0)
    top_p: float | None = Field(None, gt=0, le=1)
    n: int = Field(1, ge=1, le=64)
    stream: bool = False
    stream_options: StreamOptions | None = None
    stop: str | list[str] | None = None
    seed: int | None = None
    user: str | None = None
    frequency_penalty: float | None = None
    presence_penalty: float | None = None
    logit_bias: dict[str, float] | None = None
    seqlab: SeqlabOptions = Field(default_factory=SeqlabOptions)

    @field_validator("stop")
    @classmethod
    def _at_most_four(cls, v):
        if isinstance(v, list) and len(v) > 4:
            raise ValueError("at most 4 stop strings")
        return v

    @property
    def stops(self) -> list[str]:
        return [self.stop] if isinstance(self.stop, str) else list(self.stop or [])

    def unsupported(self) -> str | None:
        """The first field given that seqlab does not implement, with why."""
        for name in ("frequency_penalty", "presence_penalty"):
            if getattr(self, name):
                return f"{name} is not supported by this server; leave it out or set it to 0"
        if self.logit_bias:
            return "logit_bias is not supported by this server; leave it out"
        return None


class CompletionRequest(_Generation):
    prompt: str | list[str] | list[int] | list[list[int]]
    max_tokens: int | None = Field(16, ge=0)     # OpenAI's default for completions
    echo: bool = False
    logprobs: int | None = None
    best_of: int | None = None
    suffix: str | None = None

    def unsupported(self) -> str | None:
        if self.logprobs is not None:
            return "logprobs is not supported by this server; leave it out"
        if self.best_of not in (None, 1, self.n):
            return ("best_of is not supported by this server; use the seqlab strategy 'beam' "
                    "(extra_body={'seqlab': {'strategy': 'beam'}}) instead")
        if self.suffix:
            return "suffix (insertion) is not supported by this server; leave it out"
        return super().unsupported()


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="allow")   # name, tool_call_id ... pass to the template

    role: Literal["system", "user", "assistant", "tool", "developer"]
    content: str | list[dict[str, Any]] | None = None

    def text(self) -> str:
        """The message's text; content parts other than text are refused by the caller."""
        if self.content is None or isinstance(self.content, str):
            return self.content or ""
        return "".join(p.get("text", "") for p in self.content)

    def has_only_text(self) -> bool:
        return not isinstance(self.content, list) or all(p.get("type") == "text"
                                                         for p in self.content)


class ChatRequest(_Generation):
    messages: list[ChatMessage] = Field(min_length=1)
    max_completion_tokens: int | None = Field(None, ge=0)
    logprobs: bool | None = None
    top_logprobs: int | None = None
    tools: list[dict[str, Any]] | None = None
    tool_choice: Any = None
    response_format: dict[str, Any] | None = None

    def unsupported(self) -> str | None:
        if self.logprobs or self.top_logprobs:
            return "logprobs is not supported by this server; leave it out"
        if self.tools or self.tool_choice not in (None, "none"):
            return "tools (function calling) are not supported by this server; leave them out"
        if self.response_format and self.response_format.get("type") != "text":
            return "response_format other than text is not supported by this server"
        for i, m in enumerate(self.messages):
            if not m.has_only_text():
                return f"messages[{i}] holds content parts other than text; send text only"
        return super().unsupported()

    @property
    def budget(self) -> int | None:
        return self.max_completion_tokens if self.max_completion_tokens is not None \
            else self.max_tokens
