"""Run one chaos schedule: send, inject faults, recover with documented commands only, check invariants.

The AWS server (moto) is shared and reset between schedules; each schedule gets a fresh state
directory (catalog, warehouse, Dagster home). All pipeline traffic goes through a FaultProxy.

* A run that is to be killed (`kill -9` at a fault point) is `wap-pipeline run --until-idle` in a
  child process (a fork of the worker) with ``WAP_FAULTS=<point>=kill``: the fault SIGKILLs it.
* Everything else -- the faulted run without a kill, and every recovery command -- is the project's
  own CLI (`wap-pipeline ...`, `data-patcher ...`) invoked in this process through click's runner:
  the same code as the console scripts, without paying the import time of a new process each time.
"""

from __future__ import annotations

import faulthandler
import json
import os
import random
import shlex
import shutil
import signal
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from unittest import mock

import orjson
from click.testing import CliRunner

from wap_pipeline import aws, local_stack
from wap_pipeline.cli.main import cli as wap_cli
from wap_pipeline.cli.patcher import cli as patcher_cli
from wap_pipeline.iceberg import wap
from wap_pipeline.ingest.landing import batch_ids_after
from wap_pipeline.ingest.producer import send_bodies
from wap_pipeline.provision import provision, queue_url
from wap_pipeline.settings import Settings
from wap_pipeline.state import record_sent, repository_root
from wap_pipeline_tests import failpoints
from wap_pipeline_tests.chaos.invariants import check_invariants
from wap_pipeline_tests.chaos.plan import CONFLICTING_TABLES, Message, Plan
from wap_pipeline_tests.fault_proxy import FaultPlan, FaultProxy

# The environment every schedule runs with (besides its own state directory and endpoints).
#  - steps retry after 0.2 s (doubling), so a blackout of a few seconds is waited out quickly;
#  - a 1 s visibility timeout and no long polling let a malformed message reach the DLQ in seconds.
CHAOS_ENV = {
    "WAP_PROFILE": "local",
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
    "WAP_STEP_RETRY_DELAY_S": "0.2",
    "WAP_VISIBILITY_TIMEOUT_S": "1",
    "WAP_RECEIVE_WAIT_S": "0",
    "WAP_OPERATOR": "chaos-operator",
    "PYTHONWARNINGS": "ignore",
}
# The project's dagster.yaml, plus: no per-step capture of stdout/stderr (Dagster's local compute log
# manager starts two `tail -F` processes per step; nothing here reads those logs).
NO_COMPUTE_LOGS = """
compute_logs:
  module: dagster._core.storage.noop_compute_log_manager
  class: NoOpComputeLogManager
"""
MAX_RECOVERY_ROUNDS = 8
KILL_RUN_TIMEOUT_S = 300
STACKS_SIGNAL = signal.SIGUSR1


@dataclass
class Outcome:
    seed: int
    description: str
    violations: list[str] = field(default_factory=list)
    transcript: list[str] = field(default_factory=list)
    seconds: float = 0.0
    killed: bool | None = None
    # Batches standardized had published when DAGSTER_HOME was lost (their check results went with it).
    published_before_loss: set[str] = field(default_factory=set)

    @property
    def passed(self) -> bool:
        return not self.violations


class Operator:
    """Runs documented commands and keeps a transcript of what it did and what came back."""

    def __init__(self, transcript: list[str]):
        self.transcript = transcript
        self.runner = CliRunner()

    def _invoke(self, program: str, command, args: list[str]) -> tuple[int, str]:
        started = time.monotonic()
        result = self.runner.invoke(command, args, catch_exceptions=True)
        output = result.output
        if result.exception is not None and not isinstance(result.exception, SystemExit):
            output += f"\n{type(result.exception).__name__}: {result.exception}"
        self.transcript.append(
            f"$ {program} {shlex.join(args)}  -> exit {result.exit_code} ({time.monotonic() - started:.1f}s)"
        )
        if result.exit_code != 0 or os.environ.get("WAP_CHAOS_TRACE"):
            self.transcript.append("  " + output.strip()[-1500:].replace("\n", "\n  "))
        return result.exit_code, output

    def wap(self, *args: str) -> tuple[int, str]:
        return self._invoke("wap-pipeline", wap_cli, list(args))

    def patcher(self, *args: str) -> tuple[int, str]:
        return self._invoke("data-patcher", patcher_cli, list(args))


def _schedule_env(server: Settings, proxy: FaultProxy, state: Path) -> dict[str, str]:
    return {
        **CHAOS_ENV,
        "WAP_LOCAL_PORT": str(server.local_port),
        "AWS_ENDPOINT_URL": proxy.endpoint,
        "WAP_STATE_DIR": str(state),
        "DAGSTER_HOME": str(state / "dagster_home"),
    }


def _send(settings: Settings, messages: list[Message]) -> None:
    """Send bodies as the producer does. The ledger counts each logical message once: a duplicate
    delivery is the same message again."""
    if not messages:
        return
    sqs = aws.client("sqs", settings)
    send_bodies(sqs, queue_url(sqs, settings.queue_name), [m.body for m in messages])
    # A duplicate delivery and a correction (a new version of an event) add no message to account for.
    record_sent(settings, sum(1 for m in messages if m.kind not in ("duplicate", "correction")))


def _faults(plan: Plan, with_kill: bool, lost_response: bool = True) -> str:
    """WAP_FAULTS for the faulted run: the kill -9, and a commit whose response is lost (raise once)."""
    faults = {plan.lost_response: "raise"} if plan.lost_response and lost_response else {}
    if with_kill and plan.kill_point:
        faults[plan.kill_point] = "kill"
    return ",".join(f"{point}={action}" for point, action in faults.items())


class ConflictingWriter(threading.Thread):
    """Another writer (a compaction job, a backfill) committing to the tables now and then: each of our
    commits it overtakes fails its compare-and-swap, and the step re-plans on the new head."""

    def __init__(self, settings: Settings, seed: int):
        super().__init__(daemon=True)
        self.settings, self.rng, self.stop, self.commits = settings, random.Random(seed), threading.Event(), 0

    def run(self) -> None:
        from wap_pipeline_tests.integration.helpers import tables

        while not self.stop.wait(self.rng.uniform(0.5, 2.0)):
            table = tables(self.settings)[self.rng.choice(CONFLICTING_TABLES)]
            try:
                table.append(
                    table.schema().as_arrow().empty_table(), snapshot_properties={"chaos.other-writer": "1"}
                )
                self.commits += 1
            except Exception:  # lost the race to one of ours: that is the point
                continue


def _claim_replays(settings: Settings, messages: list[Message]) -> None:
    """A producer sends the fixed copies itself with ``is_replay=true``: no data-patcher grant, so the
    quarantine keeps masking them. The same events again, not new messages (not in the ledger)."""
    sqs = aws.client("sqs", settings)
    bodies = [orjson.dumps(m.fixed).decode() for m in messages]
    send_bodies(sqs, queue_url(sqs, settings.queue_name), bodies, [{"is_replay": "true"} for _ in messages])


def _replay(operator: Operator, state: Path, messages: list[Message]) -> list[str]:
    """The fixed copies, re-injected as replays the documented way: `data-patcher replay FILE`."""
    fixed = state / "fixed-records.ndjson"
    fixed.write_bytes(b"".join(orjson.dumps(m.fixed) + b"\n" for m in messages))
    code, _ = operator.patcher("replay", str(fixed), "--reason", "fixed copies of quarantined records")
    return [] if code == 0 else [f"data-patcher replay exited {code}"]


def _fork_run(faults: str, log_path: Path) -> int:
    """`wap-pipeline run --until-idle` (with ``WAP_FAULTS=faults``) in a child process; its pid.

    The child is a fork of this worker (everything is imported already, which saves seconds per
    schedule) running the CLI's own `run --until-idle`; a `kill` fault SIGKILLs it, as `kill -9` would.
    """
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:  # the child: never returns
        code = 70
        try:
            signal.signal(signal.SIGTERM, signal.SIG_DFL)  # not the worker's "stop the server" handler
            signal.signal(signal.SIGINT, signal.SIG_DFL)
            descriptor = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            os.dup2(descriptor, 1)
            os.dup2(descriptor, 2)
            faulthandler.register(STACKS_SIGNAL, all_threads=True)  # what it was doing, if it hangs
            os.environ["WAP_FAULTS"] = faults
            try:
                wap_cli.main(["run", "--until-idle", "--timeout", "240"], standalone_mode=False)
                code = 0
            except SystemExit as exit_:
                code = exit_.code if isinstance(exit_.code, int) else 1
        finally:
            os._exit(code)
    return pid


def _wait(pid: int, command: str, transcript: list[str], log_path: Path) -> int | None:
    """Wait for a forked run (killing it after KILL_RUN_TIMEOUT_S); its wait status, None on timeout.
    A run that timed out writes its threads' stacks to its log first; the transcript keeps the tail."""
    started = time.monotonic()
    deadline = started + KILL_RUN_TIMEOUT_S
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        if time.monotonic() > deadline:
            os.kill(pid, STACKS_SIGNAL)
            time.sleep(2)
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            transcript.append(f"$ {command}  -> TIMEOUT after {KILL_RUN_TIMEOUT_S}s; its log ends:")
            tail = log_path.read_text(errors="replace").splitlines()[-60:] if log_path.exists() else []
            transcript += [f"  {line}" for line in tail]
            return None
        time.sleep(0.05)
    code = -os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status)
    transcript.append(f"$ {command}  -> exit {code} ({time.monotonic() - started:.1f}s)")
    return status


def _killed(status: int | None) -> bool:
    """Whether a forked run's wait status says a `kill` fault SIGKILLed it (None: it timed out)."""
    return status is not None and os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL


def _lose_instance(settings: Settings, home: Path) -> set[str]:
    """Delete DAGSTER_HOME (cursors, partitions, runs, check results) and seed a new, empty one, as
    after losing the instance's storage. Returns the batches standardized had published by then."""
    from wap_pipeline_tests.integration.helpers import tables

    published = set(wap.published_batches(tables(settings)["standardized"]))
    config = (home / "dagster.yaml").read_text()
    shutil.rmtree(home)
    home.mkdir(parents=True)
    (home / "dagster.yaml").write_text(config)
    return published


def _rerun_everything_changes_nothing(operator: Operator, settings: Settings) -> list[str]:
    from wap_pipeline_tests.integration.helpers import tables

    before = {name: t.current_snapshot() for name, t in tables(settings).items()}
    batches = batch_ids_after(
        aws.client("s3", settings), settings.landing_bucket, settings.manifests_prefix, ""
    )
    if not batches:
        return []
    code, _ = operator.wap(
        "rerun", *[arg for b in batches for arg in ("--partition", b)], "--reason", "chaos"
    )
    after = {name: t.current_snapshot() for name, t in tables(settings).items()}
    changed = [
        name
        for name in before
        if (before[name] and before[name].snapshot_id) != (after[name] and after[name].snapshot_id)
    ]
    problems = [f"rerun of every batch after maintenance exited {code}"] if code else []
    return problems + ([f"rerun of published batches changed {changed}"] if changed else [])


def _latest_failed_audit(batch_id: str):
    from wap_pipeline_tests.integration.helpers import check_evaluations

    for evaluation in check_evaluations(["standardized", "events"], "audit"):
        if getattr(evaluation, "partition", None) == batch_id and hasattr(evaluation, "passed"):
            return None if evaluation.passed else evaluation
    return None


def _metadata_value(evaluation, key: str):
    value = evaluation.metadata.get(key)
    return getattr(value, "value", value) if value is not None else None


def recover(operator: Operator, settings: Settings) -> list[str]:
    """Bring the pipeline back using only the documented recovery actions, the way an operator reads
    them off the breaker and the failed audit check. Returns problems that are not recoverable."""
    from wap_pipeline_tests.integration.helpers import breaker_state, tables

    # A crashed run: `wap-pipeline redrive` marks runs whose process died as failed, re-executes failed
    # batches from failure, then runs until idle.
    code, _ = operator.wap("redrive")
    for _ in range(MAX_RECOVERY_ROUNDS):
        state = breaker_state(settings)
        if state.status != "RED":
            if code == 0:
                return []
            code, _ = operator.wap("redrive")
            continue
        reason = state.reason
        if state.tripped_by.startswith("dagster:check:"):
            # A curated blocking check failed: a duplicate or a lost row reached curated. Never reset
            # blindly; that is exactly what this suite is here to find.
            return [f"curated check tripped the breaker: {reason[:500]}"]
        evaluation = _latest_failed_audit(state.batch_id)
        if "does not fit the standardized schema" in reason and evaluation is not None:
            standardized = tables(settings)["standardized"]
            columns = {f.name for f in standardized.schema().fields}
            problems = _metadata_value(evaluation, "fields") or {}
            examples = _metadata_value(evaluation, "example_ids") or {}
            for name in sorted(problems):
                if name not in columns:
                    operator.wap("schema", "add-column", name, "string")
                else:
                    for record_id in examples.get(name, []):
                        operator.patcher("quarantine", "add", record_id, "--reason", f"wrong type in {name}")
            code, _ = operator.patcher(
                "resume-pipeline", "--pipeline", settings.pipeline_name, "--reason", "schema fixed"
            )
        elif "audit failed" in reason and evaluation is not None:
            for record_id in _metadata_value(evaluation, "sample_invalid_ids") or []:
                operator.patcher("quarantine", "add", record_id, "--reason", "CDE violation")
            code, _ = operator.patcher(
                "resume-pipeline", "--pipeline", settings.pipeline_name, "--reason", "bad records quarantined"
            )
        else:
            # A step failed for good on a transient cause (outage, throttling past every retry).
            operator.wap("breaker", "reset", "--reason", "AWS recovered")
            code, _ = operator.wap("redrive")
    return [f"not recovered after {MAX_RECOVERY_ROUNDS} rounds: breaker {breaker_state(settings).status}"]


def run_schedule(server: Settings, plan: Plan, workdir: Path) -> Outcome:
    """Run one schedule against the shared server; ``workdir`` holds its fresh state directory."""
    outcome = Outcome(plan.seed, plan.describe())
    started = time.monotonic()
    state = workdir / f"schedule-{plan.seed}"
    local_stack.reset(server)
    # Every variable the schedule sets (its endpoints, state, faults) is put back afterwards.
    with mock.patch.dict(os.environ):
        try:
            with FaultProxy(server.local_endpoint, FaultPlan(seed=plan.seed)) as proxy:
                env = _schedule_env(server, proxy, state)
                os.environ.update(env)
                home = state / "dagster_home"
                home.mkdir(parents=True)
                (home / "dagster.yaml").write_text(
                    (repository_root() / "dagster.yaml").read_text() + NO_COMPUTE_LOGS
                )
                os.environ.pop("WAP_FAULTS", None)
                settings = Settings.from_env()
                provision(settings)
                operator = Operator(outcome.transcript)
                _send(settings, plan.messages)

                # Faults on: throttling, partial puts, maybe a blackout, maybe a kill -9.
                proxy.plan.error_rate = plan.error_rate
                proxy.plan.partial_put_rate = plan.partial_put_rate
                failpoints.reset()
                # The runs are forked before the blackout timer and the foreign writer start: a fork
                # taken while another thread of this process holds an import lock (the writer's first
                # append imports lazily) inherits the lock held forever, and the run hangs on its next
                # import (seen as a 300 s timeout in CI under load).
                # A second runner beside the faulted one (another `run --until-idle`, a second daemon):
                # the writer leases keep them from committing to one table at once. It carries the same
                # kill: which of the two reaches the point first is a race (on a loaded machine the second
                # one often drains the queue before the first starts), and the kill is the point.
                second_log = state / "second-runner.log"
                second = (
                    _fork_run(_faults(plan, with_kill=True, lost_response=False), second_log)
                    if plan.second_runner
                    else None
                )
                killed_log = state / "killed-run.log"
                faulted = _fork_run(_faults(plan, with_kill=True), killed_log) if plan.kill_point else None
                timer = None
                if plan.blackout:
                    after, seconds, mode = plan.blackout
                    timer = threading.Timer(after, proxy.plan.blackout, args=(seconds, mode))
                    timer.daemon = True
                    timer.start()
                writer = ConflictingWriter(settings, plan.seed) if plan.conflicting_writer else None
                if writer is not None:
                    writer.start()
                if faulted is not None:
                    command = f"WAP_FAULTS={_faults(plan, with_kill=True)} wap-pipeline run --until-idle"
                    outcome.killed = _killed(_wait(faulted, command, outcome.transcript, killed_log))
                else:
                    os.environ["WAP_FAULTS"] = _faults(plan, with_kill=False)
                    operator.wap("run", "--until-idle", "--timeout", "240")
                    os.environ.pop("WAP_FAULTS", None)
                if second is not None:
                    status = _wait(
                        second,
                        "wap-pipeline run --until-idle  (the second runner)",
                        outcome.transcript,
                        second_log,
                    )
                    if plan.kill_point and _killed(status):
                        outcome.killed = True
                if writer is not None:
                    writer.stop.set()
                    writer.join()
                    outcome.transcript.append(f"conflicting writer: {writer.commits} commit(s)")
                if timer is not None:
                    timer.join()
                    while proxy.plan.in_blackout():
                        time.sleep(0.1)
                _send(settings, plan.later)  # a later wave arrives whatever state the pipeline is in
                if plan.lose_instance:
                    outcome.published_before_loss = _lose_instance(settings, home)
                if plan.maintain_at == "before_recovery":
                    operator.wap("maintain", "--older-than", "0s", "--reason", "chaos: aggressive expiry")

                # Faults off ("AWS recovered"); the operator recovers with documented commands only.
                proxy.plan.error_rate = proxy.plan.partial_put_rate = 0.0
                outcome.violations += recover(operator, settings)
                replays = [m for m in plan.all_messages() if m.fixed is not None]
                if replays and not outcome.violations:
                    _claim_replays(settings, replays)  # must stay masked
                    outcome.violations += _replay(operator, state, replays)
                    outcome.violations += recover(operator, settings)
                if plan.maintain_at == "after_recovery" and not outcome.violations:
                    operator.wap("maintain", "--older-than", "0s", "--reason", "chaos: aggressive expiry")
                    # Every batch again, as an operator re-running old partitions would: nothing may change.
                    outcome.violations += _rerun_everything_changes_nothing(operator, settings)
                code, output = operator.wap("status", "--json")
                status = json.loads(output) if output.strip().startswith("{") else None
                outcome.violations += check_invariants(settings, plan, status, outcome.published_before_loss)
                outcome.transcript.append(
                    f"proxy: {proxy.stats.errors_injected} errors, {proxy.stats.partial_puts} partial puts "
                    f"({proxy.stats.records_refused} records refused), {proxy.stats.blacked_out} blacked out"
                )
        except Exception as error:  # a crash of the harness or of a command is a failed schedule too
            outcome.violations.append(f"schedule raised {type(error).__name__}: {error}")
    outcome.seconds = time.monotonic() - started
    return outcome
