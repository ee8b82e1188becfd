"""Where an Optuna study lives and who is still working on it.

Storage: a journal file (no server; the processes of one machine) or a database URL (any number of
machines). Dead workers: a running trial records its worker as host:pid:start-time; any worker on
the same host marks the trials of a vanished process failed. Across machines, database storages
also fail trials whose heartbeat stopped (Optuna's own mechanism, `--heartbeat`).
"""

from __future__ import annotations

import os
import socket
import time
import warnings
from pathlib import Path

from spikerl.errors import SpikerlError


def redact(url: str) -> str:
    """A database URL without its password, for messages."""
    if "://" in url and "@" in url:
        scheme, rest = url.split("://", 1)
        credentials, host = rest.rsplit("@", 1)
        return f"{scheme}://{credentials.split(':', 1)[0]}:***@{host}"
    return url


def open_storage(url: str | None, out: Path, heartbeat_s: int):
    """A journal file (default OUT/study.journal, or a path) or a database URL with a heartbeat."""
    import optuna
    from optuna.storages import JournalStorage, RDBStorage
    from optuna.storages.journal import JournalFileBackend

    if url is None or "://" not in url:
        path = Path(url) if url else out / "study.journal"
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            return JournalStorage(JournalFileBackend(str(path)))
        except OSError as exc:
            raise SpikerlError(f"cannot open the study journal {path}: {exc.strerror or exc}") from None
    engine_kwargs = {"connect_args": {"connect_timeout": 10}} if url.startswith("postgresql") else {}
    attempts = 5
    for attempt in range(attempts):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # ExperimentalWarning on heartbeat_interval, in use since Optuna 2.9
                return RDBStorage(url, engine_kwargs=engine_kwargs, heartbeat_interval=heartbeat_s,
                                  grace_period=4 * heartbeat_s)
        except ImportError as exc:
            raise SpikerlError(f"the storage {redact(url)} needs a database driver: {exc}; "
                               "install spikerl[tune]") from None
        except Exception as exc:  # sqlalchemy's errors for a refused, unknown or unauthorized server
            if isinstance(exc, optuna.exceptions.OptunaError) and "://" not in str(exc):
                raise
            # Workers started together on a fresh database race to create Optuna's tables; the loser
            # sees a unique-constraint violation and tries again. A server that cannot be reached
            # (sqlalchemy's OperationalError) is reported at once.
            if type(exc).__name__ != "OperationalError" and attempt + 1 < attempts:
                time.sleep(0.5 * (attempt + 1))
                continue
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise SpikerlError(f"cannot reach the study storage {redact(url)}: {first}") from None


JOIN_WAIT_S = 30.0  # how long a joining machine waits for the study's creator to store its value


def create_or_join(attr: str, mine, **create_kwargs):
    """Open the study `create_kwargs` describe (`optuna.create_study`'s arguments), and read what every machine
    must agree with: (study, the value of its user attribute `attr` to compare `mine` with, or None where this
    machine stored `mine`). Creating a study is atomic in every Optuna storage, so exactly one machine creates
    it, and it stores its value next; a machine that joins waits up to JOIN_WAIT_S for that value (two machines
    starting together would otherwise both find none and store their own, the last one winning). A study
    without the value but with trials was made without one (by an older spikerl); its joiner stores `mine`."""
    import optuna
    from optuna.exceptions import DuplicatedStudyError

    try:
        study = optuna.create_study(**create_kwargs, load_if_exists=False)
    except DuplicatedStudyError:
        study = optuna.create_study(**create_kwargs, load_if_exists=True)
    else:
        study.set_user_attr(attr, mine)
        return study, None
    deadline = time.monotonic() + JOIN_WAIT_S
    while (stored := study.user_attrs.get(attr)) is None and not study.get_trials(deepcopy=False) \
            and time.monotonic() < deadline:
        time.sleep(0.2)
    if stored is None:  # made without one, or its creator died between creating it and storing its value
        study.set_user_attr(attr, mine)
    return study, stored


def _process_start(pid: int) -> str | None:
    """The start time of a local process (jiffies since boot), or None if it does not exist."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        try:
            os.kill(pid, 0)
            return "unknown"
        except ProcessLookupError:
            return None
        except PermissionError:
            return "unknown"


def worker_identity() -> str:
    pid = os.getpid()
    return f"{socket.gethostname()}:{pid}:{_process_start(pid)}"


def fail_dead_local_trials(study, log=print) -> int:
    """Mark failed the running trials of workers on this host whose process is gone (or was replaced)."""
    from optuna.exceptions import UpdateFinishedTrialError
    from optuna.trial import TrialState

    host, failed = socket.gethostname(), 0
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        owner = trial.user_attrs.get("worker", "")
        worker_host, _, rest = owner.partition(":")
        pid, _, started = rest.partition(":")
        if worker_host != host or not pid.isdigit():
            continue
        now = _process_start(int(pid))
        if now is not None and (now == started or "unknown" in (now, started)):
            continue  # alive
        try:
            study._storage.set_trial_user_attr(trial._trial_id, "failed_because", f"worker {owner} died")
            study._storage.set_trial_state_values(trial._trial_id, state=TrialState.FAIL)
            failed += 1
            log(f"trial {trial.number}: its worker ({owner}) died; marked failed")
        except UpdateFinishedTrialError:
            pass  # another worker marked it first
    return failed


def fail_stale(study, log) -> None:
    from optuna.storages import fail_stale_trials

    fail_dead_local_trials(study, log)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # ExperimentalWarning: the function is stable in use since Optuna 2.9
        fail_stale_trials(study)  # database storage: trials whose heartbeat stopped (a no-op for journals)
