"""`seqlab serve` as a user starts it: a real process, a saved model, Ctrl-C to stop."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time

import pytest

openai = pytest.importorskip("openai")
pytest.importorskip("uvicorn")

from seqlab.decoding import generate  # noqa: E402
from seqlab.models import build_lm, save  # noqa: E402


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    folder = tmp_path_factory.mktemp("served") / "tiny"
    model = build_lm(vocab_size=256, dim=32, layers="gru+attention",
                     mixer_options={"attention": {"heads": 2}})
    save(model, folder)
    return folder, model


def test_serve_answers_and_stops_on_ctrl_c(saved):
    folder, model = saved
    port = free_port()
    p = subprocess.Popen([sys.executable, "-m", "seqlab", "serve", str(folder), "--port", str(port),
                          "--log-level", "warning"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True)
    try:
        client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="x", max_retries=0,
                               timeout=10)
        deadline = time.monotonic() + 60
        while True:
            try:
                models = [m.id for m in client.models.list()]
                break
            except openai.APIConnectionError:
                assert p.poll() is None, p.stderr.read()
                assert time.monotonic() < deadline, "seqlab serve did not come up"
                time.sleep(0.2)
        assert models == ["tiny"]
        r = client.completions.create(model="tiny", prompt="abc", max_tokens=10, temperature=0)
        want = generate(model, [list(b"abc")], "greedy", 10).tokens[0]
        assert r.choices[0].text == bytes(want).decode("utf-8", "replace")
    finally:
        p.send_signal(signal.SIGINT)
        out, err = p.communicate(timeout=30)
    assert p.returncode == 0, err
    assert "Traceback" not in err
    assert f"http://127.0.0.1:{port}/v1" in err


@pytest.mark.parametrize("extra, fragment", [
    (["--strategy", "speculative"], "needs a draft model"),
    (["--max-batch", "0"], "--max-batch 0"),
    (["--num-beams", "2"], "strategy 'sample' has no option 'num_beams'"),
])
def test_bad_serve_flags_exit_2(saved, extra, fragment):
    folder, _ = saved
    r = subprocess.run([sys.executable, "-m", "seqlab", "serve", str(folder), *extra],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2, r.stderr
    assert fragment in r.stderr and "Traceback" not in r.stderr
