"""Calls the proxy with the official OpenAI Python SDK.

Run by the integration test `sdk::official_openai_sdk_works_through_the_proxy`
with OPENAI_BASE_URL pointing at the proxy. Prints one JSON object with what
the SDK returned, for the test to check.
"""

import json
import sys

import openai

client = openai.OpenAI(max_retries=0, timeout=20)
out = {}

chat = client.chat.completions.create(
    model="gpt-4o-mini",
    messages=[{"role": "user", "content": "What is the capital of France?"}],
    extra_headers={"x-request-id": "sdk-chat"},
)
out["chat"] = chat.choices[0].message.content

stream = client.chat.completions.create(
    model="gpt-4o-mini",
    messages=[{"role": "user", "content": "Stream it."}],
    stream=True,
    stream_options={"include_usage": True},
    extra_headers={"x-request-id": "sdk-stream"},
)
text = ""
usage = None
for chunk in stream:
    if chunk.choices and chunk.choices[0].delta.content:
        text += chunk.choices[0].delta.content
    if chunk.usage:
        usage = chunk.usage.total_tokens
out["stream"] = text
out["stream_usage"] = usage

emb = client.embeddings.create(
    model="text-embedding-3-small",
    input="hello",
    extra_headers={"x-request-id": "sdk-emb"},
)
out["embedding_len"] = len(emb.data[0].embedding)

resp = client.responses.create(
    model="gpt-4o-mini",
    input="Say hi",
    extra_headers={"x-request-id": "sdk-resp"},
)
out["responses"] = resp.output_text

events = client.responses.create(
    model="gpt-4o-mini",
    input="Stream hi",
    stream=True,
    extra_headers={"x-request-id": "sdk-resp-stream"},
)
deltas = "".join(e.delta for e in events if e.type == "response.output_text.delta")
out["responses_stream"] = deltas

json.dump(out, sys.stdout)
