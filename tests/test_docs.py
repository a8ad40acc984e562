"""What the README and the Flex Template say about flags agrees with the one declaration of them."""

import json
import os
import re

from rsdt_beam.cli.commands import COMMANDS, SCHEDULED
from rsdt_beam.cli.flags import GROUPS, all_flags
from rsdt_beam.cli.reference import BEGIN, END, flags_markdown

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _read(*parts: str) -> str:
    with open(os.path.join(REPO, *parts)) as f:
        return f.read()


def test_readme_flag_reference_is_the_parsers():
    readme = _read("README.md")
    assert readme[readme.index(BEGIN) : readme.index(END) + len(END)] == flags_markdown()


def test_defaults_stated_in_prose_are_the_parsers():
    flags = all_flags()
    stated = re.findall(r"`--(\w+)` \([^()]*?default:? `?([^`\s)]+?)`?\)", _read("README.md"))
    assert stated, "the README states some defaults in prose"
    for name, value in stated:
        assert str(flags[name].default) == value, f"README says --{name} defaults to {value}"


def test_flex_template_covers_every_scheduled_flag_with_the_parsers_defaults():
    parameters = {p["name"]: p for p in json.loads(_read("flex_template", "metadata.json"))["parameters"]}
    flags = {flag.name: flag for group in SCHEDULED.groups for flag in GROUPS[group].flags}
    assert set(flags) <= set(parameters), sorted(set(flags) - set(parameters))
    assert set(parameters) - set(flags) <= {"sdk_container_image"}  # Beam's own
    for name, flag in flags.items():
        text = parameters[name]["helpText"]
        if flag.boolean:
            assert parameters[name]["regexes"] == ["^(true|false)$"], name
            assert text.endswith("Default: false."), name
        elif flag.default is not None:
            assert text.endswith(f"Default: {flag.default}."), (name, text)


def test_every_command_help_lists_only_its_groups(capsys):
    for command in COMMANDS:
        command.parser().print_help(full=True)
        shown = capsys.readouterr().out
        for key, group in GROUPS.items():
            assert (group.title + ":" in shown) == (key in command.groups), (command.name, group.title)
