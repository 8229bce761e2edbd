"""`make bench`: run the benchmarks, each writing benchmarks/results/<name>.json.

python -m benchmarks                    # speed (minutes), then the learning benchmarks (hours)
python -m benchmarks speed batched_mpe  # only these
"""

from __future__ import annotations

import subprocess
import sys

# Fast first: a speed table within minutes, then the long learning runs.
ORDER = [
    "speed",
    "vs_reference",
    "allreduce",
    "batched_mpe",
    "mpe_speed",
    "stacked",
    "speaker_listener",
    "simple_spread",
    "simple_reference",
    "competitive",
    "evolution",
    "learning",
    "mpe_suite",  # last: reads simple_spread, learning and competitive
]


def main() -> None:
    chosen = sys.argv[1:] or ORDER
    unknown = [name for name in chosen if name not in ORDER]
    if unknown:
        sys.exit(f"benchmarks: unknown benchmark {unknown[0]!r}; known: {', '.join(ORDER)}")
    for name in chosen:
        print(f"== benchmarks.{name}", flush=True)
        subprocess.run([sys.executable, "-m", f"benchmarks.{name}"], check=True)


if __name__ == "__main__":
    main()
