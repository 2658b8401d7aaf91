"""Widgets of the training screen: the loss plot and the text panels (now, system).

Each takes plain data (a ``RunHistory``, a system event dict) and renders it;
none of them reads files or runs workers.
"""

from __future__ import annotations

import ast

from rich.text import Text
from textual_plotext import PlotextPlot

from lora_tui.core.run.history import RunHistory
from lora_tui.ui.widgets.format import GIB, bar, count, number

MAX_POINTS = 400  # plotext draws a few hundred points in well under a frame
# transformers prints each log as a Python dict; these keys get short names in the log pane
# ({} marks where the value goes when it is not simply after the name).
LOG_KEYS = {"loss": "loss", "grad_norm": "grad norm", "learning_rate": "lr", "epoch": "epoch",
            "eval_loss": "eval loss", "train_loss": "train loss", "train_runtime": "runtime {}s",
            "train_samples_per_second": "samples/s", "train_steps_per_second": "steps/s",
            "eval_runtime": "eval runtime {}s", "eval_samples_per_second": "eval samples/s",
            "eval_steps_per_second": "eval steps/s", "num_tokens": "tokens", "mean_token_accuracy": "accuracy",
            "entropy": "entropy", "total_flos": "flos"}


def _thin(xs: list, ys: list) -> tuple[list, list]:
    if len(xs) <= MAX_POINTS:
        return xs, ys
    stride = -(-len(xs) // MAX_POINTS)
    return xs[::stride] + xs[-1:], ys[::stride] + ys[-1:]


def _tick_step(last: int, wanted: int = 5) -> int:
    """A round step (1, 2, 5, 10, 20, 50...) giving at most ``wanted`` ticks up to ``last``."""
    magnitude = 1
    while True:
        for multiple in (1, 2, 5):
            if last / (multiple * magnitude) <= wanted:
                return multiple * magnitude
        magnitude *= 10


class LossPlot(PlotextPlot):
    """Train loss per logged step, and eval loss where evaluations ran."""

    def show(self, history: RunHistory) -> None:
        plt = self.plt
        plt.clear_figure()
        plt.title("loss")
        plt.xlabel("step")
        if history.steps:
            xs, ys = _thin(history.steps, history.losses)
            plt.plot(xs, ys, label="train", marker="hd", color="cyan")
        if history.eval_steps:
            # Points, not a line: evaluations are few and far apart.
            plt.scatter(history.eval_steps, history.eval_losses, label="eval", marker="o", color="orange")
        if not history.steps and not history.eval_steps:
            plt.title("loss (waiting for the first step)")
        last = max(history.steps[-1:] + history.eval_steps[-1:] or [0])
        if last >= 1:
            ticks = list(range(0, last + 1, _tick_step(last)))
            plt.xticks(ticks, [str(t) for t in ticks])
        self.refresh()


def now_panel(history: RunHistory) -> Text:
    step = history.last_step or {}
    before = history.evals_by_phase.get("before") or {}
    last_eval = history.last_eval or {}
    text = Text()

    def row(label: str, value: str, style: str = "") -> None:
        text.append(f"{label:<10}", style="dim")
        text.append(value + "\n", style=style)

    row("loss", number(step.get("loss")), "bold")
    if last_eval:
        ppl = last_eval.get("perplexity")
        row("eval loss", number(last_eval.get("eval_loss")) + (f"  ppl {ppl:.3g}" if ppl else ""), "bold")
    if before and before is not last_eval:
        row("  before", number(before.get("eval_loss")))
    if history.method != "sft":
        for line in preference_rows(step, last_eval, before):
            row(*line)
    row("lr", f"{step['lr']:.2e}" if step.get("lr") is not None else "–")
    row("grad norm", number(step.get("grad_norm"), 3))
    speed = f"{step['tokens_per_s']:.0f}" if step.get("tokens_per_s") is not None else "–"
    row("tokens/s", speed + (f"  ({count(step['tokens_seen'])} seen)" if step.get("tokens_seen") else ""))
    text.rstrip()
    return text


def preference_rows(step: dict, last_eval: dict, before: dict) -> list[tuple[str, str]]:
    """dpo / kto: the reward margin (chosen - rejected), reward accuracy (share of pairs whose chosen answer
    gains more than the rejected one), and the answers' log-probabilities; the evaluation's beside them."""
    def pct(value) -> str:
        return f"{100 * value:.0f}%" if value is not None else "–"

    rows = [("margin", number(step.get("reward_margin"), 3)), ("reward acc", pct(step.get("reward_accuracy")))]
    if last_eval.get("reward_accuracy") is not None:
        was = f" (before {pct(before.get('reward_accuracy'))})" if before and before is not last_eval else ""
        rows.append(("eval acc", pct(last_eval.get("reward_accuracy")) + was))
    chosen, rejected = step.get("logp_chosen"), step.get("logp_rejected")
    if chosen is not None and rejected is not None:
        rows.append(("logp c/r", f"{chosen:.1f} / {rejected:.1f}"))
    return rows


def system_panel(event: dict | None, width: int = 16, ended: bool = False) -> Text:
    """GPU utilisation, memory, temperature and power from the latest "system" event;
    CPU %, RSS and RAM when there is no GPU. Rows fit the 33-cell side panel."""
    text = Text()
    if not event:
        text.append("no GPU/CPU samples recorded" if ended else "waiting for the first GPU/CPU sample…",
                    style="dim")
        return text

    def row(label: str, value: str, fraction: float | None = None, style: str = "green") -> None:
        text.append(f"{label:<5}", style="bold")
        text.append(f"{value:>11} ")
        if fraction is not None:
            text.append(bar(fraction, width), style=style)
        text.append("\n")

    gpus = event.get("gpus") or []
    if len(gpus) > 1:  # every rank's GPU, one line each: util % and memory, bar of util
        for gpu in gpus:
            used, total, util = gpu.get("mem_used") or 0, gpu.get("mem_total") or 0, gpu.get("util")
            row(f"GPU{gpu.get('index', 0)}", f"{util if util is not None else '?'}% {used / GIB:.0f}/{total / GIB:.0f}G",
                (util or 0) / 100)
    for gpu in gpus if len(gpus) == 1 else []:
        used, total = gpu.get("mem_used") or 0, gpu.get("mem_total") or 0
        util = gpu.get("util")
        text.append(f"GPU {gpu.get('index', 0)}\n", style="bold underline")
        row("util", f"{util}%" if util is not None else "?", (util or 0) / 100)
        row("mem", f"{used / GIB:.1f}/{total / GIB:.0f}G", used / total if total else 0, "magenta")
        temp, power = gpu.get("temp"), gpu.get("power")
        heat = f"{temp}°C" if temp is not None else "?°C"
        row("temp", heat + (f" {power:.0f} W" if power is not None else ""))
    if not event.get("gpus"):
        cpu = event.get("cpu_percent")
        row("CPU", f"{cpu:.0f}%" if cpu is not None else "?")
    rss = event.get("rss")
    if rss is not None:
        row("RSS", f"{rss / GIB:.2f} GiB")
    used, total = event.get("ram_used"), event.get("ram_total")
    if used is not None and total:
        row("RAM", f"{used / GIB:.1f}/{total / GIB:.0f}G", used / total, "magenta")
    text.rstrip()
    return text


def readable_log_line(line: str) -> str:
    """A train.log line for people: transformers' printed log dicts
    (``{'loss': '4.834', 'grad_norm': ...}``) become ``loss 4.834 · grad norm ...``;
    other lines are kept as they are."""
    text = line.strip()
    if not (text.startswith("{") and text.endswith("}")):
        return line
    try:
        values = ast.literal_eval(text)  # a literal only: never evaluates code
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        return line
    if not isinstance(values, dict) or not values:
        return line
    parts = []
    for key, value in values.items():
        label = LOG_KEYS.get(str(key), str(key).replace("_", " "))
        try:
            number = float(value)
            shown = f"{number:.4g}" if not number.is_integer() or abs(number) >= 1e6 else f"{number:.0f}"
        except (TypeError, ValueError):
            shown = str(value)
        parts.append(label.format(shown) if "{}" in label else f"{label} {shown}")
    return " · ".join(parts)
