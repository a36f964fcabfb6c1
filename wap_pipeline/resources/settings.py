"""The project's settings as one typed Dagster resource, which every other resource is built from.

Its fields are :class:`~wap_pipeline.settings.Settings`' fields, with their types and defaults, so one
schema serves the CLIs (which read the environment when they start) and Dagster (where the values are resource
configuration, shown in the UI, and set once in :func:`wap_pipeline.definitions.resources_for`). Each
resource holds it as its ``config`` (a nested resource: Dagster builds it with the resource).
"""

from __future__ import annotations

import dataclasses
import typing

from dagster import ConfigurableResource
from pydantic import create_model

from wap_pipeline.settings import Settings


class _SettingsMethods(ConfigurableResource):
    def settings(self) -> Settings:
        """The frozen settings object the rest of the code takes."""
        return Settings(**{field.name: getattr(self, field.name) for field in dataclasses.fields(Settings)})


_types = typing.get_type_hints(Settings)

SettingsResource = create_model(
    "SettingsResource",
    __base__=_SettingsMethods,
    __module__=__name__,
    __doc__="Every setting of :class:`~wap_pipeline.settings.Settings`, as typed resource configuration.",
    **{field.name: (_types[field.name], field.default) for field in dataclasses.fields(Settings)},
)


def settings_resource(settings: Settings, **overrides: object) -> ConfigurableResource:
    """The resource holding ``settings``; ``overrides`` replace fields (e.g. with a ``dg.EnvVar``)."""
    values = {field.name: getattr(settings, field.name) for field in dataclasses.fields(Settings)}
    return SettingsResource(**{**values, **overrides})
