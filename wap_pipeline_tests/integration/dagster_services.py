"""The Dagster services a test needs (webserver, daemon, code server): the product's own headless stack."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from wap_pipeline.headless import dagster_stack
from wap_pipeline.settings import Settings
from wap_pipeline.state import ensure_dagster_home


@contextmanager
def dagster_services() -> Iterator[str]:
    """The URL of a webserver (with its daemon) serving the test's Dagster instance; stopped after the block.

    Its log is ``$DAGSTER_HOME/.stack/stack.log``.
    """
    with dagster_stack(ensure_dagster_home(Settings.from_env())) as url:
        yield url
