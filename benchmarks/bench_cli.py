"""How long ``perturbscope --help`` and ``perturbscope COMMAND --help`` take, start-up included.

Each command line runs in a fresh subprocess (``python -m perturbscope ...`` with this
interpreter), ``--runs`` times after one warm-up run; the median wall time is printed, with the
minimum and maximum. With ``--farm-bench`` the same command lines are also timed by the
``farm-bench`` program when it is on PATH (its own process accounting; median of its runs).

    python benchmarks/bench_cli.py                  # all commands, 7 runs each
    python benchmarks/bench_cli.py --runs 5 --commands audit theory --farm-bench

Also reports which heavy modules (torch, pandas, scipy, matplotlib) building the parser
imports: none is the goal (``tests/test_cli_options.py`` checks it).
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import time

COMMANDS = ("train", "audit", "demo", "universal", "categorize", "rare-event", "reproduce", "harmless",
            "noise-training", "report", "theory", "bounds")
HEAVY = ("torch", "pandas", "scipy", "matplotlib")


def time_command(argv: list[str], runs: int) -> list[float]:
    """Wall seconds of ``argv`` (fresh process each time) over ``runs`` runs after one warm-up."""
    subprocess.run(argv, capture_output=True, check=False)
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        proc = subprocess.run(argv, capture_output=True, check=False)
        times.append(time.perf_counter() - t0)
        if proc.returncode != 0:
            raise RuntimeError(f"{' '.join(argv)} exited with {proc.returncode}: "
                               f"{proc.stderr.decode()[-500:]}")
    return times


def farm_bench(argv: list[str], runs: int) -> str:
    """``farm-bench``'s line of median wall seconds for ``argv`` (or why there is none)."""
    exe = shutil.which("farm-bench")
    if exe is None:
        return "farm-bench not on PATH"
    proc = subprocess.run([exe, "-n", str(runs), "--timeout", "300", "--", *argv], capture_output=True,
                          text=True, check=False)
    for line in proc.stdout.splitlines():
        if line.strip().startswith("A wall s"):
            parts = line.split()
            return f"farm-bench wall s: min {parts[3]}, median {parts[4]}, max {parts[5]}"
    return f"farm-bench gave no wall line (exit {proc.returncode}): {proc.stdout[-300:]}{proc.stderr[-300:]}"


def heavy_imports() -> list[str]:
    code = ("import sys; import perturbscope.cli.main as m; m.build_parser(); "
            f"print(','.join(k for k in {HEAVY!r} if k in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return [m for m in out.stdout.strip().split(",") if m]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=7, help="timed runs per command line (default: 7)")
    ap.add_argument("--commands", nargs="*", default=list(COMMANDS), help="commands whose --help is timed")
    ap.add_argument("--farm-bench", action="store_true", help="also time each line with farm-bench")
    args = ap.parse_args()
    base = [sys.executable, "-m", "perturbscope"]
    lines = [["--help"]] + [[c, "--help"] for c in args.commands]
    print(f"python: {sys.executable}; {args.runs} runs per line after 1 warm-up; wall seconds")
    print(f"heavy modules imported by building the parser: {heavy_imports() or 'none'}")
    bare = time_command([sys.executable, "-c", "pass"], args.runs)
    print(f"{'python -c pass':<34} median {statistics.median(bare):6.3f}  (min {min(bare):.3f}, "
          f"max {max(bare):.3f})  interpreter start-up alone")
    worst = 0.0
    for extra in lines:
        t = time_command(base + extra, args.runs)
        med = statistics.median(t)
        worst = max(worst, med)
        label = "perturbscope " + " ".join(extra)
        print(f"{label:<34} median {med:6.3f}  (min {min(t):.3f}, max {max(t):.3f})")
        if args.farm_bench:
            print(f"{'':<34} {farm_bench(base + extra, args.runs)}")
    print(f"slowest median: {worst:.3f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
