"""The official OpenAI Python client against `edgecascade serve`.

Usage: python3 tests/clients/openai_client.py http://127.0.0.1:PORT/v1
Exits non-zero (with the reason) if any check fails. Run by the e2e test
`cascade::the_official_openai_client_works` when the `openai` package is installed
(.ci/run installs it).
"""
import json
import sys

import openai

base = sys.argv[1]
client = openai.OpenAI(base_url=base, api_key="unused-by-edgecascade")

models = [m.id for m in client.models.list().data]
assert "news-topic-large" in models, models

reply = client.chat.completions.create(
    model="news-topic-large",
    messages=[
        {"role": "system", "content": "Classify the topic of this news article."},
        {"role": "user", "content": "The central bank raised interest rates again"},
    ],
    max_tokens=16,
    temperature=0,
)
answer = json.loads(reply.choices[0].message.content)
assert answer["label"] == "business", answer
assert 0.0 <= answer["confidence"] <= 1.0, answer
assert reply.usage.total_tokens > 0, reply.usage

try:
    client.chat.completions.create(model="no-such-plugin", messages=[{"role": "user", "content": "x"}])
    raise SystemExit("an unknown model must be an error")
except openai.NotFoundError as e:
    assert "no-such-plugin" in str(e), e

print("ok: models, chat.completions, usage and errors work with openai", openai.__version__)
