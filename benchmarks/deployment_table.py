"""The deployment table of docs/deployment.md: float vs fixed-point return, spikes, operations, energy.

    python benchmarks/deployment_table.py RUN_DIR [RUN_DIR...] [--episodes 20] [--weight-bits 8 6 4]

For each trained spiking run: the float policy's deterministic return (with its spikes counted),
the return of the policy exported to NIR and loaded back, and the fixed-point return at each
weight width (12-bit decays, 24-bit states); then one Markdown table. The same figures come from
`spikerl eval RUN --quantize`, `spikerl export` + `spikerl eval FILE.nir` and `spikerl energy RUN`.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from spikerl.deploy.energy import SpikeRecorder, energy_report
from spikerl.deploy.nir_io import load_nir_policy, policy_to_nir, write_nir
from spikerl.deploy.quantize import QuantizationSpec, quantized_policy
from spikerl.rl.evaluate import evaluate, load_policy


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dirs", nargs="+")
    parser.add_argument("--episodes", type=int, default=20)
    parser.add_argument("--seed", type=int, default=10_000)
    parser.add_argument("--weight-bits", type=int, nargs="+", default=[8, 6])
    args = parser.parse_args()

    widths = " | ".join(f"{b}-bit return" for b in args.weight_bits)
    print(f"| policy | T | float return | NIR round-trip return | {widths} | spikes / neuron / step | spikes / decision "
          "| synaptic ops / decision (+ input MACs) | ANN twin MACs | energy SNN / ANN (nJ) |")
    print("|---|---|---|---|" + "---|" * len(args.weight_bits) + "---|---|---|---|---|")
    for run_dir in map(Path, args.run_dirs):
        cfg, policy = load_policy(run_dir)
        net = policy.net
        policy.net = recorder = SpikeRecorder(net)
        float_result = evaluate(policy.act, cfg.env_id, args.episodes, args.seed, env_kwargs=cfg.env_kwargs)
        policy.net = net
        report = energy_report(net, recorder)
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "policy.nir"
            write_nir(policy_to_nir(cfg, policy), path)
            _, imported = load_nir_policy(path)
        nir_result = evaluate(imported.act, cfg.env_id, args.episodes, args.seed, env_kwargs=cfg.env_kwargs)
        fixed = []
        for bits in args.weight_bits:
            q = quantized_policy(policy, QuantizationSpec(weight_bits=bits))
            r = evaluate(q.act, cfg.env_id, args.episodes, args.seed, env_kwargs=cfg.env_kwargs)
            fixed.append(f"{r['mean_return']:.1f} +- {r['std_return']:.1f}")
        rates = ", ".join(f"{r:.3f}" for r in report.spikes_per_neuron_per_step)
        print(f"| {cfg.env_id} {cfg.algo.upper()} ({run_dir.name}) | {net.timesteps} "
              f"| {float_result['mean_return']:.1f} +- {float_result['std_return']:.1f} "
              f"| {nir_result['mean_return']:.1f} +- {nir_result['std_return']:.1f} | {' | '.join(fixed)} | {rates} "
              f"| {report.spikes_per_decision:.0f} | {report.synaptic_ops_per_decision:.0f} (+ {report.input_macs_per_decision}) "
              f"| {report.ann_macs_per_decision} | {report.snn_energy_pj / 1e3:.1f} / {report.ann_energy_pj / 1e3:.1f} |",
              flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
