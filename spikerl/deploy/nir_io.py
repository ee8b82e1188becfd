"""NIR export and import of spiking policies.

A spiking MLP becomes the chain

    input -> fc0 (Affine | Linear) -> lif0 (CubaLIF) -> ... -> readout_fc (Affine | Linear)
          -> readout (I | LI | CubaLI) -> output

with per-neuron parameter arrays. NIR's equations are continuous; spikerl's steps are their
forward-Euler discretization with step dt, under which retention alpha, beta and threshold theta are

    tau_syn = dt / (1 - alpha)   w_in = 1 / (1 - alpha)
    tau_mem = dt / (1 - beta)    r    = 1 / (1 - beta)      v_leak = 0, v_reset = 0, v_threshold = theta

so that I[t] = alpha I[t-1] + W x[t] + b and V[t] = beta V[t-1] + I[t]. The integrator readout
(alpha 0, beta 1) is NIR's `I` with r = 1 / dt, a readout without current memory its `LI`. dt is
1e-4, the value snnTorch's importer assumes. What NIR cannot say (the observation normalization,
the two-neuron split, T steps per decision from a zero state, the tanh and action scaling) is
written into the graph's metadata and applied by `load_nir_policy`.
"""

from __future__ import annotations

import io
import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from torch import nn

from spikerl.errors import SpikerlError
from spikerl.fileio import atomic_write_bytes

DT = 1e-4
FORMAT = "spikerl-nir-1"
DISCRETIZATION = ("forward Euler with step dt: I[t] = alpha I[t-1] + W x[t] + b, V[t] = beta V[t-1] + I[t] "
                  "(the new current drives the new voltage in the same step), spike when V[t] > v_threshold, "
                  "then V[t] = v_reset; alpha = 1 - dt / tau_syn, beta = 1 - dt / tau_mem")
DECISION = ("every decision starts all states at zero and runs T = `timesteps` steps with the same encoded input "
            "at each step; the policy output is the readout's membrane potential after step T")
ENCODERS = {
    "two_neuron": "input = [max(o / m, 0), max(-o / m, 0)] for observation o (2 x obs_dim inputs)",
    "direct": "input = o / m",
}


def _nir():
    try:
        import nir
    except ImportError:
        raise SpikerlError("NIR export and import need the `nir` package: pip install 'spikerl[deploy]'") from None
    return nir


def _f64(tensor: torch.Tensor, size: int) -> np.ndarray:
    """Per-neuron float64 array (so alpha -> tau -> alpha gives back the same float32 value)."""
    return np.broadcast_to(tensor.detach().double().cpu().numpy(), (size,)).copy()


def _affine(nir, layer: nn.Linear):
    weight = layer.weight.detach().cpu().numpy().astype(np.float32)
    if layer.bias is None:
        return nir.Linear(weight=weight)
    return nir.Affine(weight=weight, bias=layer.bias.detach().cpu().numpy().astype(np.float32))


def _cuba(alpha: np.ndarray, beta: np.ndarray) -> dict[str, np.ndarray]:
    """CubaLIF/CubaLI parameters whose forward-Euler step with DT is I = alpha I + x, V = beta V + I."""
    return {"tau_syn": DT / (1 - alpha), "tau_mem": DT / (1 - beta), "r": 1 / (1 - beta),
            "v_leak": np.zeros_like(beta), "w_in": 1 / (1 - alpha)}


def _cuba_lif(nir, membrane, name: str):
    alpha, beta, theta = (_f64(p, membrane.size) for p in (membrane.alpha, membrane.beta, membrane.theta))
    if (alpha >= 1).any() or (beta >= 1).any():
        raise SpikerlError(f"{name} has neurons with alpha or beta = 1 (no leak), which NIR's CubaLIF cannot express")
    return nir.CubaLIF(**_cuba(alpha, beta), v_threshold=theta, v_reset=np.zeros_like(theta))


def _readout(nir, alpha: np.ndarray, beta: np.ndarray):
    if (beta == 1).all() and (alpha == 0).all():
        return nir.I(r=np.full_like(beta, 1 / DT))
    if (beta >= 1).any() or (alpha >= 1).any():
        raise SpikerlError("the readout has alpha or beta = 1 with a leak elsewhere, which no NIR node expresses")
    if (alpha == 0).all():
        return nir.LI(tau=DT / (1 - beta), r=1 / (1 - beta), v_leak=np.zeros_like(beta))
    return nir.CubaLI(**_cuba(alpha, beta))


def policy_to_nir(cfg, policy: nn.Module):
    """The NIR graph of a trained spiking policy (a DQN QPolicy or a TD3 Actor) and its config."""
    from spikerl.config import config_to_dict
    from spikerl.snn.decoders import MembraneDecoder
    from spikerl.snn.network import SpikingMLP

    nir = _nir()
    net = policy.net
    if not isinstance(net, SpikingMLP):
        raise SpikerlError("this run trained an ANN (network.kind=ann); only spiking networks export to NIR")
    if cfg.network.encoder not in ENCODERS or not isinstance(net.decoder, MembraneDecoder):
        raise SpikerlError(f"NIR export covers the encoders {', '.join(ENCODERS)} and the membrane and integrator "
                           f"decoders; this network uses encoder={cfg.network.encoder}, decoder={cfg.network.decoder}")
    if any(n.reset != "hard" for n in net.neurons):
        raise SpikerlError("NIR's CubaLIF resets to v_reset; reset=subtract has no NIR equivalent")

    nodes = {"input": nir.Input(input_type={"input": np.array([net.encoder.out_features])})}
    edges, previous = [], "input"
    for i, (layer, neurons) in enumerate(zip(net.layers, net.neurons)):
        nodes[f"fc{i}"], nodes[f"lif{i}"] = _affine(nir, layer), _cuba_lif(nir, neurons.membrane, f"hidden layer {i}")
        edges += [(previous, f"fc{i}"), (f"fc{i}", f"lif{i}")]
        previous = f"lif{i}"
    out_dim = net.decoder.fc.out_features
    nodes["readout_fc"] = _affine(nir, net.decoder.fc)
    nodes["readout"] = _readout(nir, _f64(net.decoder.alpha, out_dim), _f64(net.decoder.beta, out_dim))
    nodes["output"] = nir.Output(output_type={"output": np.array([out_dim])})
    edges += [(previous, "readout_fc"), ("readout_fc", "readout"), ("readout", "output")]

    metadata = {
        "producer": "spikerl", "format": FORMAT, "dt": DT, "discretization": DISCRETIZATION, "decision": DECISION,
        "timesteps": int(net.timesteps), "encoder": cfg.network.encoder, "encoder_equation": ENCODERS[cfg.network.encoder],
        "algo": cfg.algo, "env_id": cfg.env_id, "spikerl_config": json.dumps(config_to_dict(cfg)),
    }
    metadata.update(_observation_metadata(policy.obs_norm))
    if cfg.algo == "ppo":
        metadata["output_transform"] = ("logits = V; action = argmax" if policy.discrete else
                                        "action = clip(V, action_low, action_high) (V is the mean of PPO's Gaussian "
                                        "policy; its log-std, used only while training, is not exported)")
        if not policy.discrete:
            metadata["action_low"] = policy.action_low.cpu().numpy().astype(np.float32)
            metadata["action_high"] = policy.action_high.cpu().numpy().astype(np.float32)
    elif cfg.algo in ("td3", "sac"):
        metadata["output_transform"] = ("action = action_scale * tanh(V) + action_offset" if cfg.algo == "td3" else
                                        "action = action_scale * tanh(V[:n]) + action_offset, n action dimensions "
                                        "(V[n:] is the log-std of SAC's exploration, unused when acting)")
        metadata["action_scale"] = policy.action_scale.cpu().numpy().astype(np.float32)
        metadata["action_offset"] = policy.action_offset.cpu().numpy().astype(np.float32)
    else:
        metadata["output_transform"] = "Q-values = V; action = argmax"
    return nir.NIRGraph(nodes=nodes, edges=edges, metadata=metadata)


def _observation_metadata(obs_norm) -> dict:
    """How observations o become the `o / m` of the encoders: a running max |o| (m = obs_max_abs), or a running
    mean and variance (o first replaced by clip((o - obs_mean) / sqrt(obs_var + 1e-8), -obs_clip, obs_clip), m = 1)."""
    from spikerl.snn.encoders import RunningMeanStd

    if not obs_norm.enabled:
        return {"observation_scale": "m = 1 (none)"}
    if isinstance(obs_norm, RunningMeanStd):
        return {"observation_scale": "o -> clip((o - obs_mean) / sqrt(obs_var + 1e-8), -obs_clip, obs_clip), m = 1",
                "obs_mean": obs_norm.mean.detach().cpu().numpy(), "obs_var": obs_norm.var.detach().cpu().numpy(),
                "obs_clip": float(obs_norm.clip)}
    return {"observation_scale": "m = obs_max_abs per component",
            "obs_max_abs": obs_norm.max_abs.detach().cpu().numpy().astype(np.float32)}


def write_nir(graph, path: Path) -> None:
    nir = _nir()
    path = Path(path)
    encoded = io.BytesIO()
    nir.write(encoded, graph)
    try:
        atomic_write_bytes(path, encoded.getbuffer())
    except OSError as exc:
        raise SpikerlError(f"cannot write {path}: {exc.strerror or exc}") from None


# ----------------------------------------------------------------------------- import


def _meta_value(value):
    if isinstance(value, bytes):
        return value.decode()
    if isinstance(value, np.ndarray) and value.dtype.kind in "SO" and value.ndim == 0:
        return _meta_value(value[()])
    return value


def read_nir(path: Path):
    nir = _nir()
    path = Path(path)
    if not path.is_file():
        raise SpikerlError(f"NIR file not found: {path}")
    try:
        return nir.read(path)
    except Exception as exc:  # h5py and nir raise many kinds for a damaged or foreign file
        raise SpikerlError(f"{path} is not a readable NIR file ({type(exc).__name__}: {str(exc).splitlines()[0]})") from None


def _chain(graph) -> list[tuple[str, object]]:
    """The nodes from input to output along the graph's single path; anything else is refused."""
    successors: dict[str, list[str]] = {}
    for src, dst in graph.edges:
        successors.setdefault(src, []).append(dst)
    starts = [name for name, node in graph.nodes.items() if type(node).__name__ == "Input"]
    if len(starts) != 1:
        raise SpikerlError(f"spikerl runs NIR graphs with one Input node; this one has {len(starts)}")
    chain, name = [], starts[0]
    while True:
        chain.append((name, graph.nodes[name]))
        nxt = successors.get(name, [])
        if not nxt:
            break
        if len(nxt) > 1 or len(chain) > len(graph.nodes):
            raise SpikerlError(f"NIR node {name!r} feeds {len(nxt)} nodes; spikerl runs a single feed-forward chain")
        name = nxt[0]
    return chain


def _discrete(node, name: str, kind: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(alpha, beta, input scale) of a CubaLIF/CubaLI/LI/I node under forward Euler with step DT."""
    if kind == "I":
        r = np.asarray(node.r, dtype=np.float64)
        return np.zeros_like(r), np.ones_like(r), r * DT
    if kind == "LI":
        tau, r = np.asarray(node.tau, np.float64), np.asarray(node.r, np.float64)
        alpha, beta, w_in = np.zeros_like(tau), 1 - DT / tau, np.ones_like(tau)
    else:
        tau_syn, tau_mem = np.asarray(node.tau_syn, np.float64), np.asarray(node.tau_mem, np.float64)
        r, w_in = np.asarray(node.r, np.float64), np.asarray(node.w_in, np.float64)
        alpha, beta = 1 - DT / tau_syn, 1 - DT / tau_mem
    if not np.allclose(node.v_leak, 0):
        raise SpikerlError(f"NIR node {name!r} has v_leak != 0, which spikerl's neurons do not have")
    if (alpha < 0).any() or (beta < 0).any():
        raise SpikerlError(f"NIR node {name!r} has time constants below dt = {DT}, which forward Euler cannot step")
    # I = alpha I + (1 - alpha) w_in W x; V = beta V + (1 - beta) r I: fold both gains into the weights.
    return alpha, beta, (1 - alpha) * w_in * (1 - beta) * r


def nir_metadata(path: Path) -> dict:
    """A NIR file's graph metadata as plain Python values."""
    return {k: _meta_value(v) for k, v in (read_nir(path).metadata or {}).items()}


def stored_config(meta: dict) -> dict:
    """The spikerl config a graph's metadata records (`nir_metadata`); empty for a graph made elsewhere."""
    return json.loads(meta["spikerl_config"]) if "spikerl_config" in meta else {}


def load_nir_policy(path: Path, env_id: str | None = None, backend: str = "auto", device: str = "cpu"):
    """(config, policy) from a NIR file: a spiking network spikerl can run, wrapped like a trained policy,
    its layers on `backend` and `device`."""
    from spikerl.config import NetworkConfig, TrainConfig, config_from_dict
    from spikerl.devices import resolve_device
    from spikerl.rl import algorithm_module
    from spikerl.rl.envs import env_kwargs_for, make_env

    graph = read_nir(path)
    meta = {k: _meta_value(v) for k, v in (graph.metadata or {}).items()}
    chain = _chain(graph)
    kinds = [type(node).__name__ for _, node in chain]
    body = chain[1:-1] if kinds[-1] == "Output" else chain[1:]
    layers = [body[i:i + 2] for i in range(0, len(body), 2)]
    for pair in layers:
        names = [type(node).__name__ for _, node in pair]
        if len(pair) != 2 or names[0] not in ("Affine", "Linear") or names[1] not in ("CubaLIF", "CubaLI", "LI", "I"):
            bad = next(((n, k) for (n, _), k in zip(pair, names) if k not in ("Affine", "Linear", "CubaLIF", "CubaLI", "LI", "I")),
                       (pair[0][0], names[0]))
            raise SpikerlError(f"NIR node {bad[0]!r} of type {bad[1]} is not something spikerl can run: it runs "
                               "chains of Affine/Linear -> CubaLIF layers ending in Affine/Linear -> I, LI or CubaLI")
    hidden, readout = layers[:-1], layers[-1]
    if not hidden or any(type(p[1][1]).__name__ != "CubaLIF" for p in hidden):
        raise SpikerlError("spikerl runs NIR graphs whose hidden layers are CubaLIF nodes, followed by a non-spiking readout")
    if type(readout[1][1]).__name__ == "CubaLIF":
        raise SpikerlError("the graph ends in spiking CubaLIF neurons; spikerl needs a non-spiking readout (I, LI or CubaLI)")
    if "timesteps" not in meta:
        raise SpikerlError(f"{path} does not record the steps per decision (graph metadata 'timesteps'); "
                           "spikerl needs it to run the graph")
    if abs(float(meta.get("dt", DT)) - DT) > 1e-12:
        raise SpikerlError(f"{path} was made with dt = {meta['dt']}; spikerl steps NIR graphs with dt = {DT}")

    stored = stored_config(meta)
    env_id = env_id or meta.get("env_id")
    if not env_id:
        raise SpikerlError(f"{path} does not name its environment; pass --env")
    env_kwargs = env_kwargs_for(env_id, meta.get("env_id"), stored.get("env_kwargs"))
    env = make_env(env_id, meta.get("algo"), env_kwargs=env_kwargs)  # a graph that names its algorithm must suit the action space
    algo = meta.get("algo") or ("dqn" if hasattr(env.action_space, "n") else "td3")
    obs_dim = env.observation_space.shape[0]
    encoder = meta.get("encoder", "direct")
    if encoder not in ENCODERS:
        raise SpikerlError(f"{path} uses encoder {encoder!r}; spikerl runs {', '.join(ENCODERS)} from NIR")
    in_features = (2 if encoder == "two_neuron" else 1) * obs_dim
    first = np.asarray(hidden[0][0][1].weight)
    if first.shape[1] != in_features:
        raise SpikerlError(f"the graph's first layer takes {first.shape[1]} inputs; {env_id} with the {encoder} "
                           f"encoder gives {in_features}")

    net_cfg = NetworkConfig(
        kind="snn", backend=backend, hidden=[int(np.asarray(p[0][1].weight).shape[0]) for p in hidden], timesteps=int(meta["timesteps"]),
        encoder=encoder, normalize_obs="obs_max_abs" in meta or "obs_mean" in meta,
        obs_normalizer="mean_std" if "obs_mean" in meta else "max_abs", obs_clip=float(meta.get("obs_clip", 10.0)),
        decoder="integrator" if type(readout[1][1]).__name__ == "I" else "membrane",
        bias=any(type(node).__name__ == "Affine" for pair in layers for _, node in pair))
    base = config_from_dict(stored, stored=True) if stored else TrainConfig()
    cfg = replace(base, algo=algo, env_id=env_id, env_kwargs=env_kwargs, network=replace(net_cfg, neuron=replace(base.network.neuron,
                  randomize="none", learnable=False, reset="hard")))
    policy = algorithm_module(algo).make_policy(cfg, env)  # on the CPU while the graph's values load
    env.close()

    net = policy.net
    with torch.no_grad():
        for (fc_name, fc), (lif_name, lif), layer, membrane in zip(
                (p[0] for p in hidden), (p[1] for p in hidden), net.layers, (n.membrane for n in net.neurons)):
            alpha, beta, gain = _discrete(lif, lif_name, "CubaLIF")
            if not np.allclose(lif.v_reset, 0):
                raise SpikerlError(f"NIR node {lif_name!r} resets to v_reset != 0; spikerl resets to 0")
            _load_affine(layer, fc, gain)
            membrane.alpha_fixed.copy_(torch.as_tensor(alpha))
            membrane.beta_fixed.copy_(torch.as_tensor(beta))
            membrane.theta_fixed.copy_(torch.as_tensor(np.asarray(lif.v_threshold, np.float64)))
        (fc_name, fc), (ro_name, ro) = readout
        alpha, beta, gain = _discrete(ro, ro_name, type(ro).__name__)
        _load_affine(net.decoder.fc, fc, gain)
        net.decoder.readout.alpha = torch.as_tensor(alpha, dtype=torch.float32)
        net.decoder.readout.beta = torch.as_tensor(beta, dtype=torch.float32)
        if "obs_max_abs" in meta:
            policy.obs_norm.max_abs.copy_(torch.as_tensor(np.asarray(meta["obs_max_abs"], np.float32)))
        if "obs_mean" in meta:
            policy.obs_norm.mean.copy_(torch.as_tensor(np.asarray(meta["obs_mean"], np.float64)))
            policy.obs_norm.var.copy_(torch.as_tensor(np.asarray(meta["obs_var"], np.float64)))
        if algo in ("td3", "sac") and "action_scale" in meta:
            policy.action_scale.copy_(torch.as_tensor(np.asarray(meta["action_scale"], np.float32)))
            policy.action_offset.copy_(torch.as_tensor(np.asarray(meta["action_offset"], np.float32)))
        if algo == "ppo" and "action_low" in meta:
            policy.action_low.copy_(torch.as_tensor(np.asarray(meta["action_low"], np.float32)))
            policy.action_high.copy_(torch.as_tensor(np.asarray(meta["action_high"], np.float32)))
    torch_device = resolve_device(device)
    policy.to(torch_device)
    policy.net.set_backend(backend, torch_device)
    policy.eval()
    return cfg, policy


def _load_affine(layer: nn.Linear, node, gain: np.ndarray) -> None:
    weight = np.asarray(node.weight, dtype=np.float64)
    if weight.shape != tuple(layer.weight.shape):
        raise SpikerlError(f"NIR weight of shape {weight.shape} where spikerl expects {tuple(layer.weight.shape)}")
    exact = np.allclose(gain, 1.0, rtol=1e-9, atol=0.0)  # spikerl's own graphs: weights come back bit for bit
    layer.weight.copy_(torch.as_tensor(weight if exact else weight * gain[:, None]))
    bias = getattr(node, "bias", None)
    if layer.bias is not None:
        layer.bias.copy_(torch.as_tensor(np.zeros(weight.shape[0]) if bias is None else
                                         (np.asarray(bias, np.float64) * (1 if exact else gain))))
