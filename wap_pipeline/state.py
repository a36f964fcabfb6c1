"""Local, per-state-directory bookkeeping: the Dagster home and the ledger of sent messages."""

from __future__ import annotations

import fcntl
import json
import os
import shutil
from datetime import UTC, datetime
from pathlib import Path

from wap_pipeline.settings import Settings

_DEFAULT_DAGSTER_YAML = """telemetry:\n  enabled: false\nnux:\n  enabled: false\n"""


def repository_root() -> Path:
    return Path(__file__).resolve().parents[1]


def ensure_dagster_home(settings: Settings) -> Path:
    """Use $DAGSTER_HOME when set; otherwise ``<state dir>/dagster_home``, seeded with dagster.yaml.

    The instance's storage is created here once, under a file lock: two processes that open a fresh
    home at the same moment (two `run --until-idle`, a runner and `dagster dev`) would otherwise both
    create the SQLite storages and corrupt their schema version table ("more than one head").
    """
    home = Path(os.environ.get("DAGSTER_HOME") or settings.state_path / "dagster_home").resolve()
    home.mkdir(parents=True, exist_ok=True)
    os.environ["DAGSTER_HOME"] = str(home)
    ready = home / ".storage-ready"
    if ready.exists():
        return home
    with open(home / ".storage-init.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        config = home / "dagster.yaml"
        if not config.exists():
            source = repository_root() / "dagster.yaml"
            if source.exists():
                shutil.copyfile(source, config)
            else:
                config.write_text(_DEFAULT_DAGSTER_YAML)
        if not ready.exists():
            from dagster import DagsterInstance

            with DagsterInstance.get() as instance:  # creates (and migrates) every storage
                instance.get_runs_count()
            ready.touch()
    return home


def _ledger(settings: Settings) -> Path:
    return settings.state_path / "sent-ledger.jsonl"


def record_sent(settings: Settings, count: int, kind: str = "valid") -> None:
    """Remember how many messages this project sent, so status can check the accounting identity."""
    settings.state_path.mkdir(parents=True, exist_ok=True)
    with _ledger(settings).open("a") as ledger:
        ledger.write(json.dumps({"at": datetime.now(UTC).isoformat(), "count": count, "kind": kind}) + "\n")


# Re-injected copies (patched replays, DLQ redrives) are the same message again, not a new one.
NOT_NEW_MESSAGES = frozenset({"replay"})


def has_sent_ledger(settings: Settings) -> bool:
    return _ledger(settings).exists()


def wipe_sent_ledger(settings: Settings) -> None:
    """Forget what was sent: status then accounts from the pipeline's own records only."""
    _ledger(settings).unlink(missing_ok=True)


def sent_counts(settings: Settings) -> dict[str, int]:
    counts: dict[str, int] = {}
    path = _ledger(settings)
    if not path.exists():
        return counts
    for line in path.read_text().splitlines():
        entry = json.loads(line)
        counts[entry["kind"]] = counts.get(entry["kind"], 0) + int(entry["count"])
    return counts


def wipe_local_state(settings: Settings) -> None:
    """Remove the catalog, warehouse, Dagster home and ledger of the state directory (local only)."""
    if not settings.is_local:
        raise RuntimeError("refusing to wipe state outside the local profile")
    state = settings.state_path
    for name in ("catalog.db", "warehouse", "dagster_home", "sent-ledger.jsonl"):
        target = state / name
        if target.is_dir():
            shutil.rmtree(target)
        elif target.exists():
            target.unlink()
