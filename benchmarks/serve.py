"""`seqlab serve` under load: concurrent streaming clients of the official `openai` package.

Starts `seqlab serve MODEL` as its own process once per setting (batches of up to
``--max-batch`` rows, and 1 row: one request at a time), sends ``--requests`` greedy
streaming completions with ``--clients`` of them in flight at once (AsyncOpenAI), and
checks every answer against ``seqlab.decoding.generate`` run on one prompt alone.
Prints per setting: requests/s, generated tokens/s, latency p50/p95, time to first
token p50/p95, and answers that differ from the single-request output; writes JSON.

    python benchmarks/serve.py                              # SmolLM2 if installed
    python benchmarks/serve.py --model runs/default --clients 32 --requests 64
Prompts are lines of the standard library's own source (``textwrap.py``), so the
model continues real code.
"""

from __future__ import annotations

import argparse
import asyncio
import inspect
import json
import socket
import statistics
import subprocess
import sys
import textwrap
import time
from pathlib import Path


def prompts(n: int) -> list[str]:
    lines = [ln for ln in inspect.getsource(textwrap).splitlines() if len(ln.strip()) > 20]
    return [lines[i * len(lines) // n] + "\n" for i in range(n)]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(q * (len(xs) - 1))))]


async def load(port: int, name: str, texts: list[str], max_tokens: int, clients: int) -> dict:
    import openai

    client = openai.AsyncOpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="x",
                                max_retries=0, timeout=600)
    gate = asyncio.Semaphore(clients)
    results: list[dict] = [None] * len(texts)

    async def one(i: int) -> None:
        async with gate:
            t0 = time.perf_counter()
            first, parts = None, []
            stream = await client.completions.create(model=name, prompt=texts[i],
                                                     max_tokens=max_tokens, temperature=0,
                                                     stream=True)
            async for chunk in stream:
                if chunk.choices and chunk.choices[0].text:
                    first = first or time.perf_counter() - t0
                    parts.append(chunk.choices[0].text)
            results[i] = {"text": "".join(parts), "latency": time.perf_counter() - t0,
                          "ttft": first or 0.0}

    t0 = time.perf_counter()
    await asyncio.gather(*(one(i) for i in range(len(texts))))
    wall = time.perf_counter() - t0
    await client.close()
    return {"wall_s": wall, "results": results}


def serve(model: str, port: int, max_batch: int) -> subprocess.Popen:
    p = subprocess.Popen([sys.executable, "-m", "seqlab", "serve", model, "--port", str(port),
                          "--name", "bench", "--max-batch", str(max_batch),
                          "--log-level", "warning"], stderr=subprocess.PIPE, text=True)
    import urllib.request

    deadline = time.monotonic() + 300
    while True:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2).read()
            return p
        except OSError:
            if p.poll() is not None:
                raise SystemExit(f"seqlab serve exited: {p.stderr.read()}")
            if time.monotonic() > deadline:
                p.kill()
                raise SystemExit("seqlab serve did not come up in 300 s")
            time.sleep(0.5)


def references(model_name: str, texts: list[str], max_tokens: int) -> list[str]:
    """Each prompt decoded alone, greedily, by the engine itself."""
    from tqdm import tqdm

    from seqlab.cli import load_for_cli
    from seqlab.decoding import generate

    model, tok, _ = load_for_cli(model_name)
    eos = getattr(tok, "eos_id", None)
    out = []
    for t in tqdm(texts, desc="single-request references", unit="req"):
        ids = generate(model, [tok.encode(t)], "greedy", max_tokens, eos_id=eos).tokens[0]
        ids = ids[:-1] if ids and ids[-1] == eos else ids
        out.append(tok.decode_bytes(ids).decode("utf-8", "replace"))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="smollm2", help="what seqlab serve serves (default smollm2)")
    ap.add_argument("--clients", type=int, default=32, help="requests in flight at once")
    ap.add_argument("--requests", type=int, default=64)
    ap.add_argument("--max-tokens", type=int, default=32)
    ap.add_argument("--max-batch", type=int, nargs="+", default=[32, 1],
                    help="server settings to compare (rows per engine call)")
    ap.add_argument("--out", default=str(Path(__file__).parent / "out" / "serve.json"))
    args = ap.parse_args()

    import torch

    texts = prompts(args.requests)
    want = references(args.model, texts, args.max_tokens)
    rows = []
    for max_batch in args.max_batch:
        port = free_port()
        p = serve(args.model, port, max_batch)
        try:
            asyncio.run(load(port, "bench", texts[:2], 4, 2))     # warm up
            run = asyncio.run(load(port, "bench", texts, args.max_tokens, args.clients))
        finally:
            p.terminate()
            p.wait(timeout=60)
        res = run["results"]
        lat, ttft = [r["latency"] for r in res], [r["ttft"] for r in res]
        tokens = args.requests * args.max_tokens
        rows.append({"max_batch": max_batch, "clients": args.clients, "requests": args.requests,
                     "max_tokens": args.max_tokens, "wall_s": round(run["wall_s"], 2),
                     "requests_per_s": round(args.requests / run["wall_s"], 3),
                     "tokens_per_s": round(tokens / run["wall_s"], 1),
                     "latency_p50_s": round(statistics.median(lat), 3),
                     "latency_p95_s": round(pct(lat, 0.95), 3),
                     "ttft_p50_s": round(statistics.median(ttft), 3),
                     "ttft_p95_s": round(pct(ttft, 0.95), 3),
                     "differ_from_single": sum(r["text"] != w for r, w in zip(res, want))})
    print(f"\nmodel {args.model}, {args.requests} greedy streaming requests of {args.max_tokens} "
          f"tokens, {args.clients} in flight; torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads\n")
    print("| max batch | req/s | tokens/s | latency p50 / p95 s | first token p50 / p95 s | "
          "differ from single |")
    print("|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['max_batch']} | {r['requests_per_s']:.2f} | {r['tokens_per_s']:.1f} | "
              f"{r['latency_p50_s']:.2f} / {r['latency_p95_s']:.2f} | "
              f"{r['ttft_p50_s']:.2f} / {r['ttft_p95_s']:.2f} | {r['differ_from_single']} |")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"model": args.model, "rows": rows}, indent=1))
    print(f"\nwrote {out}")


if __name__ == "__main__":
    main()
