// Calls the proxy with the official OpenAI Node SDK.
//
// Run by the integration test `sdk::official_openai_node_sdk_works_through_the_proxy`
// with OPENAI_BASE_URL pointing at the proxy. Prints one JSON object with
// what the SDK returned, for the test to check.

import OpenAI from "openai";

const client = new OpenAI({ maxRetries: 0, timeout: 20_000 });
const out = {};
const id = (name) => ({ headers: { "x-request-id": name } });

const chat = await client.chat.completions.create(
  {
    model: "gpt-4o-mini",
    messages: [{ role: "user", content: "What is the capital of France?" }],
  },
  id("node-chat"),
);
out.chat = chat.choices[0].message.content;

const stream = await client.chat.completions.create(
  {
    model: "gpt-4o-mini",
    messages: [{ role: "user", content: "Stream it." }],
    stream: true,
    stream_options: { include_usage: true },
  },
  id("node-stream"),
);
let text = "";
let usage = null;
for await (const chunk of stream) {
  text += chunk.choices?.[0]?.delta?.content ?? "";
  if (chunk.usage) usage = chunk.usage.total_tokens;
}
out.stream = text;
out.stream_usage = usage;

// No encoding_format: the SDK asks for base64 and decodes it.
const emb = await client.embeddings.create(
  { model: "text-embedding-3-small", input: "hello" },
  id("node-emb"),
);
out.embedding = Array.from(emb.data[0].embedding);

const resp = await client.responses.create(
  { model: "gpt-4o-mini", input: "Say hi" },
  id("node-resp"),
);
out.responses = resp.output_text;

const events = await client.responses.create(
  { model: "gpt-4o-mini", input: "Stream hi", stream: true },
  id("node-resp-stream"),
);
let deltas = "";
for await (const e of events) {
  if (e.type === "response.output_text.delta") deltas += e.delta;
}
out.responses_stream = deltas;

process.stdout.write(JSON.stringify(out));
