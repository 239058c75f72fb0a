"""``seqlab serve``: any seqlab model behind OpenAI's HTTP API.

    seqlab serve smollm2 --port 8000          # then, with the official client:
    >>> client = openai.OpenAI(base_url="http://127.0.0.1:8000/v1", api_key="none")
    >>> client.chat.completions.create(model="smollm2", messages=[...], stream=True,
    ...                                extra_body={"seqlab": {"strategy": "prompt-lookup"}})

``app`` holds the endpoints, ``batcher`` the worker that joins requests into
engine calls, ``schema`` the request bodies, ``sessions`` the kept decode states;
streamed text comes from ``seqlab.decoding.stream.TextStops``.
Needs the ``serve`` extra (FastAPI and uvicorn).
"""

from seqlab.serve.app import APIError, Server, ServerConfig, create_app

__all__ = ["APIError", "Server", "ServerConfig", "create_app"]
