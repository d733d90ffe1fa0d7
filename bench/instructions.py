"""Instructions per request, A (a commit) against B (this working tree), counted by callgrind (issue 16).

    .venv/bin/python bench/instructions.py [--base main] [--requests 200] [--warmup 100] [--stream]

Wall-clock figures on a shared machine swing with its load; instruction counts do not. This runs
bench/inprocess.py (the ASGI application driven in-process against the fake upstream, the log flushed at the
end) under `valgrind --tool=callgrind --instr-atstart=no` in each tree, counting only the measured requests and
their log flush, and prints instructions per request for each and the change. Slow: a few minutes.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.ab import extract  # noqa: E402


def count(tree: Path, args, out: Path) -> int:
    command = ["valgrind", "--tool=callgrind", "--instr-atstart=no", f"--callgrind-out-file={out}"]
    command += [sys.executable, str(ROOT / "bench" / "inprocess.py"), "--callgrind"]
    command += ["--requests", str(args.requests), "--warmup", str(args.warmup)] + (["--stream"] if args.stream else [])
    env = dict(os.environ, PYTHONHASHSEED="0")
    done = subprocess.run(command, cwd=tree, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"{tree}: {done.stderr[-3000:]}")
    totals = [int(m) for m in re.findall(r"^(?:summary|totals): (\d+)", out.read_text(), re.M)]
    return max(totals)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--base", default="main")
    parser.add_argument("--other", help="a commit for B instead of the working tree")
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--warmup", type=int, default=100)
    parser.add_argument("--stream", action="store_true")
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="rainymodel-instructions-"))
    trees = {"A": extract(args.base, workdir / "a"), "B": extract(args.other, workdir / "b") if args.other else ROOT}
    per_request = {}
    for name, tree in trees.items():
        per_request[name] = count(tree, args, workdir / f"{name}.callgrind") / args.requests
    mode = "stream" if args.stream else "non-stream"
    a, b = per_request["A"], per_request["B"]
    print(f"{mode}, {args.requests} requests after {args.warmup}: instructions per request (callgrind)")
    print(f"| A = {args.base} | B = {args.other or 'working tree'} | change |")
    print("|---:|---:|---:|")
    print(f"| {a:,.0f} | {b:,.0f} | {(b - a) / a * 100:+.1f} % |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
