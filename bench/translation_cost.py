"""What translating the Responses API to chat completions costs per request and per streamed chunk
(routing/proxy/translation/responses.py; figures in docs/api-responses.md).

Pure CPU, one process, no server: times `to_chat` on a small and on a tool-call conversation, `from_chat` on a
text answer, and a 20-chunk stream through `StreamTranslator` (start, 20 feeds, finish), and prints the median,
mean and p99 per call in microseconds.

    .venv/bin/python bench/translation_cost.py [--runs 20000]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from routing.proxy.translation.responses import StreamTranslator, from_chat, to_chat  # noqa: E402

TOOL = {
    "type": "function",
    "name": "get_weather",
    "description": "Weather for a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
}
SMALL = {"model": "rainymodel/auto", "instructions": "Be brief.", "input": "Say hello in five words."}
TOOL_TURN = {
    "model": "rainymodel/auto",
    "tools": [TOOL],
    "input": [
        {"role": "user", "content": "Weather in Paris?"},
        {"type": "function_call", "call_id": "call_a", "name": "get_weather", "arguments": '{"city":"Paris"}'},
        {"type": "function_call_output", "call_id": "call_a", "output": "18C and sunny"},
    ],
}
WORDS = "the quick brown fox jumps over the lazy dog and keeps running far away from the farm today".split()
CHAT = {
    "id": "c",
    "object": "chat.completion",
    "created": 1,
    "model": "m",
    "choices": [{"index": 0, "message": {"role": "assistant", "content": " ".join(WORDS)}, "finish_reason": "stop"}],
    "usage": {"prompt_tokens": 12, "completion_tokens": 20, "total_tokens": 32},
}
CHUNKS = [
    {
        "id": "c",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": "m",
        "choices": [{"index": 0, "delta": {"content": word + " "}, "finish_reason": None}],
    }
    for word in (WORDS * 2)[:20]
]


def stream_once():
    translator = StreamTranslator(response_id="resp_x", created_at=1, request=SMALL)
    translator.start()
    for chunk in CHUNKS:
        translator.feed(chunk)
    translator.finish(CHAT["usage"])


def measure(name: str, call, runs: int) -> None:
    for _ in range(runs // 10):
        call()
    times = []
    for _ in range(runs):
        start = time.perf_counter_ns()
        call()
        times.append(time.perf_counter_ns() - start)
    times.sort()
    print(
        f"| {name} | {times[len(times) // 2] / 1000:.1f} | {statistics.fmean(times) / 1000:.1f} | "
        f"{times[int(len(times) * 0.99)] / 1000:.1f} |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=20000)
    args = parser.parse_args()
    print(f"Python {sys.version.split()[0]}, {args.runs} runs each\n")
    print("| call | median µs | mean µs | p99 µs |\n|---|---|---|---|")
    measure("to_chat, string input + instructions", lambda: to_chat(SMALL), args.runs)
    measure("to_chat, tool round trip (3 items, 1 tool)", lambda: to_chat(TOOL_TURN), args.runs)
    measure(
        "from_chat, 20-word answer",
        lambda: from_chat(CHAT, response_id="resp_x", created_at=1, request=SMALL),
        args.runs,
    )
    measure("stream: start + 20 chunks + finish", stream_once, args.runs // 4)


if __name__ == "__main__":
    main()
