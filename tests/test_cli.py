"""The `ptm` CLI through Typer's runner: happy paths, JSON, and errors without tracebacks."""

import json

import pytest
from typer.testing import CliRunner

from cli.main import app

runner = CliRunner()


def invoke(*args):
    return runner.invoke(app, list(args))


def test_info_prints_the_books_numel_list():
    result = invoke("info", "net")
    assert result.exit_code == 0, result.output
    assert "18,090" in result.output
    assert "[432, 16, 1152, 8, 16384, 32, 64, 2]" in result.output


def test_info_json_parses_and_counts_tied_resdeep_once():
    result = invoke("info", "resdeep", "--tied", "--json")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["total"] == 75810
    assert summary["tied_keys"] == 99 * 6
    untied = json.loads(invoke("info", "resdeep", "--json").stdout)
    assert untied["total"] == 994530


@pytest.mark.parametrize(
    "args,code,needle",
    [
        (("info", "resnet"), 2, "choose one of: net, width"),
        (("info", "net", "--n-blocks", "3"), 2, "takes no option"),
        (("info", "resdeep", "--n-blocks", "0"), 2, "positive"),
    ],
)
def test_info_errors_are_one_line_without_traceback(args, code, needle):
    result = invoke(*args)
    assert result.exit_code == code
    assert needle in result.output
    assert "Traceback" not in result.output


def test_help_shows_examples():
    assert "Example: ptm info" in invoke("--help").output
    assert "Example: ptm info resdeep" in invoke("info", "--help").output
