"""Three fake OpenAI-compatible backends on loopback, for trying the improvement loop without GPUs.

    python scripts/fake_backends.py            # router :18001, primary :18002, xai :18003

Then point the engine at them:

    ROUTER_URL=http://127.0.0.1:18001/v1 PRIMARY_URL=http://127.0.0.1:18002/v1 \
    XAI_URL=http://127.0.0.1:18003/v1 XAI_API_KEY=fake engine serve

The "router" classifies with a few keyword rules (and follows the few-shot examples a prompt
proposal adds, when one quotes the message word for word); it misses "latest"/"release"
questions on purpose, so the judge has something to find. The "xai" backend, asked with
prompts/review/judge.md, judges with stricter rules. Answers are canned text. It is a demo
and test aid, not a model: the numbers it produces measure these rules, not a classifier.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

from aiohttp import web

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tests.fakes import Answer, FakeBackend  # noqa: E402

ROUTE_OF = {"SIMPLE": "router", "MODERATE": "primary", "COMPLEX": "xai", "ENRICH": "enrich"}
RULES = [
    ("ENRICH", r"(?i)\b(today|right now|this week|news|weather|price of|score)\b"),
    ("COMPLEX", r"(?i)\b(prove|proof|novel|byzantine)\b"),
    ("SIMPLE", r"(?i)^\W*(hi|hello|hey|thanks|thank you)\b|capital of|^\W*what'?s \d+"),
]
STRICT = [("ENRICH", r"(?i)\b(latest|release[sd]?|current version)\b")] + RULES


def label_for(text: str, rules=RULES) -> str:
    for label, pattern in rules:
        if re.search(pattern, text):
            return label
    return "MODERATE"


def between(text: str, start: str, end: str) -> str:
    match = re.search(re.escape(start) + r"\s*(.*?)\s*" + re.escape(end), text, re.DOTALL)
    return match.group(1) if match else text


def router_answer(body) -> Answer:
    system = body["messages"][0].get("content", "")
    if "request classifier" not in system:
        return Answer(content="Hello! (router answer)")
    message = between(body["messages"][-1]["content"], "<<<", ">>>")
    for line in system.splitlines():  # few-shot examples from a prompt proposal
        quoted = re.match(r'- "(.*)" -> (\w+)$', line)
        if quoted and quoted.group(1) == " ".join(message.split())[:200].replace('"', "'"):
            return Answer(content=quoted.group(2))
    return Answer(content=label_for(message))


def xai_answer(body) -> Answer:
    prompt = body["messages"][-1].get("content", "")
    if "You review the routing decisions" in prompt:
        query = between(prompt, "<<<", ">>>")
        routed = re.search(r"Route taken: (\w+)", prompt).group(1)
        better = ROUTE_OF[label_for(query, STRICT)]
        ok = "true" if better == routed else "false"
        return Answer(content='```json\n{"route_ok": %s, "better_route": "%s", "answer_ok": true, '
                              '"reason": "keyword rules say %s"}\n```' % (ok, better, better))
    if body["messages"][0].get("role") == "system" and "brief" in body["messages"][0].get("content", "").lower():
        return Answer(content="Context brief: " + prompt[:300])
    return Answer(content="A thorough cloud answer. (xai answer)")


def main() -> None:
    fakes = {"router": (18001, router_answer), "primary": (18002, None), "xai": (18003, xai_answer)}
    runners = []

    async def start(app):
        for name, (port, answer) in fakes.items():
            fake = FakeBackend(name)
            if answer:
                fake.answer = answer
            runner = web.AppRunner(fake.app)
            await runner.setup()
            await web.TCPSite(runner, "127.0.0.1", port).start()
            runners.append(runner)
            print(f"{name}: http://127.0.0.1:{port}/v1", flush=True)

    holder = web.Application()
    holder.on_startup.append(start)
    web.run_app(holder, host="127.0.0.1", port=18000, print=None)


if __name__ == "__main__":
    main()
