"""Interop: the official `openai` Python package against a running Cordon gateway.

Usage: python openai_client.py BASE_URL EU_TOKEN US_TOKEN
Exits non-zero (with the failing check named) if anything differs from what a client expects.
"""

import sys

import openai


def main() -> int:
    base, eu_token, us_token = sys.argv[1], sys.argv[2], sys.argv[3]
    eu = openai.OpenAI(base_url=f"{base}/v1", api_key=eu_token, max_retries=0)
    us = openai.OpenAI(base_url=f"{base}/v1", api_key=us_token, max_retries=0)

    # Chat, non-stream, with the raw response to read Cordon's headers.
    raw = eu.chat.completions.with_raw_response.create(
        model="chat-small", messages=[{"role": "user", "content": "hello from the sdk"}]
    )
    chat = raw.parse()
    assert chat.choices[0].message.content == "echo: hello from the sdk", chat
    assert raw.headers["x-cordon-processing-region"] == "aws:eu-central-1", raw.headers
    assert raw.headers["x-cordon-decision-id"], raw.headers
    assert chat.usage.total_tokens > 0, chat.usage
    print("chat ok")

    # US subject lands in the US.
    raw = us.chat.completions.with_raw_response.create(
        model="chat-small", messages=[{"role": "user", "content": "hi"}]
    )
    assert raw.headers["x-cordon-processing-region"] == "aws:us-east-1", raw.headers
    print("us chat ok")

    # Streaming.
    stream = eu.chat.completions.create(
        model="chat-small", messages=[{"role": "user", "content": "stream this please"}], stream=True
    )
    text = "".join((c.choices[0].delta.content or "") for c in stream if c.choices)
    assert text == "echo: stream this please", text
    print("stream ok")

    # Embeddings.
    emb = eu.embeddings.create(model="embed-small", input=["one", "two"])
    assert len(emb.data) == 2 and len(emb.data[0].embedding) > 0, emb
    print("embeddings ok")

    # Models: only what this caller may use.
    ids = sorted(m.id for m in eu.models.list())
    assert "chat-small" in ids and "chat-large" not in ids, ids
    print("models ok")

    # A refusal raises PermissionDeniedError carrying the reason code.
    try:
        eu.chat.completions.create(model="chat-large", messages=[{"role": "user", "content": "hi"}])
    except openai.PermissionDeniedError as e:
        assert e.status_code == 403, e.status_code
        assert e.code == "no_permitted_endpoint", e.code
        assert e.type == "residency_violation", e.type
        assert e.body.get("decision_id"), e.body
        print("refusal ok")
    else:
        raise AssertionError("chat-large for an EU subject was not refused")

    # Bad credentials raise AuthenticationError.
    bad = openai.OpenAI(base_url=f"{base}/v1", api_key="not-a-key", max_retries=0)
    try:
        bad.chat.completions.create(model="chat-small", messages=[{"role": "user", "content": "hi"}])
    except openai.AuthenticationError as e:
        assert e.code == "unknown_api_key", e.code
        print("auth ok")
    else:
        raise AssertionError("a bad key was accepted")
    print("interop: all ok")
    return 0


if __name__ == "__main__":
    sys.exit(main())
