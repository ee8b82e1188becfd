"""spikerl tune: search spaces, TPE trials as ordinary runs, pruning, several objectives, workers sharing
a study through a journal file or PostgreSQL, a worker killed mid-trial, presets that retrain, bad input."""

import json
import os
import signal
import subprocess
import sys
import time
import uuid

import pytest

optuna = pytest.importorskip("optuna")

from spikerl.errors import SpikerlError  # noqa: E402
from spikerl.tune.space import Param, load_space, overrides_from_params, parse_param, suggest  # noqa: E402
from tests.conftest import ROOT  # noqa: E402

TINY = ["configs/cartpole_dqn_snn.yaml", "total_steps=800", "dqn.learning_starts=100", "eval.every=400",
        "eval.episodes=2", "eval.final_episodes=3", "network.hidden=[16, 16]", "checkpoint_every=0"]
BETA = ["--param", "network.neuron.beta=float:0.1:0.9"]
POSTGRES_URL = os.environ.get("SPIKERL_TEST_POSTGRES_URL")


def load(storage: str, name: str):
    from spikerl.tune.storage import open_storage

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    return optuna.load_study(study_name=name, storage=open_storage(storage, ROOT, 30))


# ----------------------------------------------------------------------------- search spaces


def test_params_parse_from_the_command_line_and_from_yaml(tmp_path):
    assert parse_param("network.neuron.theta=float:0.05:2:log") == Param("network.neuron.theta", "float", 0.05, 2.0, log=True)
    assert parse_param("network.timesteps=int:2:16") == Param("network.timesteps", "int", 2, 16)
    assert parse_param("network.encoder=choice:direct,two_neuron").choices == ["direct", "two_neuron"]
    assert parse_param("network.neuron.alpha=float:0:0.9:per_layer").per_layer
    space_file = tmp_path / "space.yaml"
    space_file.write_text("network.neuron.alpha: {low: 0.0, high: 0.9, per_layer: true}\n"
                          "dqn.learning_rate: {low: 1.0e-4, high: 1.0e-2, log: true}\n"
                          "network.encoder: {choices: [direct, two_neuron]}\n")
    space = load_space(str(space_file), ["dqn.learning_rate=float:0.001:0.002"])  # --param wins over the file
    assert [p.key for p in space] == ["network.neuron.alpha", "dqn.learning_rate", "network.encoder"]
    assert (space[1].low, space[1].high, space[1].log) == (0.001, 0.002, False)

    trial = optuna.trial.FixedTrial({"network.neuron.alpha.0": 0.1, "network.neuron.alpha.1": 0.7,
                                     "dqn.learning_rate": 0.0015, "network.encoder": "direct"})
    overrides = suggest(trial, space, n_layers=2)
    assert overrides == ["network.neuron.alpha=[0.1, 0.7]", "dqn.learning_rate=0.0015", 'network.encoder="direct"']
    assert overrides_from_params(space, trial.params, 2) == overrides
    for bad in ("network.timesteps=2:16", "network.timesteps=int:2", "network.neuron.theta=float:a:b",
                "network.neuron.theta=float:0.1:1:sqrt"):
        with pytest.raises(SpikerlError, match="--param"):
            parse_param(bad)


@pytest.mark.parametrize("param, message", [
    ("network.neuron.bogus=float:0.1:0.9", "unknown config key in network.neuron: 'bogus'"),
    ("dqn.learning_rat=float:0.001:0.01", "unknown config key in dqn: 'learning_rat'"),
    ("network.neuron.beta=float:0.9:0.1", "empty range, low 0.9 is not below high 0.1"),
    ("network.encoder=choice:", "empty list of choices"),
    ("network.neuron.beta=float:0.1:2", "network.neuron.beta must be in [0, 1]"),
    ("env_id=choice:CartPole-v1,Pendulum-v1", "environment Pendulum-v1 has continuous actions"),
])
def test_a_bad_search_space_is_one_line_and_exit_2_before_any_trial(cli, tmp_path, param, message):
    result = cli("tune", *TINY, "--param", param, "--trials", "2", "--out", str(tmp_path / "out"))
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and message in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "out").exists()


def test_environments_are_checked_for_every_choice_of_environment_with_every_other_end():
    from spikerl.errors import SpikerlError
    from spikerl.tune.space import load_space, validate_space

    # The base config is CartPole, but every trial runs on Pendulum: fine.
    validate_space(load_space(None, ["env_id=choice:Pendulum-v1", "ppo.log_std_learning_rate=float:0.0001:0.001"]),
                   "configs/cartpole_ppo_snn.yaml", [])
    with pytest.raises(SpikerlError, match='search space env_id="CartPole-v1", ppo.log_std_learning_rate=0.0001: '
                                           "ppo.log_std_learning_rate is for continuous actions"):
        validate_space(load_space(None, ["env_id=choice:Pendulum-v1,CartPole-v1",
                                         "ppo.log_std_learning_rate=float:0.0001:0.001"]), "configs/pendulum_ppo_snn.yaml", [])


def test_an_unreachable_storage_url_is_one_line_and_exit_2(cli, tmp_path):
    result = cli("tune", *TINY, *BETA, "--trials", "2", "--out", str(tmp_path / "out"),
                 "--storage", "postgresql://spikerl:secret@127.0.0.1:1/nowhere")
    assert result.returncode == 2 and result.stderr.count("\n") == 1, result.stderr
    assert "cannot reach the study storage postgresql://spikerl:***@127.0.0.1:1/nowhere" in result.stderr
    assert "secret" not in result.stderr


def test_bad_tune_options_are_one_line_each(cli, tmp_path):
    cases = [(["tune", *TINY, *BETA, "--trials", "0"], "--trials must be >= 1"),
             (["tune", *TINY, "--trials", "2"], "the search space is empty"),
             (["tune", *TINY, *BETA, "--trials", "2", "--objective", "spikes"], "--objective must be"),
             (["tune", *TINY, *BETA, "--trials", "2", "--space", str(tmp_path / "none.yaml")],
              "search space file not found"),
             (["tune-export", "--storage", str(tmp_path / "none.journal"), "-o", str(tmp_path / "p.yaml")],
              "study journal not found")]
    for args, message in cases:
        result = cli(*args)
        assert result.returncode == 2 and result.stderr.count("\n") == 1 and message in result.stderr, (args, result.stderr)


# ----------------------------------------------------------------------------- trials


def test_two_local_workers_share_a_journal_and_the_best_trial_retrains_from_its_preset(cli, tmp_path):
    out = tmp_path / "tune"
    args = ["tune", *TINY, *BETA, "--param", "network.neuron.theta=float:0.05:1.0:log", "--trials", "3",
            "--workers", "2", "--sampler-seed", "0", "--out", str(out), "--study", "journal-test"]
    result = cli(*args, timeout=600)
    assert result.returncode == 0, result.stderr
    study = load(str(out / "study.journal"), "journal-test")
    done = [t for t in study.trials if t.state.is_finished()]
    assert len(done) == 3 and all(t.state == optuna.trial.TrialState.COMPLETE for t in done)
    assert len({t.user_attrs["worker"] for t in done}) == 2  # both local processes ran trials
    for t in done:  # every trial is an ordinary run folder trained with the drawn values
        config = (out / "trials" / f"t{t.number:04d}" / "s0" / "config.yaml").read_text()
        assert f"beta: {t.params['network.neuron.beta']}" in config
        final = json.loads((out / "trials" / f"t{t.number:04d}" / "s0" / "final_eval.json").read_text())
        assert final["mean_return"] == pytest.approx(t.value)
    assert (out / "trials.csv").read_text().count("COMPLETE") == 3

    # The same command again finds the study complete and runs nothing.
    again = cli(*args, timeout=120)
    assert again.returncode == 0 and "3 complete" in again.stdout and len(load(str(out / "study.journal"), "journal-test").trials) == 3

    # The preset retrains (a plain `spikerl train`) to the best trial's return.
    best = study.best_trial
    assert f"trial {best.number}" in (out / "best.yaml").read_text().splitlines()[0]
    retrain = cli("train", str(out / "best.yaml"), f"run_dir={tmp_path / 'retrain'}", "progress=false")
    assert retrain.returncode == 0, retrain.stderr
    final = json.loads((tmp_path / "retrain" / "final_eval.json").read_text())
    assert final["mean_return"] == pytest.approx(best.value, abs=1e-6)

    # tune-export writes any completed trial the same way.
    other = next(t for t in done if t.number != best.number)
    exported = cli("tune-export", "--storage", str(out / "study.journal"), "--trial", str(other.number),
                   "-o", str(tmp_path / "other.yaml"))
    assert exported.returncode == 0, exported.stderr
    assert f"beta: {other.params['network.neuron.beta']}" in (tmp_path / "other.yaml").read_text()


def test_joining_a_study_with_another_search_space_is_refused(cli, tmp_path):
    out = tmp_path / "tune"
    first = cli("tune", *TINY, *BETA, "--trials", "1", "--out", str(out), "--study", "s")
    assert first.returncode == 0, first.stderr
    other = cli("tune", *TINY, "--param", "network.neuron.beta=float:0.2:0.9", "--trials", "2", "--out", str(out),
                "--study", "s")
    assert other.returncode == 2 and "was created with another space" in other.stderr, other.stderr


def test_a_study_stays_joinable_when_a_default_its_runs_never_read_changes(tmp_path):
    from spikerl.tune.space import parse_param
    from spikerl.tune.storage import open_storage
    from spikerl.tune.study import SPEC_ATTR, TuneSpec, open_study

    spec = TuneSpec(config=str(ROOT / TINY[0]), overrides=TINY[1:], space=[parse_param(BETA[1])])
    storage = open_storage(str(tmp_path / "study.journal"), ROOT, 30)
    study = open_study(spec, storage, "s", 0)

    def stored_with(**network_settings) -> None:
        agreement = json.loads(json.dumps(spec.agreement()))
        agreement["base_config"]["network"].update(network_settings)
        study.set_user_attr(SPEC_ATTR, agreement)

    stored_with(population_std=0.15)  # an older spikerl's default; these runs have no population encoder
    assert open_study(spec, storage, "s", 0).study_name == "s"
    stored_with(timesteps=99)  # a setting the runs read
    with pytest.raises(SpikerlError, match="was created with another base_config"):
        open_study(spec, storage, "s", 0)
    # Where the space searches the encoder, the trials that draw the population encoder read its std.
    spec = TuneSpec(config=spec.config, overrides=spec.overrides,
                    space=[parse_param(BETA[1]), parse_param("network.encoder=choice:two_neuron,population")])
    study = open_study(spec, storage, "with-encoder", 0)
    stored_with(population_std=0.15)
    with pytest.raises(SpikerlError, match="was created with another base_config"):
        open_study(spec, storage, "with-encoder", 0)


def test_pruning_compares_the_same_seed_and_step_and_stops_the_trial(tmp_path):
    """Seed i's evaluation at step s is reported at i x total_steps + s; a trial below the median there stops."""
    from spikerl.tune.storage import open_storage
    from spikerl.tune.study import TuneSpec, open_study, run_worker

    spec = TuneSpec(config=TINY[0], overrides=TINY[1:], space=[Param("network.neuron.beta", "float", 0.1, 0.9)],
                    seeds=[0, 1], pruner="median", prune_after=1)
    study = open_study(spec, open_storage(None, tmp_path, 30), "prune", sampler_seed=0)
    # A finished trial that scored 500 at seed 1's first evaluation (step 800 + 400) and nothing before.
    study.add_trial(optuna.trial.create_trial(
        params={"network.neuron.beta": 0.5}, distributions={"network.neuron.beta": optuna.distributions.FloatDistribution(0.1, 0.9)},
        value=500.0, intermediate_values={1200: 500.0}))
    run_worker(spec, study, tmp_path, n_trials=2, log=lambda line: None)
    trial = study.trials[1]
    assert trial.state == optuna.trial.TrialState.PRUNED
    assert sorted(trial.intermediate_values) == [400, 800, 1200]  # seed 0 ran whole; seed 1 stopped at its first eval
    runs = tmp_path / "trials" / "t0001"
    assert (runs / "s0" / "final_eval.json").is_file()
    assert not (runs / "s1" / "final_eval.json").exists()
    assert (runs / "s1" / "eval.csv").read_text().count("\n") == 2  # header and the one evaluation
    assert "eval mean return" in (runs / "s1.log").read_text()  # the run's messages went to its folder


def test_a_population_trial_trains_its_seeds_in_lockstep_and_prunes_on_their_mean(tmp_path):
    """--population: the seeds train as one population (a folder per seed, as `train --seeds` writes); the pruner
    hears the mean over the seeds at each evaluation step and stops the whole population."""
    from spikerl.tune.storage import open_storage
    from spikerl.tune.study import TuneSpec, open_study, run_worker

    beta = Param("network.neuron.beta", "float", 0.1, 0.9)
    spec = TuneSpec(config=TINY[0], overrides=TINY[1:], space=[beta], seeds=[0, 1], pruner="median",
                    prune_after=1, population=True)
    study = open_study(spec, open_storage(None, tmp_path, 30), "pop", sampler_seed=0)
    run_worker(spec, study, tmp_path, n_trials=1, log=lambda line: None)
    first, runs = study.trials[0], tmp_path / "trials" / "t0000"
    assert first.state == optuna.trial.TrialState.COMPLETE
    assert (runs / "population.yaml").is_file() and "population of 2 agents" in (tmp_path / "trials" / "t0000.log").read_text()
    finals = [json.loads((runs / f"s{seed}" / "final_eval.json").read_text()) for seed in (0, 1)]
    assert all(f["population"]["agents"] == 2 for f in finals)
    assert first.value == pytest.approx((finals[0]["mean_return"] + finals[1]["mean_return"]) / 2)
    evals = [[line.split(",") for line in (runs / f"s{seed}" / "eval.csv").read_text().splitlines()[1:]] for seed in (0, 1)]
    expected = {}
    for a, b in zip(*evals):  # the periodic evaluations (the final one, at step 800 too, comes last)
        expected.setdefault(int(a[0]), (float(a[1]) + float(b[1])) / 2)
    assert first.intermediate_values == pytest.approx(expected) and sorted(expected) == [400, 800]

    # Two finished trials far ahead at step 400: the next population stops there, both seeds at once.
    for _ in range(2):
        study.add_trial(optuna.trial.create_trial(
            params={beta.key: 0.5}, distributions={beta.key: optuna.distributions.FloatDistribution(0.1, 0.9)},
            value=1000.0, intermediate_values={400: 1000.0, 800: 1000.0}))
    run_worker(spec, study, tmp_path, n_trials=4, log=lambda line: None)
    pruned = study.trials[3]
    assert pruned.state == optuna.trial.TrialState.PRUNED and sorted(pruned.intermediate_values) == [400]
    runs = tmp_path / "trials" / "t0003"
    for seed in (0, 1):
        assert not (runs / f"s{seed}" / "final_eval.json").exists()
        assert (runs / f"s{seed}" / "eval.csv").read_text().count("\n") == 2  # header and the one evaluation


def test_return_against_spikes_is_a_two_objective_study(cli, tmp_path):
    out = tmp_path / "tune"
    bad = cli("tune", *TINY, *BETA, "--trials", "2", "--objective", "return,spikes", "--pruner", "median",
              "--out", str(out))
    assert bad.returncode == 2 and "cannot prune a multi-objective study" in bad.stderr
    result = cli("tune", *TINY, *BETA, "--trials", "2", "--objective", "return,spikes", "--spike-episodes", "1",
                 "--seeds", "0,1", "--out", str(out), "--study", "mo", timeout=600)
    assert result.returncode == 0, result.stderr
    study = load(str(out / "study.journal"), "mo")
    assert [d.name for d in study.directions] == ["MAXIMIZE", "MINIMIZE"]
    for t in study.trials:
        assert t.state == optuna.trial.TrialState.COMPLETE
        assert t.values[0] == pytest.approx((t.user_attrs["return_seed0"] + t.user_attrs["return_seed1"]) / 2)
        assert t.values[1] == pytest.approx((t.user_attrs["spikes_seed0"] + t.user_attrs["spikes_seed1"]) / 2)
        assert t.values[1] > 0
    assert "return,spikes" in (out / "trials.csv").read_text().splitlines()[0]
    assert (out / "best.yaml").is_file()


# ----------------------------------------------------------------------------- a worker that dies


def _storage_for(kind: str, tmp_path):
    if kind == "journal":
        return str(tmp_path / "shared.journal")
    if not POSTGRES_URL:
        pytest.skip("SPIKERL_TEST_POSTGRES_URL is not set (.ci/run sets it; scripts/postgres_for_tests.sh "
                    "starts a server and prints it)")
    return POSTGRES_URL


@pytest.mark.parametrize("kind", ["journal", "postgres"])
def test_a_worker_killed_mid_trial_leaves_it_failed_and_the_study_completes(tmp_path, kind):
    storage, name = _storage_for(kind, tmp_path), f"kill-{uuid.uuid4().hex[:8]}"
    args = [sys.executable, "-m", "spikerl.cli", "tune", *TINY, "total_steps=2000", "eval.every=1000", *BETA,
            "--trials", "3", "--storage", storage, "--study", name, "--heartbeat", "2"]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    # Two workers, as two machines would start them: the same command, each with its own folder for runs.
    victim = subprocess.Popen([*args, "--out", str(tmp_path / "a")], cwd=ROOT, env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    survivor = subprocess.Popen([*args, "--out", str(tmp_path / "b")], cwd=ROOT, env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline, killed = time.time() + 180, None
        while killed is None and time.time() < deadline:
            time.sleep(0.3)
            try:
                running = load(storage, name).get_trials(states=(optuna.trial.TrialState.RUNNING,))
            except KeyError:  # the study is not created yet
                continue
            mine = [t for t in running if f":{victim.pid}:" in t.user_attrs.get("worker", "")]
            if mine:
                time.sleep(1.0)  # well inside the trial: its run folder is being trained
                os.kill(victim.pid, signal.SIGKILL)
                killed = mine[0].number
        assert killed is not None, "the first worker never started a trial"
        victim.wait(timeout=30)
        out, err = survivor.communicate(timeout=600)
    finally:
        for proc in (victim, survivor):
            if proc.poll() is None:
                proc.kill()
    assert survivor.returncode == 0, err
    study = load(storage, name)
    states = {t.number: t.state for t in study.trials}
    assert states[killed] == optuna.trial.TrialState.FAIL
    assert str(victim.pid) in study.trials[killed].user_attrs["failed_because"]
    finished = [n for n, s in states.items() if s in (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)]
    assert len(finished) >= 3
    assert not [n for n, s in states.items() if s == optuna.trial.TrialState.RUNNING]


def test_workers_started_together_on_a_fresh_database_all_join(tmp_path):
    """Optuna creates its tables on first contact; workers racing to do so must all get in."""
    if not POSTGRES_URL:
        pytest.skip("SPIKERL_TEST_POSTGRES_URL is not set")
    import psycopg

    base, _, _ = POSTGRES_URL.rpartition("/")
    name = f"spikerl_fresh_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(POSTGRES_URL, autocommit=True) as admin:
        admin.execute(f"CREATE DATABASE {name}")
    try:
        args = [sys.executable, "-m", "spikerl.cli", "tune", *TINY, "total_steps=300", "eval.every=0", *BETA,
                "--trials", "3", "--storage", f"{base}/{name}", "--study", "fresh"]
        workers = [subprocess.Popen([*args, "--out", str(tmp_path / f"w{i}")], cwd=ROOT, stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE, text=True) for i in range(3)]
        results = [w.communicate(timeout=300) for w in workers]
        assert [w.returncode for w in workers] == [0, 0, 0], [err for _, err in results]
        assert len(load(f"{base}/{name}", "fresh").trials) >= 3
    finally:
        with psycopg.connect(POSTGRES_URL, autocommit=True) as admin:
            admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def test_seeds_out_of_numpys_range_are_one_line_before_anything_trains(cli, tmp_path):
    for command, args, message in (
            ("sweep", ["--grid", "network.neuron.beta=0.5", "--seeds", "-1"], "--seeds '-1': seeds must be in [0, "),
            ("sweep", ["--grid", "network.neuron.beta=0.5", "--seeds", "0,0"], "--seeds '0,0' names a seed twice"),
            ("tune", [*BETA, "--trials", "1", "--sampler-seed", "-1"], "--sampler-seed must be in [0, ")):
        out = tmp_path / command
        result = cli(command, *TINY, *args, "--out", str(out))
        assert result.returncode == 2 and message in result.stderr and "Traceback" not in result.stderr, result.stderr
        assert not out.exists()
