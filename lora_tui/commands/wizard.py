"""`lora-tui` with no command: open the Textual wizard."""

from __future__ import annotations


def run(args) -> int:
    from lora_tui.ui.app import make_app

    app = make_app(model=args.wizard_model if hasattr(args, "wizard_model") else None,
                   data=getattr(args, "wizard_data", None),
                   run=getattr(args, "wizard_run", None))
    app.run()
    return int(app.return_code or 0)
