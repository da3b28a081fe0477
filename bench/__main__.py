"""``python -m bench [name ...]``: run the benchmarks (all by default) and print one line each."""

from __future__ import annotations

import importlib
import json
import sys

BENCHES = ["codec", "embedded_pipeline", "memory", "psi_vs_evidently", "kafka_pipeline", "up_http", "scale_out",
           "overload", "detection"]


def main(argv: list[str]) -> int:
    results = []
    for name in argv or BENCHES:
        results.append(importlib.import_module(f"bench.{name}").run())
    print(json.dumps(results))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
