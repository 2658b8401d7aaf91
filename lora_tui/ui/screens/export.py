"""Step 7, Export: where the adapter and its model card are, and the ways to take it
elsewhere: a zip of the adapter, a merged standalone model, a GGUF file of any type
(llama.cpp, Ollama, LM Studio; each offered with its size before writing), an Ollama
Modelfile, and a push to the Hugging Face Hub. The formats, their keys and GGUF types come
from ``lora_tui.core.export.formats``.

Zip, merge, GGUF and push run in thread workers through ``lora_tui.core`` (export,
export_check, hub); a merged model or GGUF is loaded back and checked, and the verdict table
(gain kept, KL, same top token, template, stop token) is shown. Nothing existing is replaced
unless the user confirms.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Button, Label, Markdown, OptionList, Static
from textual.widgets.option_list import Option
from textual.worker import Worker

from lora_tui.core.export.formats import DEFAULT_GGUF_TYPE, EXPORT_FORMATS, GGUF_TYPE_NOTES, export_format

from lora_tui.ui.errors import plain_error
from lora_tui.ui.messages import ExportDone, WorkProgress
from lora_tui.ui.screens.base import WizardScreen
from lora_tui.ui.screens.dialogs import Confirm, PathPrompt
from lora_tui.ui.widgets.format import human_size
from lora_tui.ui.workers import failure, thread_worker


def _without_front_matter(card: str) -> str:
    """The model card without its YAML header (metadata for the hub, noise on screen)."""
    if card.startswith("---\n"):
        end = card.find("\n---", 4)
        if end != -1:
            return card[end + 4:].lstrip()
    return card


def _verdict(item: dict) -> str:
    check = item.get("check") or {}
    return f", check: {check['verdict']}{'' if check.get('ok') else ' (FAILED)'}" if check.get("verdict") else ""


# formats offered in the GGUF chooser rather than as buttons of their own (the LoRA GGUF)
GROUPED = tuple(f for f in EXPORT_FORMATS if f.name.startswith("gguf_"))


class GGUFChoice(ModalScreen[str | None]):
    """Every GGUF type (formats.GGUF_TYPES) and the LoRA GGUF, each with its estimated size; returns the type
    chosen, or the LoRA GGUF's format name."""

    BINDINGS = [Binding("escape", "dismiss(None)", "Cancel")]

    def __init__(self, sizes: dict, existing: set[str]) -> None:
        super().__init__(classes="dialog-screen")
        self.sizes, self.existing = sizes, existing

    def compose(self) -> ComposeResult:
        gguf = export_format("gguf")
        options = []
        for name in gguf.options:
            size = f"~{human_size(self.sizes[name])}" if name in self.sizes else "size unknown"
            mark = " default" if name == gguf.default else ""
            mark += " written" if name in self.existing else ""
            options.append(Option(f"{name:<7}{GGUF_TYPE_NOTES.get(name, ''):<24}{size:>11}{mark}", id=name))
        for fmt in GROUPED:
            size = f"~{human_size(self.sizes[fmt.name])}" if fmt.name in self.sizes else "size unknown"
            mark = " written" if fmt.name in self.existing else ""
            options.append(Option(f"{'lora':<7}{'the adapter alone':<24}{size:>11}{mark}", id=fmt.name))
        with Vertical(classes="dialog"):
            yield Label("Write a GGUF file: which type?", classes="dialog-title")
            yield OptionList(*options, id="gguf-types")
            base = f" (~{human_size(self.sizes['f16'])})" if "f16" in self.sizes else ""
            yield Static("Sizes are estimated before writing. lora applies on the base model's f16 GGUF, written "
                         f"once{base} and shared by every adapter of that base. The file is loaded back in llama.cpp "
                         "and checked: how much of what training taught it keeps. Enter writes, esc cancels.",
                         classes="hint")

    def on_mount(self) -> None:
        types = self.query_one("#gguf-types", OptionList)
        types.highlighted = list(export_format("gguf").options).index(export_format("gguf").default)
        types.focus()

    @on(OptionList.OptionSelected)
    def _chosen(self, event: OptionList.OptionSelected) -> None:
        self.dismiss(event.option.id)


def answer_lines(check) -> list[tuple[str, str]]:
    """The greedy answers one under the other, whole, for the wrapping detail pane: the CLI's side-by-side
    table (RoundTrip.table) needs 80 columns for its rows alone and cut each answer to 21 characters."""
    label = check.kind.upper() + " artefact" + (" in llama.cpp" if check.runtime.startswith("llama.cpp") else "")
    lines = [("\n", "")]
    for a in check.answers:
        same = "same" if a.same else "different" + ("" if a.artefact_stopped or not a.reference_stopped
                                                    else " (the artefact did not stop)")
        lines += [("Prompt: ", "bold"), (a.prompt + "\n", ""), ("  Adapter on base: ", "dim"), (a.reference + "\n", ""),
                  (f"  {label}: ", "dim"), (a.artefact + "\n", ""), (f"  {same}\n", "green" if a.same else "yellow")]
    return lines + [("\n", "")]


class ExportScreen(WizardScreen):
    STEP = "export"
    BINDINGS = [*(Binding(f.key, f"export('{f.name}')", f.short) for f in EXPORT_FORMATS if f not in GROUPED),
                Binding("o", "modelfile", "Modelfile"), Binding("p", "push", "Push")]

    def __init__(self) -> None:
        super().__init__()
        self._busy = False
        self._merged: Path | None = None
        self._shown_for: str | None = None
        self._detail_shown = False  # the detail panel shows a Modelfile: keep it over the model card
        self._summary_data: dict = {}
        self._sizes: dict = {}  # estimated bytes of each GGUF type, before writing

    def compose_body(self) -> ComposeResult:
        with Vertical(id="export-body", classes="body"):
            yield Static(id="export-where")
            with Horizontal(id="export-buttons", classes="row"):
                for fmt in EXPORT_FORMATS:
                    if fmt not in GROUPED:
                        yield Button(f"{fmt.short} ({fmt.key})", id=fmt.name, compact=True)
                yield Button("Modelfile (o)", id="modelfile", compact=True)
                yield Button("Push to Hub (p)", id="push", compact=True)
            yield Static(id="export-result")
            with VerticalScroll(id="export-detail"):
                yield Markdown(id="export-card")
                yield Static(id="export-text")

    def sync_from_state(self) -> None:
        run = self.state.run
        where = self.query_one("#export-where", Static)
        if run is None:
            where.update("[yellow]No run yet: train an adapter first, or open a run with lora-tui --run DIR.[/]")
            return
        if self._shown_for != str(run.path):
            self._shown_for = str(run.path)
            self._merged = None
            self._detail_shown = False
            self.query_one("#export-result", Static).update("")
            self.query_one("#export-text", Static).update("")
            self.query_one("#export-card", Markdown).update("")
        where.update("Reading the run…")
        self._summary(run)
        if not self._sizes:
            self._estimate(run)

    @thread_worker("export-summary")
    def _summary(self, run) -> None:
        self.post_message(ExportDone("summary", self.backend.export_summary(run)))

    @thread_worker("export-sizes")
    def _estimate(self, run) -> None:
        self.post_message(ExportDone("sizes", self.backend.export_sizes(run)))

    def _show_summary(self, summary: dict | None, error: str | None) -> None:
        run = self.state.run
        self._summary_data = summary or {}
        text = Text()
        if error or not summary or not summary.get("adapter"):
            text.append(f"No adapter in {run.adapter_dir} yet", style="bold yellow")
            text.append(f" ({error})" if error else ": it is written when training finishes or is stopped.")
            self.query_one("#export-where", Static).update(text)
            return
        adapter = Path(summary["adapter"])

        def row(label: str, value: str, style: str = "") -> None:
            text.append(f"{label:<12}", style="bold")
            text.append(value + "\n", style=style)

        row("Adapter", f"{adapter}  ({human_size(summary.get('adapter_bytes') or 0)}, "
                       f"{len(summary.get('adapter_files') or [])} files)")
        row("Model card", summary.get("model_card") or "none")
        row("Base model", str(summary.get("base_model")))
        if summary.get("zip"):
            row("Zip", f"{summary['zip']}  ({human_size(summary.get('zip_bytes') or 0)})")
        else:
            row("Zip", "not yet (z)", "dim")
        merged = summary.get("merged") or []
        for item in merged:
            row("Merged", f"{item['path']}  ({item.get('dtype')}, {human_size(item.get('bytes') or 0)}{_verdict(item)})")
        if not merged:
            row("Merged", "not yet (m)", "dim")
        else:
            self._merged = Path(merged[-1]["path"])
        for item in summary.get("gguf") or []:
            row("GGUF", f"{item['path']}  ({item.get('type')}, {human_size(item.get('bytes') or 0)}{_verdict(item)})")
        for item in summary.get("gguf_adapter") or []:
            row("LoRA GGUF", f"{item['path']}  ({human_size(item.get('bytes') or 0)}{_verdict(item)})")
        if not summary.get("gguf"):
            row("GGUF", "not yet (g)", "dim")
        text.append("Load it     ", style="bold")
        text.append(f'PeftModel.from_pretrained(base_model, "{adapter}")', style="dim")
        self.query_one("#export-where", Static).update(text)
        card = summary.get("model_card")
        if card and not self._detail_shown:
            try:
                self.query_one("#export-card", Markdown).update(_without_front_matter(
                    Path(card).read_text(encoding="utf-8")[:20000]))
            except OSError:
                pass

    # --- actions -------------------------------------------------------------------------------
    @on(Button.Pressed)
    def _pressed(self, event: Button.Pressed) -> None:
        if event.button.id in ("modelfile", "push"):
            {"modelfile": self.action_modelfile, "push": self.action_push}[event.button.id]()
        else:
            self.action_export(event.button.id)

    def action_export(self, name: str) -> None:
        """One export format of formats.EXPORT_FORMATS: how each asks for its options."""
        {"zip": self.action_zip, "merged": self.action_merge, "gguf": self.action_gguf}[name]()

    def _refuse(self) -> bool:
        run = self.state.run
        if run is None or not (run.adapter_dir / "adapter_config.json").is_file():
            self.notify("No adapter to export yet.", severity="warning", timeout=5)
            return True
        if self._busy:
            self.notify("Still working on the last export.", timeout=4)
            return True
        return False

    def _export(self, worker: Callable[..., object], *args, ask: Confirm | None = None, working: str | None = None,
                cancelled: Callable[[], None] | None = None) -> None:
        """Every export's sequence: ``ask`` first when given (no: ``cancelled``, else nothing happens), then the
        screen is busy, the result line says ``working`` and ``worker(*args)`` starts; its ExportDone ends it."""

        def start() -> None:
            self._busy = True
            if working is not None:
                self.query_one("#export-result", Static).update(working)
            worker(*args)

        if ask is None:
            start()
        else:
            self.app.push_screen(ask, lambda yes: start() if yes else cancelled() if cancelled else None)

    def action_zip(self) -> None:
        if self._refuse():
            return
        existing = self._summary_data.get("zip")
        ask = Confirm("Replace the zip?", f"{existing} exists. Zip the adapter again over it?", yes="Replace") \
            if existing else None
        self._export(self._zip, self.state.run, bool(existing), ask=ask, working="Zipping the adapter…")

    @thread_worker("export")
    def _zip(self, run, overwrite: bool) -> None:
        self.post_message(ExportDone("zip", self.backend.zip_adapter(run, overwrite=overwrite)))

    def action_merge(self) -> None:
        if self._refuse():
            return
        run = self.state.run
        from lora_tui.core.export.artefacts import default_merged_path

        default = str(default_merged_path(run.path))  # inside the run folder, which merge_adapter accepts

        def chosen(out: str | None) -> None:
            if not out:
                return
            path = Path(out).expanduser()
            full = path.exists() and any(path.iterdir())
            ask = Confirm("Replace the folder?", f"{out} exists and is not empty. Replace it with the merged model?",
                          yes="Replace", danger=True) if full else None
            self._export(self._merge, self.state.run, out, full, ask=ask, working="Merging: loading the base model…")

        self.app.push_screen(PathPrompt("Merge the adapter into the base model: output folder", default,
                                        "A standalone model that loads with plain transformers, plus an Ollama "
                                        "Modelfile."), chosen)

    @thread_worker("export")
    def _merge(self, run, out: str, overwrite: bool) -> None:
        progress = lambda text, fraction: self.post_message(WorkProgress("merge", text, fraction))  # noqa: E731
        result = self.backend.merge(run, out, overwrite=overwrite, on_progress=progress)
        check = self._check(run, result, None, progress)
        self.post_message(ExportDone("merge", result, details={"out": out, "check": check}))

    def _check(self, run, artefact, gguf_file, progress, lora=None):
        """The round-trip check; its failure to run is reported, never raised over the written export."""
        try:
            return self.backend.verify_export(run, artefact, gguf_file=gguf_file, on_progress=progress,
                                              **({"lora": lora} if lora else {}))
        except Exception as exc:
            return plain_error(exc)

    def action_gguf(self) -> None:
        if self._refuse():
            return
        written = {g.get("type") for g in self._summary_data.get("gguf") or []}
        written |= {f.name for f in GROUPED if self._summary_data.get(f.name)}

        def chosen(choice: str | None) -> None:
            if not choice:
                return
            # a GGUF type of the merged model, or a format of its own offered here (the LoRA GGUF)
            name, option = (choice, None) if choice in {f.name for f in GROUPED} else ("gguf", choice)
            existing = [g for g in self._summary_data.get(name) or [] if option is None or g.get("type") == option]
            what = "the LoRA GGUF" if option is None else "the GGUF"
            ask = Confirm(f"Replace {what}?", f"{existing[0]['path']} exists. Write it again?", yes="Replace") \
                if existing else None
            working = "LoRA GGUF: writing the adapter (and the base once)…" if option is None else \
                f"GGUF {option}: loading and merging…"
            self._export(self._gguf, self.state.run, name, option, bool(existing), ask=ask, working=working)

        self.app.push_screen(GGUFChoice(self._sizes, written), chosen)

    @thread_worker("export")
    def _gguf(self, run, name: str, option: str | None, overwrite: bool) -> None:
        """Any GGUF of the table (formats.py): its writer, then its check on what was written (a LoRA GGUF is
        checked applied on its base file, in llama.cpp)."""
        progress = lambda text, fraction: self.post_message(WorkProgress("gguf", text, fraction))  # noqa: E731
        written = self.backend.write_export(run, name, option=option, overwrite=overwrite, on_progress=progress)
        artefact, gguf_file, lora = export_format(name).check_target(written)
        check = self._check(run, artefact, gguf_file, progress, lora=lora)
        path = getattr(written, "path", written)
        modelfile = getattr(written, "modelfile", None)
        self.post_message(ExportDone("gguf", path, details={"check": check, "type": option or "lora",
                                                            "modelfile": modelfile.name if modelfile else None}))

    def action_push(self) -> None:
        if self._refuse():
            return
        run = self.state.run

        def chosen(repo_id: str | None) -> None:
            if repo_id:
                self._export(self._push_plan, run, repo_id.strip())  # the plan comes back to be confirmed

        self.app.push_screen(PathPrompt("Push the adapter and its model card to the Hugging Face Hub: repository id",
                                        f"your-name/{run.name}", "The token comes from HF_TOKEN or `hf auth login` "
                                        "and is never written anywhere. Nothing is sent before you confirm."), chosen)

    @thread_worker("export")
    def _push_plan(self, run, repo_id: str) -> None:
        self.post_message(ExportDone("push-plan", self.backend.upload_plan(run, repo_id)))

    def _confirm_push(self, plan) -> None:
        files = "\n".join(f"  {name} ({human_size(path.stat().st_size)})" for path, name in plan.files)
        self._export(self._push, plan, ask=Confirm("Upload to the Hub?", f"https://huggingface.co/{plan.repo_id} gets "
                                                   f"{len(plan.files)} files ({human_size(plan.total_bytes)}):\n{files}",
                                                   yes="Upload"), cancelled=self._cancel_push)

    def _cancel_push(self) -> None:
        self._busy = False
        self.query_one("#export-result", Static).update("Push cancelled: nothing was sent.")

    @thread_worker("export")
    def _push(self, plan) -> None:
        self.post_message(ExportDone("push", self.backend.push(plan)))

    FAILED_AS = {"_summary": "summary", "_estimate": "sizes", "_zip": "zip", "_merge": "merge", "_gguf": "gguf",
                 "_push_plan": "push", "_push": "push"}  # worker -> the ExportDone its failure reads as

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        """An export worker that raised: its ExportDone with the error (shown as ✗ ..., the busy mark cleared)."""
        failed = failure(event)
        if failed is not None and failed.group in ("export", "export-summary", "export-sizes"):
            self.post_message(ExportDone(self.FAILED_AS[failed.name], None, error=plain_error(failed.error)))

    def _show_check(self, check) -> None:
        if check is None:
            return
        self._detail_shown = True
        self.query_one("#export-card", Markdown).display = False
        if isinstance(check, str):
            self.query_one("#export-text", Static).update(Text(f"Round-trip check could not run: {check}", style="bold red"))
            return
        from lora_tui.core.export.check import THRESHOLDS

        style = "bold green" if check.ok else "bold red"
        lines = [(("PASS" if check.ok else "FAIL") + f" ({check.runtime}): {check.verdict_words}\n\n", style)]
        for name, value in check.verdict_rows()[:-1]:
            lines += [(f"{name:<16}", "bold"), (value + "\n", "")]
        lines += answer_lines(check) + [("Thresholds: " + THRESHOLDS + "\n", "dim")]
        lines += [(f"Problem: {p}\n", "red") for p in check.problems] + [(f"Note: {n}\n", "dim") for n in check.notes]
        self.query_one("#export-text", Static).update(Text.assemble(*lines))

    @on(WorkProgress)
    def _progress(self, message: WorkProgress) -> None:
        if message.source in ("merge", "gguf") and self._busy:
            pct = f" {message.fraction:.0%}" if message.fraction else ""
            label = "Merging" if message.source == "merge" else "GGUF"
            self.query_one("#export-result", Static).update(f"{label}: {message.text}{pct}")

    def action_modelfile(self) -> None:
        if self._refuse():
            return
        modelfile = self._merged / "Modelfile" if self._merged else None
        if modelfile is None or not modelfile.is_file():
            self.notify("The Ollama Modelfile is written with the merged model: press m to merge first.",
                        timeout=6)
            return
        self._show_modelfile(modelfile)

    def _show_modelfile(self, modelfile: Path) -> None:
        self._detail_shown = True
        self.query_one("#export-card", Markdown).display = False
        try:
            body = modelfile.read_text(encoding="utf-8")
        except OSError as exc:
            body = f"cannot read {modelfile}: {exc.strerror}"
        self.query_one("#export-text", Static).update(Text.assemble(
            (f"{modelfile}\n", "bold"), (f"Use it: cd {modelfile.parent} && ollama create my-model -f Modelfile\n\n",
                                         "dim"), body))

    @on(ExportDone)
    def _done(self, message: ExportDone) -> None:
        if message.what == "summary":
            self._show_summary(message.result, message.error)
            return
        if message.what == "sizes":  # unknown sizes (an error) leave the chooser saying so
            self._sizes = message.result or {}
            return
        if message.what == "push-plan":
            self._confirm_push(message.result)
            return
        self._busy = False
        result = self.query_one("#export-result", Static)
        if message.error:
            result.update(Text(f"✗ {message.error}", style="bold red"))
            return
        if message.what == "zip":
            path = Path(str(message.result))
            result.update(Text(f"✓ Zipped: {path}", style="bold green"))
        elif message.what == "merge":
            out = Path(str(message.result or message.details.get("out")))
            self._merged = out
            result.update(Text(f"✓ Merged model: {out}. It loads with plain transformers.", style="bold green"))
            if (out / "Modelfile").is_file() and not message.details.get("check"):
                self._show_modelfile(out / "Modelfile")
            self._show_check(message.details.get("check"))
        elif message.what == "gguf":
            path = Path(str(message.result))
            kind = message.details.get("type") or DEFAULT_GGUF_TYPE
            modelfile = message.details.get("modelfile") or f"Modelfile-{kind}"
            result.update(Text(f"✓ GGUF {kind}: {path} (Ollama: cd {path.parent} && ollama create my-model -f "
                               f"{modelfile})", style="bold green"))
            self._show_check(message.details.get("check"))
        elif message.what == "push":
            result.update(Text(f"✓ Uploaded: {message.result}", style="bold green"))
        self._summary(self.state.run)  # sizes and paths of what now exists

    def next_refusal(self) -> str | None:
        return "This is the last step. ctrl+q quits; ctrl+b goes back."
