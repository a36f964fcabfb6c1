"""Every data-patcher verb answers --help (in-process: no AWS needed)."""

import click
from click.testing import CliRunner

from wap_pipeline.cli.patcher import cli


def _commands(group: click.Group, path: tuple[str, ...] = ()):
    for name, command in group.commands.items():
        yield (*path, name), command
        if isinstance(command, click.Group):
            yield from _commands(command, (*path, name))


def test_every_verb_has_help():
    verbs = dict(_commands(cli))
    assert {("inspect",), ("secure-clean",), ("resume-pipeline",), ("audit-log",)} <= set(verbs)
    for path, command in verbs.items():
        result = CliRunner().invoke(cli, [*path, "--help"])
        assert result.exit_code == 0, (path, result.output)
        first_words = " ".join((command.help or "").split()[:5])
        assert first_words and first_words in " ".join(result.output.split()), path


def test_remove_chars_that_would_break_the_json_are_a_usage_error():
    result = CliRunner().invoke(cli, ["secure-clean", "f.ndjson", "--remove-chars", '"'])
    assert result.exit_code == 2 and "structural" in result.output
