"""`bench/run.py`, with RainyModel started by the Makefile's `make run` flags (the limited HTTP protocol of
rainymodel_site/http_protocol.py) instead of uvicorn's defaults: run both and compare to see what the limits cost.

    python bench/run.py --requests 1000 --warmup 100 --duration 5
    python bench/run_with_make_flags.py --requests 1000 --warmup 100 --duration 5
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import bench.run as run  # noqa: E402
from bench.hostile import run_command_args  # noqa: E402


class MakeRunServer(run.RainyModelServer):
    def __init__(self, *args, **kwargs):
        kwargs.setdefault("extra_args", run_command_args())
        super().__init__(*args, **kwargs)


if __name__ == "__main__":
    run.RainyModelServer = MakeRunServer
    sys.exit(run.main(sys.argv[1:]))
