"""Memory over a long training run: resident memory (RSS) against environment steps.

    python benchmarks/memory_curve.py CONFIG [overrides...] --run-dir runs/memory -o docs/memory_curve.png

trains `spikerl train CONFIG overrides run_dir=RUN_DIR` (skip with --analyze-only), then reads the
`perf/rss_mib` and `perf/peak_rss_mib` curves the training loop logs to TensorBoard every 1000 steps,
writes them to RUN_DIR/memory.csv and a plot, and prints the growth between the first logged point
after warm-up and the end of the run. Linux only (the loop reads /proc/self/statm).
"""

from __future__ import annotations

import argparse
import csv
import subprocess
import sys
from pathlib import Path


def read_memory_curve(run_dir: Path) -> list[tuple[int, float, float]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run_dir / "tb"), size_guidance={"scalars": 0})
    events.Reload()
    tags = events.Tags()["scalars"]
    if "perf/rss_mib" not in tags:
        sys.exit(f"memory_curve: {run_dir}/tb has no perf/rss_mib scalars (not Linux, or under 1000 steps?)")
    peak = {e.step: e.value for e in events.Scalars("perf/peak_rss_mib")}
    return [(e.step, e.value, peak.get(e.step, float("nan"))) for e in events.Scalars("perf/rss_mib")]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("config")
    parser.add_argument("overrides", nargs="*")
    parser.add_argument("--run-dir", required=True)
    parser.add_argument("--analyze-only", action="store_true", help="read an existing run folder, train nothing")
    parser.add_argument("--warmup-steps", type=int, default=10_000, help="growth is measured from this step on")
    parser.add_argument("-o", "--output", default="memory_curve.png")
    args = parser.parse_args()
    run_dir = Path(args.run_dir)
    if not args.analyze_only:
        command = [sys.executable, "-m", "spikerl.cli", "train", args.config, *args.overrides, f"run_dir={run_dir}"]
        print("running:", " ".join(command), flush=True)
        if subprocess.call(command) != 0:
            return 1

    curve = read_memory_curve(run_dir)
    with (run_dir / "memory.csv").open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["global_step", "rss_mib", "peak_rss_mib"])
        writer.writerows(curve)
    after_warmup = [point for point in curve if point[0] >= args.warmup_steps] or curve
    first, last = after_warmup[0], after_warmup[-1]
    largest = max(point[1] for point in after_warmup)
    growth_per_100k = (last[1] - first[1]) / max(last[0] - first[0], 1) * 100_000
    print(f"RSS at step {curve[0][0]}: {curve[0][1]:.1f} MiB; at step {first[0]}: {first[1]:.1f} MiB; "
          f"at step {last[0]}: {last[1]:.1f} MiB; largest after step {first[0]}: {largest:.1f} MiB; "
          f"peak (VmHWM) {max(p[2] for p in curve):.1f} MiB; growth {growth_per_100k:+.1f} MiB per 100k steps")

    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 3.5))
    ax.plot([p[0] for p in curve], [p[1] for p in curve], label="resident memory (RSS)")
    ax.plot([p[0] for p in curve], [p[2] for p in curve], "--", label="peak RSS so far")
    ax.set_xlabel("environment steps")
    ax.set_ylabel("MiB")
    ax.set_ylim(0, max(p[2] for p in curve) * 1.2)  # from zero: flatness at true scale, legend below the line
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    ax.set_title(f"memory of `spikerl train {Path(args.config).name}`")
    fig.tight_layout()
    fig.savefig(args.output, dpi=120)
    print(f"wrote {run_dir / 'memory.csv'} and {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
