// The official openai npm client (version pinned in package-lock.json,
// installed by scripts/setup.sh) against `podkv serve`: lists the models,
// completes, chats and streams, and a streamed answer equals the whole one.
// Usage: node openai_client.mjs PODKV_BINARY MODEL_DIR. Exit 77 (skipped)
// when the client is not installed.
import { spawn } from "node:child_process";
import assert from "node:assert/strict";

let OpenAI;
try {
  ({ default: OpenAI } = await import("openai"));
} catch {
  console.log("openai npm package not installed (scripts/setup.sh installs it): skipped");
  process.exit(77);
}

const [binary, model] = process.argv.slice(2);
const server = spawn(binary, ["serve", "-m", model, "--port", "0", "-t", "1", "--api-key", "node-key",
                              "--chat-template", "chatml", "--parallel", "2"],
                     { stdio: ["ignore", "ignore", "pipe"], env: { ...process.env, OMP_WAIT_POLICY: "PASSIVE" } });
let log = "";
const port = await new Promise((resolve, reject) => {
  server.stderr.on("data", (d) => {
    log += d;
    const m = /listening on http:\/\/127\.0\.0\.1:(\d+)/.exec(log);
    if (m) resolve(Number(m[1]));
  });
  server.on("exit", (code) => reject(new Error(`podkv serve exited with ${code}: ${log}`)));
  setTimeout(() => reject(new Error(`podkv serve did not start: ${log}`)), 30000).unref();
});

try {
  const client = new OpenAI({ baseURL: `http://127.0.0.1:${port}/v1`, apiKey: "node-key", maxRetries: 0 });

  const models = await client.models.list();
  assert.equal(models.data[0].id, "podkv-ref");

  const completion = await client.completions.create({
    model: "podkv-ref", prompt: "It was a dark and stormy night", max_tokens: 12, temperature: 0 });
  assert.equal(completion.object, "text_completion");
  assert.equal(completion.usage.completion_tokens > 0, true);
  assert.match(completion.choices[0].finish_reason, /^(stop|length)$/);

  const stream = await client.completions.create({
    model: "podkv-ref", prompt: "It was a dark and stormy night", max_tokens: 12, temperature: 0, stream: true,
    stream_options: { include_usage: true } });
  let streamed = "";
  let usage = null;
  for await (const chunk of stream) {
    if (chunk.choices.length) streamed += chunk.choices[0].text;
    if (chunk.usage) usage = chunk.usage;
  }
  assert.equal(streamed, completion.choices[0].text);
  assert.deepEqual(usage, completion.usage);

  const messages = [{ role: "system", content: "Be brief." }, { role: "user", content: "Tell me a story." }];
  const chat = await client.chat.completions.create({ model: "podkv-ref", messages, max_tokens: 10, temperature: 0 });
  assert.equal(chat.object, "chat.completion");
  assert.equal(chat.choices[0].message.role, "assistant");

  const chatStream = await client.chat.completions.create({
    model: "podkv-ref", messages, max_tokens: 10, temperature: 0, stream: true });
  let chatText = "";
  for await (const chunk of chatStream) chatText += chunk.choices[0]?.delta?.content ?? "";
  assert.equal(chatText, chat.choices[0].message.content);

  await assert.rejects(client.completions.create({ model: "podkv-ref", prompt: "x", n: 2 }),
                       (e) => e.status === 400 && /'n' must be 1/.test(e.message));
  const anonymous = new OpenAI({ baseURL: `http://127.0.0.1:${port}/v1`, apiKey: "wrong", maxRetries: 0 });
  await assert.rejects(anonymous.models.list(), (e) => e.status === 401);
  console.log("openai client: models, completions, chat, streams and errors as expected");
} finally {
  const exited = new Promise((resolve) => server.on("exit", resolve));
  server.kill("SIGTERM");
  const code = await exited;
  assert.equal(code, 0, `podkv serve exited with ${code}: ${log}`);
}
