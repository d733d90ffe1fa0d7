"""What translating the Anthropic Messages API to chat completions costs per request and per streamed chunk
(routing/proxy/translation/anthropic.py; figures in docs/api.md, "Anthropic Messages API").

Pure CPU, one process, no server: times `to_chat` on a small and on a tool_use -> tool_result conversation,
`from_chat` on a text answer, and a 20-chunk stream through `StreamTranslator` (start, 20 feeds, finish), and
prints the median, mean and p99 per call in microseconds.

    .venv/bin/python bench/anthropic_translation_cost.py [--runs 20000]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from routing.proxy.translation.anthropic import StreamTranslator, from_chat, to_chat  # noqa: E402

TOOL = {
    "name": "get_weather",
    "description": "Weather for a city",
    "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}},
}
SMALL = {
    "model": "rainymodel/auto",
    "max_tokens": 256,
    "system": "Be brief.",
    "messages": [{"role": "user", "content": "Say hello in five words."}],
}
TOOL_TURN = {
    "model": "rainymodel/auto",
    "max_tokens": 256,
    "tools": [TOOL],
    "messages": [
        {"role": "user", "content": "Weather in Paris?"},
        {
            "role": "assistant",
            "content": [{"type": "tool_use", "id": "toolu_a", "name": "get_weather", "input": {"city": "Paris"}}],
        },
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_a", "content": "18C and sunny"}]},
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
    translator = StreamTranslator(message_id="msg_x", model="rainymodel/auto", input_tokens=12)
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
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20000)
    runs = parser.parse_args().runs
    print("| step | median µs | mean µs | p99 µs |")
    print("|---|---|---|---|")
    measure("to_chat, small request", lambda: to_chat(SMALL), runs)
    measure("to_chat, tool_use -> tool_result turn", lambda: to_chat(TOOL_TURN), runs)
    measure("from_chat, text answer", lambda: from_chat(CHAT, message_id="msg_x", model="rainymodel/auto"), runs)
    measure("stream: start + 20 chunks + finish", stream_once, runs // 4)


if __name__ == "__main__":
    main()
