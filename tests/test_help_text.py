"""The help pages: device defaults, summaries never cut, examples one per paragraph."""

import re

import pytest

from tests.cli_helpers import invoke

COMMANDS = ["train", "eval", "convert", "info", "predict", "compare", "plot", "sweep", "check"]


def help_of(*command, width=80):
    result = invoke(*command, "--help", terminal_width=width)
    assert result.exit_code == 0
    return result.output


def test_predict_device_defaults_to_auto_like_every_command():
    for command in COMMANDS:
        text = help_of(command)
        if "--device" in text:
            assert re.search(
                r"--device <str>\s+auto \(cuda when present\), cpu or cuda\.\s+\[default:\s+auto\]", text
            ), command


@pytest.mark.parametrize("width", [60, 80])
def test_the_command_lists_never_cut_a_summary(width):
    for listing in (help_of(width=width), help_of("show", width=width)):
        commands = listing.split("Commands:")[1]
        assert "..." not in commands, commands
    assert "Show a model's parameter tensors" in help_of(width=width)


def test_help_has_no_bool_metavars_run_on_examples_or_repeated_examples():
    pages = {command: help_of(command, width=100) for command in COMMANDS} | {
        "show conv": help_of("show", "conv")
    }
    for command, text in pages.items():
        assert "<bool>" not in text, command
        for line in text.splitlines():  # each example is its own paragraph
            assert line.count("Example:") <= 1 and (
                line.strip().startswith("Example:") or "Example:" not in line
            )
    options = pages["sweep"].split("Options:")[1]
    assert options.count("0.003,0.01,0.03") == 1
    examples = re.findall(r"e\.g\. ([0-9.,e-]+)", options)
    assert len(examples) == len(set(examples)) >= 5  # each list option its own example
