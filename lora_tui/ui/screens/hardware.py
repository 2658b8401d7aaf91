"""Step 2, Hardware: each GPU (NVML) with free / total memory bars, utilisation,
driver, CUDA and bf16 support; CPU and RAM; the memory verdict for the current
plan with its breakdown, and the ranked fixes — Enter (or f) applies one.

The probe and the estimate run in the app's workers; this screen only draws
them. A chosen fix is applied by ``core.workload.apply_fix`` as the same
``section.key=value`` overrides that `lora-tui estimate` prints. ``b`` runs `lora-tui bench`
(core.bench) on the current plan in a worker and shows its table here.
"""

from __future__ import annotations

from rich.markup import escape
from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical, VerticalScroll
from textual.widgets import Label, OptionList, Static
from textual.widgets.option_list import Option
from textual.worker import Worker

from lora_tui.ui.errors import plain_error
from lora_tui.ui.messages import BenchDone, WorkProgress
from lora_tui.ui.screens.base import WizardScreen
from lora_tui.ui.widgets.format import GIB, bar, gib, verdict_markup
from lora_tui.ui.workers import failure, thread_worker

def _libraries(report) -> str:
    if report.torch_version is None:
        return "checking torch and bitsandbytes…"
    text = f"torch {report.torch_version}"
    if report.bitsandbytes_version:
        works = {True: "4-bit works", False: "4-bit fails here", None: "not checked"}[report.bitsandbytes_ok]
        text += f"  bitsandbytes {report.bitsandbytes_version} ({works})"
    else:
        text += "  bitsandbytes not installed (no 4/8-bit loads)"
    return text


class HardwareScreen(WizardScreen):
    STEP = "hardware"
    BINDINGS = [Binding("f", "apply_fix", "Apply fix"), Binding("r", "reprobe", "Re-probe"),
                Binding("b", "bench", "Bench vs TRL"),
                # Enter applies the highlighted fix wherever the focus is (coming back with ctrl+b, say).
                Binding("enter", "apply_fix", "Apply fix", show=False)]

    def __init__(self) -> None:
        super().__init__()
        self._library_probe_asked = False
        self._benching, self._bench_lines = False, []

    def compose_body(self) -> ComposeResult:
        with VerticalScroll(id="hardware-body", classes="body"):
            yield Static("Probing GPUs, CPU and memory…", id="devices")
            yield Static(id="plan")
            yield Static(id="breakdown")
            yield Label("Fixes, largest effect first (Enter or f applies the highlighted one):", id="fixes-title")
            yield OptionList(id="fixes")
            yield Static(id="bench")

    def sync_from_state(self) -> None:
        self._show_devices()
        self._show_plan()
        self.app.request_judgement()
        self._probe_libraries_once()
        fixes = self.query_one("#fixes", OptionList)
        if fixes.display:
            fixes.focus()  # the list Enter works on, also after coming back with ctrl+b

    def _probe_libraries_once(self) -> None:
        report = self.state.hardware
        if report is not None and report.torch_version is None and not self._library_probe_asked:
            self._library_probe_asked = True  # versions and the bitsandbytes check: once, on first visit
            self.app.probe_hardware(check_libraries=True)

    def state_changed(self, what: str) -> None:
        if what == "hardware":
            self._show_devices()
            self._probe_libraries_once()
        self._show_plan()

    def action_reprobe(self) -> None:
        self.query_one("#devices", Static).update("Probing GPUs, CPU and memory…")
        self.app.probe_hardware(check_libraries=True)

    # --- devices -----------------------------------------------------------------------------
    def _show_devices(self) -> None:
        report = self.state.hardware
        widget = self.query_one("#devices", Static)
        if report is None:
            widget.update("Probing GPUs, CPU and memory…")
            return
        width = 24 if self.size.width < 100 else 40
        text = Text()
        if report.gpus:
            for gpu in report.gpus:
                used = gpu.memory_total - gpu.memory_free
                text.append(f"GPU {gpu.index}  {gpu.name}", style="bold")
                cc = ".".join(str(x) for x in gpu.compute_capability) if gpu.compute_capability else "?"
                text.append(f"  sm {cc}  bf16 {'yes' if gpu.bf16 else 'no'}\n", style="dim")
                text.append("  memory ")
                text.append(bar(used / gpu.memory_total if gpu.memory_total else 0, width), style="magenta")
                text.append(f" {gib(gpu.memory_free)} free of {gib(gpu.memory_total)}\n")
                util = gpu.utilization
                text.append("  util   ")
                text.append(bar((util or 0) / 100, width), style="green")
                extra = []
                if gpu.temperature is not None:
                    extra.append(f"{gpu.temperature}°C")
                if gpu.power_draw is not None:
                    limit = f"/{gpu.power_limit:.0f}" if gpu.power_limit else ""
                    extra.append(f"{gpu.power_draw:.0f}{limit} W")
                text.append(f" {util if util is not None else '?'}%  {'  '.join(extra)}\n")
                if gpu.processes:
                    text.append(f"  {len(gpu.processes)} other process(es) hold memory on it\n", style="yellow")
            text.append(f"Driver {report.driver_version or '?'}  CUDA {report.cuda_version or '?'}  "
                        f"{_libraries(report)}\n", style="dim")
            if len(report.gpus) > 1:  # several GPUs: how they are linked and what training would do
                from lora_tui.core.machine.gpu_topology import topology_lines
                from lora_tui.core.plan.devices import strategy_line

                for line in topology_lines(report.topology) or ["links between GPUs: not reported by NVML"]:
                    text.append(f"  {line}\n", style="dim")
                text.append(f"{strategy_line(self.state.config, report)}\n", style="bold")
        else:
            reason = f" ({report.nvml_error})" if report.nvml_error else ""
            text.append(f"No NVIDIA GPU{reason}.", style="bold yellow")
            text.append(" Training runs on the CPU: fine for the embedded model, slow for larger ones.\n")
            text.append(f"{_libraries(report)}\n", style="dim")
        text.append(f"CPU    {report.cpu_count} cores\n", style="bold")
        if report.ram_total:
            used = report.ram_total - report.ram_available
            text.append("RAM    ", style="bold")
            text.append(bar(used / report.ram_total, width), style="magenta")
            text.append(f" {gib(report.ram_available)} available of {gib(report.ram_total)}")
        widget.update(text)

    # --- plan and fixes -------------------------------------------------------------------------
    def _show_plan(self) -> None:
        c = self.state.config
        plan = self.query_one("#plan", Static)
        breakdown = self.query_one("#breakdown", Static)
        fixes = self.query_one("#fixes", OptionList)
        judgement = self.app.current_judgement()
        batch = judgement.batch if judgement is not None else None  # auto values resolved with the estimate
        micro = (c.training.micro_batch if c.training.micro_batch is not None else
                 f"auto → {batch.micro_batch}" if batch is not None else "auto")
        ckpt = (("on" if c.training.gradient_checkpointing else "off") if c.training.gradient_checkpointing is not None else
                f"auto → {'on' if batch.gradient_checkpointing else 'off'}" if batch is not None else "auto")
        longest = self.state.longest_row()
        rows = (f"{c.data.max_seq_len} tokens (data: rows up to {longest})" if longest and longest < c.data.max_seq_len
                else f"{c.data.max_seq_len} tokens")
        if self.state.lengths() is not None and longest is None:  # the data could not be read: say what was assumed
            rows += f" (the data's lengths are unknown: {self.state.lengths().reason})"
        tokens = getattr(batch, "tokens_per_batch", None) if batch is not None else None
        size = (f"token budget {'' if c.training.tokens_per_batch else 'auto → '}{tokens} tokens (rows of up to "
                f"{c.data.max_seq_len} packed whole)" if tokens else f"micro-batch {micro} x {rows}")
        describe = escape(f"Plan: {c.model.load_in} base · r {c.lora.r} on {c.lora.targets} · {size}"
                          f" · gradient checkpointing {ckpt}")
        if self.state.hardware is None or judgement is None:
            reading = " (reading the data's row lengths)" if self.state.lengths() is None else ""
            plan.update(describe + f"\n[dim]Estimating memory{reading}…[/]")
            breakdown.update("")
            self._set_fixes([])
            return
        if judgement.error:
            plan.update(describe + f"\n[yellow]No estimate: {judgement.error}[/]")
            breakdown.update("")
            self._set_fixes([])
            return
        v = judgement.verdict
        notes = "".join(f"\n[dim]{note}[/]" for note in v.notes)
        plan.update(Text.from_markup(f"{describe}\n[b]Needs {gib(v.estimate.total_bytes)}[/] of "
                                     f"{gib(v.available_bytes)} free on {v.device_label}  "
                                     f"{verdict_markup(v.verdict)}{notes}"))
        parts = sorted(v.estimate.breakdown.items(), key=lambda kv: -kv[1])
        breakdown.update(Text("GiB: " + " · ".join(f"{name.replace('_', ' ')} {value / GIB:.2f}"
                                                    for name, value in parts), style="dim"))
        self._set_fixes(v.fixes if v.verdict != "fits" else [])

    def _set_fixes(self, fixes: list) -> None:
        self._fixes = list(fixes)
        option_list = self.query_one("#fixes", OptionList)
        option_list.clear_options()
        for index, fix in enumerate(self._fixes):
            option_list.add_option(Option(Text.from_markup(
                f"{fix.title}  → {gib(fix.new_total_bytes)} {verdict_markup(fix.verdict)}"), id=str(index)))
        self.query_one("#fixes-title").display = bool(self._fixes)
        option_list.display = bool(self._fixes)
        if self._fixes:
            option_list.highlighted = 0

    @on(OptionList.OptionSelected, "#fixes")
    def _fix_chosen(self, event: OptionList.OptionSelected) -> None:
        self._apply(int(event.option.id))

    def action_apply_fix(self) -> None:
        option_list = self.query_one("#fixes", OptionList)
        if not getattr(self, "_fixes", None) or option_list.highlighted is None:
            self.notify("No fix to apply: the plan fits.", timeout=4)
            return
        self._apply(option_list.highlighted)

    def _apply(self, index: int) -> None:
        from lora_tui.core.plan.workload import apply_fix

        fix = self._fixes[index]
        try:
            changed = apply_fix(self.state.config, fix)
        except Exception as exc:  # ConfigError: a fix the config cannot hold
            self.notify(str(exc), severity="error")
            return
        self.notify(f"Applied: {fix.title} ({', '.join(changed)})", timeout=6)
        self.app.request_judgement()
        self._show_plan()

    # --- bench: lora-tui train against plain TRL on this plan -----------------------------------
    def action_bench(self) -> None:
        if self._benching:
            self.notify("The bench is still running.", timeout=4)
            return
        self._benching, self._bench_lines = True, []
        self.query_one("#bench", Static).update(
            "Bench: lora-tui train against plain TRL (its defaults, and with packing), a few steps each; "
            "every arm loads the model in its own process…")
        self._bench(self.state.config.copy())

    @thread_worker("bench")
    def _bench(self, config) -> None:
        def arm_done(arm) -> None:
            figure = "failed" if arm.error else f"{arm.tokens_per_s:,.0f} tokens/s" if arm.tokens_per_s else "no figure"
            self.post_message(WorkProgress("bench", f"{arm.label}: {figure}"))

        def doing(arm: str, text: str) -> None:  # the running arm and its step, every second
            self.post_message(WorkProgress("bench-live", f"{arm}: {text}"))

        self.post_message(BenchDone(self.backend.bench(config, on_arm=arm_done, on_progress=doing)))

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        """BenchError (bad plan, no data) and the unforeseen alike: shown, not raised."""
        failed = failure(event)
        if failed is not None and failed.group == "bench":
            self.post_message(BenchDone(None, error=plain_error(failed.error)))

    @on(WorkProgress)
    def _bench_progress(self, message: WorkProgress) -> None:
        if message.source in ("bench", "bench-live") and self._benching:
            if message.source == "bench":  # an arm's result; the next arm's line comes with its progress
                self._bench_lines.append(message.text)
            live = [message.text] if message.source == "bench-live" else []
            self.query_one("#bench", Static).update(Text("Bench running…\n" + "\n".join(self._bench_lines + live)))

    @on(BenchDone)
    def _bench_done(self, message: BenchDone) -> None:
        from lora_tui.core.bench.runner import summary_lines, table_rows

        self._benching = False
        widget = self.query_one("#bench", Static)
        if message.report is None:
            widget.update(Text(f"Bench failed: {message.error}", style="yellow"))
            return
        report = message.report
        rows = [("arm", "tokens/s", "peak", "MFU")] + table_rows(report)
        widths = [max(len(r[i]) for r in rows) for i in range(4)]
        text = Text(f"Bench on {report.device}, {report.steps} steps per arm (peak: {report.peak_measure})\n", style="bold")
        for n, row in enumerate(rows):
            line = f"{row[0]:<{widths[0]}}  {row[1]:>{widths[1]}}  {row[2]:>{widths[2]}}  {row[3]:>{widths[3]}}\n"
            text.append(line, style="dim" if n == 0 else "")
        for line in summary_lines(report):
            text.append(line + "\n", style="dim")
        widget.update(text)
