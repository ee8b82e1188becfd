"""spikerl sweep: every cell an ordinary run, parallel workers, restart after SIGKILL, heatmaps, bad input."""

import csv
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest

from tests.conftest import ROOT

TINY = ["configs/cartpole_dqn_snn.yaml", "total_steps=400", "dqn.learning_starts=100", "eval.every=0",
        "eval.final_episodes=2", "network.hidden=[16, 16]", "checkpoint_every=0"]


def rows(out):
    path = out / "results.csv"
    if not path.exists():
        return []
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def test_a_sweep_trains_every_cell_and_draws_one_panel_per_variant(cli, tmp_path):
    out = tmp_path / "sweep"
    result = cli("sweep", *TINY, "--grid", "network.neuron.beta=0.3:0.7:2", "--variant", "network.timesteps=1,3",
                 "--seeds", "0", "--workers", "2", "--out", str(out), "--solved-at", "15")
    assert result.returncode == 0, result.stderr
    table = rows(out)
    assert len(table) == 4 and {r["status"] for r in table} == {"done"}
    assert sorted((r["network.timesteps"], r["network.neuron.beta"]) for r in table) == \
        [("1", "0.3"), ("1", "0.7"), ("3", "0.3"), ("3", "0.7")]
    for r in table:  # every cell is an ordinary run folder with the cell's values in its config
        config = (out / r["run_dir"] / "config.yaml").read_text()
        assert f"timesteps: {r['network.timesteps']}" in config and f"beta: {r['network.neuron.beta']}" in config
    assert (out / "heatmaps.png").read_bytes()[:4] == b"\x89PNG"
    summary = (out / "summary.md").read_text()
    assert "| timesteps=1 | 2 | 0 |" in summary and "| timesteps=3 | 2 | 0 |" in summary

    # Another --solved-at only redraws the report: nothing trains again.
    again = cli("sweep", *TINY, "--grid", "network.neuron.beta=0.3:0.7:2", "--variant", "network.timesteps=1,3",
                "--seeds", "0", "--workers", "2", "--out", str(out), "--solved-at", "1e9")
    assert again.returncode == 0, again.stderr
    assert "4 already finished, 0 to run" in again.stdout
    assert "| timesteps=1 | 2 | 0 | 0% |" in (out / "summary.md").read_text()


def test_a_sweep_killed_with_sigkill_restarts_without_rerunning_finished_runs(tmp_path):
    out = tmp_path / "killed"
    args = [sys.executable, "-m", "spikerl.cli", "sweep", *TINY, "--grid", "network.neuron.beta=0.2:0.8:3",
            "--seeds", "0,1", "--workers", "1", "--out", str(out)]
    sweep = subprocess.Popen(args, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                             env={**os.environ, "PYTHONUNBUFFERED": "1"})
    deadline = time.monotonic() + 600
    while len(rows(out)) < 2:
        assert sweep.poll() is None and time.monotonic() < deadline, "the sweep ended or stalled before the kill"
        time.sleep(0.1)
    sweep.send_signal(signal.SIGKILL)
    sweep.wait()
    time.sleep(0.5)  # its child (the run in progress) dies with it
    finished = {r["run_dir"]: (out / r["run_dir"] / "final_eval.json").stat().st_mtime_ns for r in rows(out)}
    assert 2 <= len(finished) < 6

    result = subprocess.run(args, cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert f"6 runs, {len(finished)} already finished, {6 - len(finished)} to run" in result.stdout
    table = rows(out)
    assert len(table) == 6 and len({r["run_dir"] for r in table}) == 6 and {r["status"] for r in table} == {"done"}
    for run_dir, mtime in finished.items():  # not trained again
        assert (out / run_dir / "final_eval.json").stat().st_mtime_ns == mtime


def test_cells_a_restart_starts_train_from_the_config_the_sweep_started_with(cli, tmp_path):
    import yaml

    from spikerl.tune.sweep import Sweep, SweepSpec, parse_axis

    preset, out = tmp_path / "preset.yaml", tmp_path / "sweep"
    preset.write_text((ROOT / TINY[0]).read_text())
    beta = "network.neuron.beta=0.3:0.7:2"
    # A sweep stopped before any of its runs started...
    Sweep(SweepSpec(config=str(preset), overrides=TINY[1:], grid=dict([parse_axis(beta, "--grid")])), out).prepare()
    # ...whose preset was edited since (or whose defaults changed with spikerl): its cells keep its settings.
    started_with = yaml.safe_load(preset.read_text())["dqn"]["gamma"]
    preset.write_text(preset.read_text().replace(f"gamma: {started_with}", "gamma: 0.5"))
    result = cli("sweep", str(preset), *TINY[1:], "--grid", beta, "--seeds", "0", "--out", str(out))
    assert result.returncode == 0, result.stderr
    table = rows(out)
    assert len(table) == 2 and {r["status"] for r in table} == {"done"}
    for r in table:
        assert yaml.safe_load((out / r["run_dir"] / "config.yaml").read_text())["dqn"]["gamma"] == started_with != 0.5

    # A folder an older spikerl made (no base_config.yaml) takes its settings from a started run, and the cells
    # are checked against those: the preset no longer even loads.
    (out / "base_config.yaml").unlink()
    shutil.rmtree(out / table[1]["run_dir"])
    preset.write_text(preset.read_text() + "\nnot_a_setting: 1\n")
    result = cli("sweep", str(preset), *TINY[1:], "--grid", beta, "--seeds", "0", "--out", str(out))
    assert result.returncode == 0, result.stderr
    assert "1 already finished, 1 to run" in result.stdout
    assert yaml.safe_load((out / table[1]["run_dir"] / "config.yaml").read_text())["dqn"]["gamma"] == started_with

    # The machines of a shared sweep agree on the settings: one whose base config differs in a setting some cell
    # reads is refused; one that differs only in settings no cell reads (a default an older spikerl had) is not.
    import optuna

    from spikerl.errors import SpikerlError
    from spikerl.tune.shared_sweep import agree_on_base_config
    from spikerl.tune.storage import create_or_join

    def join(name: str, config_text: str, variants: dict | None = None, study: str = "s") -> None:
        (tmp_path / f"{name}.yaml").write_text(config_text)
        elsewhere = Sweep(SweepSpec(str(tmp_path / f"{name}.yaml"), TINY[1:], dict([parse_axis(beta, "--grid")]),
                                    variants or {}), tmp_path / name)
        elsewhere.prepare()
        _, stored = create_or_join("base_config", elsewhere.base.read_text(), study_name=study, storage=storage)
        agree_on_base_config(stored, elsewhere)

    storage = optuna.storages.InMemoryStorage()
    first = Sweep(SweepSpec(str(preset), TINY[1:], dict([parse_axis(beta, "--grid")])), out)
    assert create_or_join("base_config", first.base.read_text(), study_name="s", storage=storage)[1] is None
    preset_text = (ROOT / TINY[0]).read_text()
    join("same", preset_text)  # the cell's beta and the resolved backend in the run-made base are no difference
    with pytest.raises(SpikerlError, match=r"differs from the base config this shared sweep started with \(in dqn.gamma\)"):
        join("edited", preset_text.replace(f"gamma: {started_with}", "gamma: 0.5"))
    unread = preset_text.replace("network:\n", "network:\n  population_std: 0.15\n", 1)
    assert "population_std: 0.15" in unread
    join("older", unread)  # no cell has a population encoder
    with pytest.raises(SpikerlError, match=r"\(in network.population_std\)"):
        join("older-encoders", unread, {"network.encoder": ["two_neuron", "population"]})
    # A setting only the creator's base has (a newer spikerl's) counts as well.
    newer = yaml.safe_load(first.base.read_text())
    newer["dqn"]["a_newer_setting"] = 1
    create_or_join("base_config", yaml.safe_dump(newer), study_name="newer", storage=storage)
    with pytest.raises(SpikerlError, match=r"\(in dqn.a_newer_setting\)"):
        join("older-version", preset_text, study="newer")


def test_machines_opening_a_shared_study_together_agree_on_the_creators_value(monkeypatch, tmp_path):
    """Two machines that open a new study at the same instant: the one that creates it stores its value, and the
    other, finding the study but not yet the value, waits for it rather than storing its own."""
    import threading

    import optuna

    from spikerl.tune import storage as storage_module
    from spikerl.tune.storage import create_or_join, open_storage

    storage = open_storage(str(tmp_path / "study.journal"), tmp_path, 30)
    optuna.create_study(study_name="s", storage=storage)  # the creator, before it stores its value...
    later = threading.Timer(0.5, lambda: optuna.load_study(study_name="s", storage=storage).set_user_attr("v", "creator's"))
    later.start()
    study, stored = create_or_join("v", "joiner's", study_name="s", storage=storage)
    later.join()
    assert stored == "creator's" and study.user_attrs["v"] == "creator's"
    # A creator that died before storing its value leaves it to the first joiner once the wait is over; a study
    # with trials but no value (made by an older spikerl) is joined at once.
    monkeypatch.setattr(storage_module, "JOIN_WAIT_S", 0.3)
    optuna.create_study(study_name="orphan", storage=storage)
    assert create_or_join("v", "joiner's", study_name="orphan", storage=storage)[1] is None
    assert optuna.load_study(study_name="orphan", storage=storage).user_attrs["v"] == "joiner's"
    monkeypatch.setattr(storage_module, "JOIN_WAIT_S", 60)
    old = optuna.create_study(study_name="old", storage=storage)
    old.enqueue_trial({"unit": 0})
    started = time.monotonic()
    assert create_or_join("v", "joiner's", study_name="old", storage=storage)[1] is None
    assert time.monotonic() - started < 5


def test_a_sweep_whose_runs_fail_says_so_and_exits_1(cli, tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("the runs fail by asking for CUDA on a machine without it")
    out = tmp_path / "sweep"
    result = cli("sweep", *TINY, "device=cuda", "--grid", "network.neuron.beta=0.3,0.7", "--seeds", "0",
                 "--workers", "1", "--out", str(out))
    assert result.returncode == 1, result.stderr
    assert "spikerl: 2 of 2 runs failed" in result.stderr and "run the sweep again to retry them" in result.stderr
    assert {r["status"] for r in rows(out)} == {"failed"}
    assert all("no usable CUDA device" in (out / r["run_dir"] / "sweep-error.txt").read_text() for r in rows(out))


def test_a_shared_sweep_reports_the_runs_its_study_gave_up_and_exits_1(cli, tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("the runs fail by asking for CUDA on a machine without it")
    out = tmp_path / "sweep"
    result = cli("sweep", *TINY, "device=cuda", "--grid", "network.neuron.beta=0.3,0.7", "--seeds", "0",
                 "--workers", "1", "--out", str(out), "--storage", str(tmp_path / "study.journal"))
    assert result.returncode == 1, result.stderr
    assert "the shared sweep gave up on 2 runs after two failures each" in result.stderr
    assert "no usable CUDA device" in result.stderr and "start the sweep again to retry them" in result.stderr
    assert {r["status"] for r in rows(out)} == {"failed"}
    # Started again, the study gives each run one more round: two more failures each, four trials per run.
    again = cli("sweep", *TINY, "device=cuda", "--grid", "network.neuron.beta=0.3,0.7", "--seeds", "0",
                "--workers", "1", "--out", str(out), "--storage", str(tmp_path / "study.journal"))
    assert again.returncode == 1 and "given up by an earlier start of this sweep; trying it again" in again.stdout
    import optuna

    from spikerl.tune.shared_sweep import unit_of
    from spikerl.tune.storage import open_storage

    storage = open_storage(str(tmp_path / "study.journal"), out, 30)
    (summary,) = optuna.get_all_study_summaries(storage)
    trials = optuna.load_study(study_name=summary.study_name, storage=storage).trials
    assert sorted(unit_of(t) for t in trials if "error" in t.user_attrs) == [0, 0, 0, 0, 1, 1, 1, 1]


def test_sweep_bad_input_is_one_clear_line(cli, tmp_path):
    cases = [
        (["--grid", "network.neuron.alhpa=0.1,0.2"], "unknown config key in network.neuron: 'alhpa'"),
        (["--grid", "network.neuron.alpha="], "--grid network.neuron.alpha has an empty range of values"),
        (["--grid", "network.neuron.alpha=0.5,1.5"], "network.neuron.alpha must be in [0, 1]"),
        (["--grid", "a.b=1", "--grid", "c=2", "--grid", "d=3"], "one or two --grid axes"),
        (["--grid", "network.neuron.alpha=0.5", "--workers", "0"], "--workers must be >= 1"),
        (["--grid", "network.neuron.alpha=0.5", "--seeds", "0,x"], "--seeds must be comma-separated integers"),
        (["--grid", "env_id=CartPole-v1,Pendulum-v1"], "environment Pendulum-v1 has continuous actions"),
    ]
    for extra, message in cases:
        result = cli("sweep", *TINY, *extra, "--out", str(tmp_path / "bad"))
        assert result.returncode == 2, (extra, result.stderr)
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and message in lines[0], (extra, result.stderr)
        assert not (tmp_path / "bad").exists()


def test_environments_are_checked_for_each_cell_as_it_will_run():
    from spikerl.errors import SpikerlError
    from spikerl.tune.sweep import SweepSpec, validate_spec

    # Every cell is TD3 on a continuous task, although the base config is DQN on CartPole.
    validate_spec(SweepSpec("configs/cartpole_dqn_snn.yaml", [], {"env_id": ["Pendulum-v1", "MountainCarContinuous-v0"]},
                            {"algo": ["td3"]}))
    # Each value is fine with the base config (Pendulum); their combination in one cell is not.
    with pytest.raises(SpikerlError, match="sweep cell env_idCartPole-v1-log_std_learning_rate0.001: "
                                           "ppo.log_std_learning_rate is for continuous actions"):
        validate_spec(SweepSpec("configs/pendulum_ppo_snn.yaml", [], {"ppo.log_std_learning_rate": [1e-3]},
                                {"env_id": ["Pendulum-v1", "CartPole-v1"]}))


def test_a_population_sweep_groups_runs_by_shape_and_writes_what_separate_runs_write(cli, tmp_path):
    """--population: the two T values are two populations of 2 x 2 runs (beta and seeds differ within one);
    each run folder and results.csv row equals the separate-process sweep's."""
    axes = ["--grid", "network.neuron.beta=0.3:0.7:2", "--variant", "network.timesteps=2,3", "--seeds", "0,1",
            "--workers", "2"]
    together = cli("sweep", *TINY, *axes, "--population", "--out", str(tmp_path / "together"))
    assert together.returncode == 0, together.stderr
    assert "8 runs in 2 populations" in together.stdout
    homes = sorted(p.name for p in (tmp_path / "together" / "populations").iterdir())
    assert homes == ["p0", "p1"]
    assert (tmp_path / "together" / "populations" / "p0" / "population.yaml").read_text().count("runs/") == 4
    apart = cli("sweep", *TINY, *axes, "--out", str(tmp_path / "apart"))
    assert apart.returncode == 0, apart.stderr
    by_run = {r["run_dir"]: r for r in rows(tmp_path / "apart")}
    table = rows(tmp_path / "together")
    assert len(table) == 8 and {r["status"] for r in table} == {"done"}
    for r in table:
        assert r["final_return"] == by_run[r["run_dir"]]["final_return"], r["run_dir"]
        for name in ("episodes.csv", "eval.csv"):
            assert (tmp_path / "together" / r["run_dir"] / name).read_text() == \
                (tmp_path / "apart" / r["run_dir"] / name).read_text()
    again = cli("sweep", *TINY, *axes, "--population", "--out", str(tmp_path / "together"))
    assert again.returncode == 0 and "2 populations already finished, 0 to run" in again.stdout


@pytest.mark.parametrize("kind", ["journal", "postgres"])
def test_a_sweep_shared_through_a_storage_completes_every_run_once_when_a_worker_is_killed(tmp_path, kind):
    """Two `spikerl sweep --storage` processes on one sweep folder (as two machines sharing it); one is
    SIGKILLed while it trains a run: the other finishes every run, the killed run resuming from its folder,
    and the study holds exactly one completed trial per run."""
    import uuid

    import optuna

    from spikerl.tune.storage import open_storage
    from tests.test_tune import _storage_for, load

    storage = _storage_for(kind, tmp_path)
    out = tmp_path / f"shared-{uuid.uuid4().hex[:8]}"
    args = [sys.executable, "-m", "spikerl.cli", "sweep", *TINY, "total_steps=2500", "checkpoint_every=500",
            "--grid", "network.neuron.beta=0.3:0.7:2", "--seeds", "0,1", "--storage", storage, "--heartbeat", "2",
            "--out", str(out)]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    victim = subprocess.Popen(args, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    survivor = subprocess.Popen(args, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline, killed = time.time() + 300, None
        while killed is None and time.time() < deadline:
            time.sleep(0.3)
            if kind == "journal" and not os.path.exists(storage):
                continue
            names = [s.study_name for s in optuna.get_all_study_summaries(open_storage(storage, out, 2))
                     if out.name in s.study_name]
            if not names:
                continue
            running = load(storage, names[0]).get_trials(states=(optuna.trial.TrialState.RUNNING,))
            mine = [t for t in running if f":{victim.pid}:" in t.user_attrs.get("worker", "")]
            if mine:
                time.sleep(3.0)  # inside the run: a checkpoint or two written
                os.kill(victim.pid, signal.SIGKILL)
                killed = mine[0]
        assert killed is not None, "the first worker never claimed a run"
        victim.wait(timeout=30)
        _, err = survivor.communicate(timeout=900)
    finally:
        for proc in (victim, survivor):
            if proc.poll() is None:
                proc.kill()
    assert survivor.returncode == 0, err
    table = rows(out)
    assert len(table) == 4 and {r["status"] for r in table} == {"done"}
    study = load(storage, names[0])
    complete = [t.params["unit"] for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert sorted(complete) == [0, 1, 2, 3]  # every run once
    assert study.trials[killed.number].state == optuna.trial.TrialState.FAIL
    assert not [t for t in study.trials if t.state == optuna.trial.TrialState.RUNNING]


def test_a_shared_sweep_gives_up_on_a_unit_after_two_failures_by_its_own_error_since_its_retry_mark():
    import optuna
    from optuna.distributions import CategoricalDistribution
    from optuna.trial import TrialState, create_trial

    from spikerl.tune.shared_sweep import given_up

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study()

    def add(unit, state, **attrs):
        study.add_trial(create_trial(params={"unit": unit}, distributions={"unit": CategoricalDistribution([0, 1, 2, 3])},
                                     state=state, value=0.0 if state == TrialState.COMPLETE else None, user_attrs=attrs))

    add(0, TrialState.FAIL, error="a"), add(0, TrialState.COMPLETE)               # failed once, then completed
    add(1, TrialState.FAIL, error="b1"), add(1, TrialState.FAIL, error="b2")      # failed twice
    add(2, TrialState.FAIL, failed_because="worker died"), add(2, TrialState.FAIL, error="c")  # one is not its own
    add(3, TrialState.FAIL, error="d1"), add(3, TrialState.FAIL, error="d2"), add(3, TrialState.COMPLETE)
    assert given_up(study, study.trials) == {1: "b2"}
    study.set_user_attr("retry_after_1", 3)  # started again: its earlier failures no longer count
    assert given_up(study, study.trials) == {}
    add(1, TrialState.FAIL, error="b3"), add(1, TrialState.FAIL, error="b4")
    assert given_up(study, study.trials) == {1: "b4"}


@pytest.mark.parametrize("returncode, stderr, error", [
    (0, "", ""),
    (1, "spikerl: error: no usable CUDA device\n", "spikerl: error: no usable CUDA device"),
    (1, "", "exited with status 1 and no message"),
    (-9, "", "killed by SIGKILL"),  # the out-of-memory killer leaves no message
    (-15, "step 500\n", "killed by SIGTERM: step 500"),
])
def test_a_failed_training_child_says_how_it_ended(returncode, stderr, error):
    from spikerl.tune.sweep import _child_error

    assert _child_error(returncode, stderr) == error


class _FailingSweep:
    """A sweep of two units whose training always fails (or raises), for the shared sweep's bookkeeping."""

    def __init__(self, out, raises: bool = False):
        from types import SimpleNamespace

        self.out, self.raises, self.trained = out, raises, []
        self.spec = SimpleNamespace(config="tiny.yaml", seeds=[0], grid={}, variants={})
        self.base = out / "base_config.yaml"
        self.base.write_text("algo: dqn\n")
        self.jobs = {f"u{i}": [SimpleNamespace(run_dir=out / f"u{i}")] for i in range(2)}

    def units(self, population):
        return list(self.jobs.items())

    def train_unit(self, name, jobs, population):
        self.trained.append(name)
        if self.raises:
            raise OSError("disk full")
        return "it broke"

    def describe(self, name, jobs):
        return f"{name}: failed"

    def write_results(self):
        pass


def test_a_shared_sweep_started_again_retries_what_its_study_gave_up_on(tmp_path):
    import optuna
    from optuna.trial import TrialState

    from spikerl.tune.shared_sweep import run_shared, study_name, unit_of
    from spikerl.tune.storage import open_storage

    journal, out = str(tmp_path / "study.journal"), tmp_path / "sweep"
    out.mkdir()
    sweep = _FailingSweep(out)
    assert run_shared(sweep, journal, 1, 30, False, log=lambda line: None) == [("u0", "it broke"), ("u1", "it broke")]
    assert sorted(sweep.trained) == ["u0", "u0", "u1", "u1"]  # each tried twice, then given up
    study = optuna.load_study(study_name=study_name(sweep, False), storage=open_storage(journal, out, 30))
    study.enqueue_trial({"unit": 0})  # a trial left queued by a process that stopped

    again, lines = _FailingSweep(out), []
    assert run_shared(again, journal, 1, 30, False, log=lines.append) == [("u0", "it broke"), ("u1", "it broke")]
    assert sum("given up by an earlier start of this sweep; trying it again" in line for line in lines) == 2
    assert sorted(again.trained) == ["u0", "u0", "u1", "u1"]  # one more round each; the left-over trial was one
    trials = study.get_trials(deepcopy=False)
    assert not [t for t in trials if t.state in (TrialState.WAITING, TrialState.RUNNING)]
    assert sorted(unit_of(t) for t in trials if "error" in t.user_attrs) == [0, 0, 0, 0, 1, 1, 1, 1]


def test_a_shared_sweep_whose_worker_fails_hands_its_unit_back_and_says_so(tmp_path):
    import optuna
    from optuna.trial import TrialState

    from spikerl.errors import SpikerlError
    from spikerl.tune.shared_sweep import run_shared, study_name
    from spikerl.tune.storage import open_storage

    journal, out = str(tmp_path / "study.journal"), tmp_path / "sweep"
    out.mkdir()
    sweep = _FailingSweep(out, raises=True)
    with pytest.raises(SpikerlError, match="a worker of the shared sweep stopped: disk full"):
        run_shared(sweep, journal, 1, 30, False, log=lambda line: None)
    study = optuna.load_study(study_name=study_name(sweep, False), storage=open_storage(journal, out, 30))
    trials = study.get_trials(deepcopy=False)
    (taken,) = [t for t in trials if t.state == TrialState.FAIL]
    assert "error" not in taken.user_attrs  # handed back: queued again by the next worker, not counted against it
    assert {t.state for t in trials} == {TrialState.FAIL, TrialState.WAITING}  # the other unit waits for a worker
