"""`seqlab serve` against the official `openai` client, on a server started here on 127.0.0.1.

The model is a small random LM over a byte-level vocabulary with two chat tokens, so
that every answer can be checked against `seqlab.decoding.generate` run directly.
"""

from __future__ import annotations

import http.client
import json
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import torch

openai = pytest.importorskip("openai")
uvicorn = pytest.importorskip("uvicorn")

from seqlab.decoding import generate  # noqa: E402
from seqlab.models.lm import build_lm  # noqa: E402
from seqlab.serve import Server, ServerConfig, create_app  # noqa: E402
from seqlab.tokenizer import PretrainedTokenizer, byte_alphabet  # noqa: E402

TEMPLATE = ("{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n"
            "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
NAME = "tiny"


def chat_tokenizer() -> PretrainedTokenizer:
    alphabet = byte_alphabet()
    tokens = [alphabet[b] for b in range(256)] + ["<|im_start|>", "<|im_end|>"]
    return PretrainedTokenizer.from_gguf_vocab(model="gpt2", pre=None, tokens=tokens, merges=[],
                                               token_types=[1] * 256 + [3, 3], eos_id=257,
                                               chat_template=TEMPLATE, name="test tokenizer")


class Running:
    """A uvicorn server in a thread, on a free port."""

    def __init__(self, server: Server):
        self.server = server
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        self.port = sock.getsockname()[1]
        config = uvicorn.Config(create_app(server), log_level="warning", lifespan="on")
        self.uv = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.uv.run, kwargs={"sockets": [sock]}, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.uv.started:
            assert time.monotonic() < deadline, "the server did not start"
            time.sleep(0.02)
        self.url = f"http://127.0.0.1:{self.port}"

    def client(self, **kw) -> "openai.OpenAI":
        return openai.OpenAI(base_url=self.url + "/v1", api_key="unused", max_retries=0, **kw)

    def stop(self) -> None:
        self.uv.should_exit = True
        self.thread.join(timeout=30)


@pytest.fixture(scope="module")
def tok():
    return chat_tokenizer()


@pytest.fixture(scope="module")
def model(tok):
    torch.manual_seed(0)
    m = build_lm(vocab_size=tok.vocab_size, dim=32, layers="attention+gru",
                 mixer_options={"attention": {"heads": 2}}, max_length=512).eval()
    return printable(m)


def printable(m):
    """``m`` with a head bias that keeps its random text to printable ASCII (and the end
    token), so that stop strings and streamed text are easy to read and check."""
    head = torch.nn.Linear(m.cfg.dim, m.cfg.vocab_size)
    head.weight = m.head.weight
    with torch.no_grad():
        head.bias.fill_(-30.0)
        head.bias[32:127] = 0.0
        head.bias[10] = 0.0
        head.bias[257] = -2.0   # <|im_end|> now and then
    m.head = head
    return m


@pytest.fixture(scope="module")
def running(model, tok):
    r = Running(Server(model, tok, ServerConfig(NAME), max_rows=16, window_s=0.05))
    yield r
    r.stop()


@pytest.fixture(scope="module")
def client(running):
    return running.client()


def get(running, path: str) -> tuple[int, dict]:
    conn = http.client.HTTPConnection("127.0.0.1", running.port, timeout=30)
    conn.request("GET", path)
    r = conn.getresponse()
    return r.status, json.loads(r.read())


def direct(model, tok, ids, n, strategy="greedy", **kw) -> str:
    """The text seqlab.decoding.generate gives for one prompt, up to the end token."""
    out = generate(model, [ids], strategy, n, eos_id=tok.eos_id, **kw).tokens[0]
    if out and out[-1] == tok.eos_id:
        out = out[:-1]
    return tok.decode_bytes(out).decode("utf-8", "replace")


# -- completions ---------------------------------------------------------------------------
def test_models_and_health(client, running):
    assert [m.id for m in client.models.list()] == [NAME]
    assert client.models.retrieve(NAME).owned_by == "seqlab"
    health = get(running, "/health")[1]
    assert health["status"] == "ok" and health["model"] == NAME


def test_greedy_completion_equals_generate(client, model, tok):
    prompt = "def parse(text):\n    "
    r = client.completions.create(model=NAME, prompt=prompt, max_tokens=24, temperature=0)
    want = direct(model, tok, tok.encode(prompt), 24)
    assert r.choices[0].text == want
    assert r.choices[0].finish_reason == "length"
    assert r.usage.prompt_tokens == len(tok.encode(prompt))
    assert r.usage.completion_tokens == 24
    echoed = client.completions.create(model=NAME, prompt=prompt, max_tokens=24, temperature=0,
                                       echo=True)
    assert echoed.choices[0].text == prompt + want


def test_streamed_completion_equals_whole(client, model, tok):
    prompt = "import os\n"
    whole = client.completions.create(model=NAME, prompt=prompt, max_tokens=30, temperature=0)
    chunks = list(client.completions.create(model=NAME, prompt=prompt, max_tokens=30,
                                            temperature=0, stream=True,
                                            stream_options={"include_usage": True}))
    text = "".join(c.choices[0].text for c in chunks if c.choices)
    assert text == whole.choices[0].text == direct(model, tok, tok.encode(prompt), 30)
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "length"
    assert sum(1 for c in chunks if c.choices and c.choices[0].text) > 1   # it did stream
    assert chunks[-1].usage.completion_tokens == 30


def test_stop_string_cuts_the_text(client, model, tok):
    prompt = "class A:\n"
    full = direct(model, tok, tok.encode(prompt), 40)
    stop = full[10:13]
    assert stop and full.find(stop) >= 1
    want = full[:full.find(stop)]
    r = client.completions.create(model=NAME, prompt=prompt, max_tokens=40, temperature=0,
                                  stop=[stop])
    assert (r.choices[0].text, r.choices[0].finish_reason) == (want, "stop")
    chunks = client.completions.create(model=NAME, prompt=prompt, max_tokens=40, temperature=0,
                                       stop=stop, stream=True)
    assert "".join(c.choices[0].text for c in chunks if c.choices) == want


def test_several_prompts_and_choices(client, model, tok):
    prompts = ["for i in", "while True:"]
    r = client.completions.create(model=NAME, prompt=prompts, max_tokens=12, temperature=0, n=2)
    assert len(r.choices) == 4
    for c in r.choices:
        assert c.text == direct(model, tok, tok.encode(prompts[c.index // 2]), 12)


def test_token_id_prompt(client, model, tok):
    ids = tok.encode("x = 1\n")
    r = client.completions.create(model=NAME, prompt=ids, max_tokens=8, temperature=0)
    assert r.choices[0].text == direct(model, tok, ids, 8)


def test_seeded_sampling_repeats_and_differs_from_greedy(client):
    kw = dict(model=NAME, prompt="def f(", max_tokens=24, temperature=1.0, seed=7)
    a, b = (client.completions.create(**kw).choices[0].text for _ in range(2))
    greedy = client.completions.create(model=NAME, prompt="def f(", max_tokens=24, temperature=0)
    assert a == b
    assert a != greedy.choices[0].text


def test_strategies_per_request(client, model, tok):
    prompt = "return self."
    ids = tok.encode(prompt)
    for strategy, options in (("prompt-lookup", {}), ("ngram", {}), ("beam", {"num_beams": 3})):
        r = client.completions.create(model=NAME, prompt=prompt, max_tokens=16, temperature=0,
                                      extra_body={"seqlab": {"strategy": strategy,
                                                             "options": options}})
        kind = "beam" if strategy == "beam" else "greedy"
        extra = options if strategy == "beam" else {}
        assert r.choices[0].text == direct(model, tok, ids, 16, kind, **extra), strategy
        assert r.model_extra["seqlab"]["strategy"] == strategy


# -- chat ------------------------------------------------------------------------------------
def test_chat_equals_generate_on_the_template(client, model, tok):
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]
    ids = tok.encode(tok.apply_chat_template(messages))
    r = client.chat.completions.create(model=NAME, messages=messages, max_tokens=20, temperature=0)
    assert r.choices[0].message.role == "assistant"
    assert r.choices[0].message.content == direct(model, tok, ids, 20)
    chunks = list(client.chat.completions.create(model=NAME, messages=messages, max_tokens=20,
                                                 temperature=0, stream=True))
    assert chunks[0].choices[0].delta.role == "assistant"
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == r.choices[0].message.content


def test_chat_without_template_is_refused(model):
    from seqlab.tokenizer import Tokenizer

    plain = build_lm(vocab_size=256, dim=16, layers="gru")
    r = Running(Server(plain, Tokenizer(), ServerConfig("bytes")))
    try:
        with pytest.raises(openai.BadRequestError, match="no chat template"):
            r.client().chat.completions.create(model="bytes", messages=[{"role": "user",
                                                                         "content": "hi"}])
    finally:
        r.stop()


# -- errors ------------------------------------------------------------------------------
@pytest.mark.parametrize("kw, error, fragment", [
    (dict(model="gpt-4"), openai.NotFoundError, "does not exist"),
    (dict(extra_body={"frobnicate": 1}), openai.BadRequestError, "frobnicate: unknown field"),
    (dict(max_tokens=-1), openai.BadRequestError, "max_tokens"),
    (dict(logprobs=2), openai.BadRequestError, "logprobs is not supported"),
    (dict(presence_penalty=0.5), openai.BadRequestError, "presence_penalty is not supported"),
    (dict(extra_body={"seqlab": {"strategy": "magic"}}), openai.BadRequestError,
     "unknown strategy 'magic'"),
    (dict(temperature=0.7, extra_body={"seqlab": {"strategy": "beam"}}), openai.BadRequestError,
     "does not sample"),
    (dict(extra_body={"seqlab": {"strategy": "beam", "options": {"num_beams": 0}}}),
     openai.BadRequestError, "num_beams"),
    (dict(extra_body={"seqlab": {"strategy": "speculative"}}), openai.BadRequestError,
     "needs a draft model"),
    (dict(prompt="x" * 600), openai.BadRequestError, "maximum length of 512"),
    (dict(prompt=[300]), openai.BadRequestError, "outside the vocabulary"),
    (dict(prompt=""), openai.BadRequestError, "prompt is empty"),
])
def test_bad_requests_get_openai_errors(client, kw, error, fragment):
    args = dict(model=NAME, prompt="hello", max_tokens=4) | kw
    with pytest.raises(error, match=fragment) as e:
        client.completions.create(**args)
    assert e.value.status_code in (400, 404)
    assert e.value.body["message"] and "type" in e.value.body


def test_unknown_route_is_an_openai_error(running):
    status, body = get(running, "/v1/engines")
    assert status == 404 and "/v1/engines" in body["error"]["message"]


# -- batching and disconnects -------------------------------------------------------------
def test_concurrent_requests_batch_and_match_single_requests(running, client, model, tok):
    prompts = [f"def f{i}({'x, ' * i}y):" for i in range(12)]
    budgets = [6 + 3 * (i % 4) for i in range(12)]
    before = running.server.batcher.batches
    with ThreadPoolExecutor(12) as pool:
        results = list(pool.map(lambda pb: client.completions.create(
            model=NAME, prompt=pb[0], max_tokens=pb[1], temperature=0), zip(prompts, budgets)))
    for p, n, r in zip(prompts, budgets, results):
        assert r.choices[0].text == direct(model, tok, tok.encode(p), n)
        assert r.usage.completion_tokens == n
    calls = running.server.batcher.batches - before
    assert calls < len(prompts)                # requests shared engine calls
    assert max(r.model_extra["seqlab"]["batch_rows"] for r in results) > 1


def test_a_client_that_leaves_frees_its_row(running, client):
    batcher = running.server.batcher
    conn = http.client.HTTPConnection("127.0.0.1", running.port, timeout=30)
    conn.request("POST", "/v1/completions", json.dumps(
        {"model": NAME, "prompt": "while True:", "max_tokens": 400, "temperature": 0,
         "stream": True}), {"Content-Type": "application/json"})
    r = conn.getresponse()
    got = [r.readline().decode() for _ in range(6)]
    conn.sock.shutdown(socket.SHUT_RDWR)
    conn.close()
    assert any(line.startswith("data: {") for line in got)
    deadline = time.monotonic() + 20
    while not batcher.finished or not batcher.finished[-1].cancelled:
        assert time.monotonic() < deadline, "the abandoned request was not cancelled"
        time.sleep(0.05)
    assert batcher.finished[-1].tokens[0] < 400
    r = client.completions.create(model=NAME, prompt="ok", max_tokens=3, temperature=0)
    assert r.usage.completion_tokens == 3


# -- sessions -----------------------------------------------------------------------------
def test_a_session_continues_from_its_kept_state(tok):
    """Turn 2 of a session runs only its new tokens and answers as a stateless request does;
    the oldest session is evicted past the limit."""
    torch.manual_seed(3)
    m = printable(build_lm(vocab_size=tok.vocab_size, dim=32, layers="gru+attention",
                           mixer_options={"attention": {"heads": 2}})).double().eval()
    r = Running(Server(m, tok, ServerConfig(NAME), sessions=2))
    try:
        c = r.client()

        def ask(prompt, session=None):
            extra = {"seqlab": {"session": session}} if session else {}
            return c.completions.create(model=NAME, prompt=prompt, max_tokens=12, temperature=0,
                                        extra_body=extra)

        one = ask("def first(", "s1")
        assert one.model_extra["seqlab"]["cached_tokens"] == 0
        turn2 = "def first(" + one.choices[0].text + "\ndef second("
        two = ask(turn2, "s1")
        assert two.model_extra["seqlab"]["cached_tokens"] == len(tok.encode("def first(")) + 12
        assert two.choices[0].text == ask(turn2).choices[0].text == direct(m, tok, tok.encode(turn2), 12)
        ask("x = 1", "s2")
        ask("y = 2", "s3")                     # s1 is now the least recently used: evicted
        again = ask(turn2 + two.choices[0].text + "\n", "s1")
        assert again.model_extra["seqlab"]["cached_tokens"] == 0
        health = get(r, "/health")[1]
        assert (health["sessions"], health["sessions_evicted"]) == (2, 2)   # s1, then s2
        with pytest.raises(openai.BadRequestError, match="one prompt with n = 1"):
            c.completions.create(model=NAME, prompt="a", n=2, extra_body={"seqlab": {"session": "s"}})
    finally:
        r.stop()


def test_an_encoder_decoder_reads_each_prompt_as_its_source():
    from seqlab.models.encdec import EncDec, EncDecConfig, decode, pad_rows
    from seqlab.tokenizer import Tokenizer

    torch.manual_seed(3)
    m = EncDec(EncDecConfig(dim=32, encoder_layers="attention(heads=2)",
                            decoder_layers="attention(heads=2)", cross_heads=2)).eval()
    r = Running(Server(m, Tokenizer(), ServerConfig("encdec"), window_s=0.05))
    try:
        client = r.client()
        prompts = ["def add(a, b): return a + b", "x = 1"]
        for strategy, opts in [("greedy", {}), ("beam", {"num_beams": 3})]:
            got = client.completions.create(
                model="encdec", prompt=prompts, max_tokens=12, temperature=0,
                extra_body={"seqlab": {"strategy": strategy, "options": opts}})
            want = decode(m, *pad_rows([list(p.encode()) for p in prompts]), strategy, 12,
                          **opts).tokens
            texts = [bytes(t for t in w if t < 256).decode("utf-8", "replace") for w in want]
            assert [c.text for c in sorted(got.choices, key=lambda c: c.index)] == texts
            # a target that ended stopped at the model's end id, not at the budget
            ended = [bool(w) and w[-1] == m.end_id for w in want]
            assert [c.finish_reason == "stop" for c in
                    sorted(got.choices, key=lambda c: c.index)] == ended
        with pytest.raises(openai.BadRequestError, match="reads each prompt as a new source"):
            client.completions.create(model="encdec", prompt="x", max_tokens=2,
                                      extra_body={"seqlab": {"session": "s1"}})
    finally:
        r.stop()
