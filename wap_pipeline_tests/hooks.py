"""The tests' hooks plugin (see :mod:`wap_pipeline.hooks`): failpoints and the AWS call log.

Installed by naming this module in ``WAP_HOOKS_MODULE``; :func:`enable` does that for the test session
and the chaos worker, in ``os.environ``, so every process the tests start (``wap-pipeline``,
``data-patcher``, ``dagster dev`` and its run workers) loads it too. Once installed:

* ``WAP_FAULTS=point=action[,...]`` arms the failpoints (:mod:`wap_pipeline_tests.failpoints`);
* ``WAP_AWS_CALL_LOG=<file>`` appends every AWS call of every client made from then on to ``<file>``
  (:func:`wap_pipeline_tests.permissions.record_calls`), for the IAM tests.

Both are read when the point is reached or the client made, so a test sets them per command.
"""

from __future__ import annotations

import os
from collections.abc import MutableMapping
from pathlib import Path

from wap_pipeline.hooks import Hooks
from wap_pipeline_tests import failpoints
from wap_pipeline_tests.permissions import record_calls

MODULE = __name__
REPOSITORY_ROOT = Path(__file__).resolve().parent.parent


class FailpointHooks(Hooks):
    """Failpoints at the failure boundaries; the call log on every AWS client."""

    def point(self, name: str) -> None:
        failpoints.fire(name)

    def client_created(self, service: str, client) -> None:
        path = os.environ.get("WAP_AWS_CALL_LOG")
        if path:
            record_calls(client, path)


def hooks() -> Hooks:
    return FailpointHooks()


def enable(environ: MutableMapping[str, str] = os.environ) -> None:
    """Name this plugin in ``WAP_HOOKS_MODULE`` and make it importable by child processes (the package
    ``wap_pipeline_tests`` is not installed: the repository root goes on ``PYTHONPATH``)."""
    environ["WAP_HOOKS_MODULE"] = MODULE
    paths = [p for p in environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    if str(REPOSITORY_ROOT) not in paths:
        environ["PYTHONPATH"] = os.pathsep.join([str(REPOSITORY_ROOT), *paths])
