"""The flag reference of the README, made from the one declaration of every flag (`rsdt_beam.cli.flags`).

python -m rsdt_beam.cli.reference      # prints the Markdown the README carries between its markers
"""

from __future__ import annotations

from rsdt_beam.cli.commands import COMMANDS
from rsdt_beam.cli.flags import GROUPS

BEGIN = "<!-- flags: made by python -m rsdt_beam.cli.reference; do not edit by hand -->"
END = "<!-- flags: end -->"


def _default(flag) -> str:
    if flag.boolean:
        return "false"
    return "" if flag.default is None else f"`{flag.default}`"


def flags_markdown() -> str:
    """One table per flag group: flag, default, meaning, and the commands that take it; advanced flags
    (shown by `--help-all` only) are marked."""
    lines = [BEGIN]
    for key, group in GROUPS.items():
        users = [command.name for command in COMMANDS if key in command.groups]
        lines += ["", f"**{group.title}** ({', '.join(users)})", "", "| flag | default | meaning |", "|---|---|---|"]
        lines += [
            f"| `--{flag.name}`{' (advanced)' if flag.advanced else ''} | {_default(flag)} | "
            f"{flag.help.replace('|', '&#124;')} |"
            for flag in group.flags
        ]
    lines += ["", END]
    return "\n".join(lines)


if __name__ == "__main__":
    print(flags_markdown())
