"""Extension points of the pipeline; the product itself does nothing at them.

Two kinds of point:

* **failure boundaries** -- :func:`fault_point` marks the places where a crash matters to recovery
  (after a branch write, after an audit, before a curated commit, ...). Points:
  ``ingest.after_put_before_delete``, ``raw.after_append``, ``standardized.after_branch_write``,
  ``standardized.after_audit``, ``standardized.after_publish``, ``curated.before_commit``,
  ``curated.after_commit``;
* **AWS clients** -- every client :func:`wap_pipeline.aws.client` makes is shown to
  :meth:`Hooks.client_created` (a place to register botocore event handlers).

By default :class:`Hooks` is a no-op. A plugin is a module named by the ``hooks_module`` setting
(``WAP_HOOKS_MODULE``) with a function ``hooks() -> Hooks``; the first time a point is reached in a
process the module is imported and its hooks serve that process from then on. The setting travels in
the environment, so it reaches every process the pipeline runs in -- the CLIs, the runner, Dagster's
run workers -- without the product knowing what the plugin does. The test suite's plugin,
``wap_pipeline_tests.hooks``, arms failpoints (raise, kill -9, pause) from the tests' own
specification and records each AWS call for the IAM tests; nothing of it ships in ``wap_pipeline``.

Why a module setting and not a Dagster resource: the crash tests kill the real ``wap-pipeline``
process at these points, and some points are reached outside any Dagster run (the forwarder's drain
runs in the CLI as well); an importable plugin reaches all of them with one setting.
"""

from __future__ import annotations

import importlib
import threading

from wap_pipeline.settings import Settings


class Hooks:
    """What happens at the pipeline's extension points: nothing, unless a plugin overrides it."""

    def point(self, name: str) -> None:
        """The pipeline reached the failure boundary ``name``."""

    def client_created(self, service: str, client) -> None:
        """:func:`wap_pipeline.aws.client` made ``client`` (a boto3 client of ``service``)."""


_hooks: Hooks | None = None
_lock = threading.Lock()


def installed(settings: Settings | None = None) -> Hooks:
    """This process's hooks: the plugin's (``hooks_module`` of ``settings``, default from the
    environment), loaded once, or the no-op ones."""
    global _hooks
    if _hooks is None:
        with _lock:
            if _hooks is None:
                _hooks = load((settings or Settings.from_env()).hooks_module)
    return _hooks


def load(module_name: str) -> Hooks:
    """The hooks of the plugin module ``module_name`` (its ``hooks()``); the no-op ones for ``""``."""
    if not module_name:
        return Hooks()
    made = importlib.import_module(module_name).hooks()
    if not isinstance(made, Hooks):
        raise TypeError(f"{module_name}.hooks() returned {type(made).__name__}, not wap_pipeline.hooks.Hooks")
    return made


def fault_point(name: str) -> None:
    """Mark the failure boundary ``name`` (a no-op without a plugin)."""
    installed().point(name)
