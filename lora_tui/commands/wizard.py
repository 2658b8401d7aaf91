"""`lora-tui` with no command: open the Textual wizard.

Refuses, with exit status 2, when there is no terminal to draw on (`lora-tui </dev/null`,
`nohup lora-tui`, a cron job): the wizard would otherwise wait forever for keys.
"""

from __future__ import annotations

import sys

NO_TERMINAL = (
    "lora-tui: the wizard needs a terminal, and its {what} is not one.\n"
    "Without one, use the headless commands: lora-tui validate DATA, lora-tui train [CONFIG] [section.key=value ...],\n"
    "lora-tui estimate, lora-tui runs, lora-tui attach RUN, lora-tui chat RUN --prompt TEXT, lora-tui export RUN "
    "(`lora-tui --help` lists them all)."
)


def missing_terminal() -> str | None:
    """What is not a terminal among the streams Textual uses (it reads stdin and draws on stderr)."""
    for name, stream in (("standard input", sys.stdin), ("standard error", sys.stderr)):
        try:
            if stream is None or not stream.isatty():
                return name
        except (AttributeError, ValueError):  # closed or replaced stream
            return name
    return None


def run(args) -> int:
    what = missing_terminal()
    if what:
        print(NO_TERMINAL.format(what=what), file=sys.stderr if sys.stderr else sys.stdout)
        return 2

    from lora_tui.ui.app import make_app

    app = make_app(model=args.wizard_model if hasattr(args, "wizard_model") else None,
                   data=getattr(args, "wizard_data", None),
                   run=getattr(args, "wizard_run", None))
    app.run()
    return int(app.return_code or 0)
