"""A checkbox that reads the same in every terminal and screenshot: [x] on, [ ] off.

Textual's compact Checkbox shows an 'X' in both states (only its colour changes),
which is ambiguous over SSH with few colours.
"""

from __future__ import annotations

from textual.content import Content
from textual.widgets import Checkbox


class Tick(Checkbox):
    @property
    def _button(self) -> Content:
        style = self.get_visual_style("toggle--label")
        return Content.assemble(("[x]" if self.value else "[ ]", style))
