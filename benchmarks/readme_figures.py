"""Every figure the README states, measured by one script (``make readme-figures``).

Each figure has a name, a measurement that writes ``docs/figures/<name>.json`` and a rendering
of that JSON into the README between ``<!-- figures:<name> -->`` and ``<!-- /figures:<name> -->``.

    python benchmarks/readme_figures.py                    # measure the quick figures, update README
    python benchmarks/readme_figures.py --only losses      # one figure (the loss table: ~25 min)
    python benchmarks/readme_figures.py --render           # re-render README from the JSON files
    python benchmarks/readme_figures.py --check            # exit 1 when README and JSON disagree

``tests/test_readme_figures.py`` checks that the README is the rendering of the recorded JSON and
re-measures the digits figures within a tolerance.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
FIGURES = ROOT / "docs" / "figures"
METRICS = ("recall@1", "map", "map@r", "r_precision", "minp")
SWEEP_LOSSES = "experiments/sweeps/losses.yaml"


def embedlab(*args: str, cwd: Path) -> None:
    """Run ``embedlab ARGS`` in ``cwd`` (wandb off), failing loudly."""
    env = {**os.environ, "EMBEDLAB_WANDB": "off", "WANDB_MODE": "disabled", "PYTHONHASHSEED": "0"}
    command = [sys.executable, "-m", "embedlab", *args]
    done = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} failed:\n{done.stdout[-2000:]}{done.stderr[-3000:]}")


def rounded(values: dict[str, float]) -> dict[str, float]:
    return {k: round(float(values[k]), 4) for k in METRICS if k in values}


def summary_figures(summary: dict[str, Any]) -> dict[str, Any]:
    """The selected epoch, val and test metrics and the raw-pixel baseline of ``summary.json``."""
    return {
        "epoch": int(summary["checkpoint"]["epoch"]),
        "val": rounded(summary["val"]),
        "test": rounded(summary["test"]),
        "raw": rounded(summary["raw pixels"]),
    }


def measure_run(config: str, *extra: str) -> dict[str, Any]:
    """Train ``config`` from scratch (a fresh folder) and read its ``summary.json``."""
    with tempfile.TemporaryDirectory() as tmp:
        embedlab("fit", "--config", str(ROOT / config), *extra, "--output_root=runs", cwd=Path(tmp))
        [summary] = Path(tmp).glob("runs/*/version_0/summary.json")
        figures = summary_figures(json.loads(summary.read_text()))
    epochs = json.loads(json.dumps(read_yaml(ROOT / config)["trainer"]["max_epochs"]))
    return {"config": config, "max_epochs": epochs, **figures}


def read_yaml(path: Path) -> dict[str, Any]:
    import yaml

    return dict(yaml.safe_load(path.read_text()))


def measure_digits() -> dict[str, Any]:
    return measure_run("experiments/digits.yaml", "--trainer.enable_progress_bar=false")


def measure_class_disjoint() -> dict[str, Any]:
    return measure_run(
        "experiments/digits_class_disjoint.yaml", "--trainer.enable_progress_bar=false"
    )


def measure_losses() -> dict[str, Any]:
    """The loss sweep on digits (17 runs): selected epoch, val MAP@R and test metrics per preset."""
    with tempfile.TemporaryDirectory() as tmp:
        # the sweep names its presets relative to the repository: run it there, write to tmp
        embedlab(
            "sweep", SWEEP_LOSSES, "--offline", "--no_compare", f"--output_root={tmp}", cwd=ROOT
        )
        return losses_figure(Path(tmp))


def losses_figure(output_root: Path) -> dict[str, Any]:
    """The figure of a finished loss sweep written under ``output_root`` (one run per preset)."""
    rows: dict[str, Any] = {}
    conventions: set[str] = set()
    for summary in sorted(output_root.glob("**/summary.json")):
        name = _preset_of(summary.parent)
        if name in rows:
            raise RuntimeError(f"{output_root}: two runs of the loss sweep for {name}")
        figures = json.loads(summary.read_text())
        conventions.add(str(figures.get("convention", "torchreid")))
        rows[name] = summary_figures(figures)
    presets = read_yaml(ROOT / SWEEP_LOSSES)["parameters"]["model.loss"]["values"]
    missing = {Path(v).stem for v in presets} - set(rows)
    if missing:
        raise RuntimeError(f"{output_root}: no finished run for {sorted(missing)}")
    [convention] = conventions  # one evaluation convention for the whole table
    return {
        "sweep": SWEEP_LOSSES,
        "config": "experiments/digits_compare.yaml",
        "convention": convention,
        "losses": rows,
    }


def _preset_of(run: Path) -> str:
    """The preset file name of a sweep trial (its ``model.loss`` in ``sweep_trial.json``)."""
    from embedlab.runs import TRIAL_FILE

    params = json.loads((run / TRIAL_FILE).read_text()).get("params", {})
    return Path(str(params["model.loss"])).stem


def measure_search(*extra: str) -> dict[str, Any]:
    """``benchmarks/search.py`` (its defaults, or ``extra`` arguments): build time, queries/s,
    recall@10 and peak memory per index."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "search.json"
        script = str(ROOT / "benchmarks" / "search.py")
        command = [sys.executable, script, *extra, "--json", str(out)]
        subprocess.run(command, check=True, cwd=tmp)
        return dict(json.loads(out.read_text()))


def measure_search_1m() -> dict[str, Any]:
    """The search benchmark at a million vectors (1,000 queries; about 10 min on 2 cores)."""
    return measure_search("--n", "1000000", "--queries", "1000")


def pct(x: float) -> str:
    return f"{100 * x:.2f}"


def render_run(fig: dict[str, Any]) -> str:
    val, test, raw = fig["val"], fig["test"], fig["raw"]
    return (
        f"selected epoch {fig['epoch']} of {fig['max_epochs']}: val mAP@R {val['map@r']:.3f} "
        f"(R@1 {val['recall@1']:.3f}, mAP {val['map']:.3f}), test mAP@R {test['map@r']:.3f} "
        f"(R@1 {test['recall@1']:.3f}, mAP {test['map']:.3f}); raw pixels give "
        f"{raw['map@r']:.3f} on the test split."
    )


def render_losses(fig: dict[str, Any]) -> str:
    head = (
        "| loss | best epoch (val) | val MAP@R | test R@1 | test mAP | test MAP@R "
        "| test R-Prec | test mINP |\n|:---|---:|---:|---:|---:|---:|---:|---:|"
    )
    rows = sorted(fig["losses"].items(), key=lambda kv: (-kv[1]["test"]["map@r"], kv[0]))
    lines = [head]
    raw = next(iter(fig["losses"].values()))["raw"] if fig["losses"] else None
    placed = False
    for name, row in rows:
        if raw is not None and not placed and row["test"]["map@r"] < raw["map@r"]:
            lines.append(_loss_line("raw pixels (test)", None, raw))
            placed = True
        lines.append(_loss_line(name, row, row["test"]))
    if raw is not None and not placed:
        lines.append(_loss_line("raw pixels (test)", None, raw))
    return "\n".join(lines)


def _loss_line(name: str, row: dict[str, Any] | None, test: dict[str, float]) -> str:
    epoch = str(row["epoch"]) if row else ""
    val = pct(row["val"]["map@r"]) if row else ""
    cells = [pct(test[k]) for k in ("recall@1", "map", "map@r", "r_precision", "minp")]
    return f"| {name} | {epoch} | {val} | " + " | ".join(cells) + " |"


def render_search(fig: dict[str, Any]) -> str:
    """The table of ``benchmarks/search.py --json`` and the settings that reach the issue's goal
    (recall@10 ≥ 0.95 at ≥ 10× exact search's queries/s on one thread and on all)."""
    threads = fig["threads"]
    head = (
        f"{fig['n']:,} clustered {fig['dim']}-d vectors, {fig['queries']:,} queries, k=10; "
        f"speed-up = queries/s over {fig['baseline']} in the same run:\n\n"
    )
    lines = [
        f"| method | build s | queries/s 1 thread | queries/s {threads} threads | recall@10 "
        f"| speed-up 1 / {threads} threads | peak MB | index MB |",
        "|:---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    reached = []
    for row in fig["rows"]:
        lines.append(
            f"| {row['method']} | {row['build s']:.1f} | {row['queries/s 1 thread']:,.0f} "
            f"| {row['queries/s']:,.0f} | {row['recall@10']:.3f} "
            f"| {row['speed-up 1 thread']:.1f}× / {row['speed-up']:.1f}× "
            f"| {row['peak MB']:,.0f} | {row['index MB']:,.0f} |"
        )
        if row["recall@10"] >= 0.95 and min(row["speed-up"], row["speed-up 1 thread"]) >= 10:
            reached.append(row["method"])
    goal = ", ".join(f"`{m}`" for m in reached) or "none"
    tail = f"\n\nrecall@10 ≥ 0.95 at ≥ 10× exact's queries/s: {goal}."
    return head + "\n".join(lines) + tail


#: name → (measure, render, measured by default)
FIGURES_OF: dict[
    str, tuple[Callable[[], dict[str, Any]], Callable[[dict[str, Any]], str], bool]
] = {
    "digits": (measure_digits, render_run, True),
    "class_disjoint": (measure_class_disjoint, render_run, True),
    "losses": (measure_losses, render_losses, False),  # 17 runs, ~25-40 min: --only losses
    "search": (measure_search, render_search, True),
    "search_1m": (measure_search_1m, render_search, False),
}


def block(name: str) -> re.Pattern[str]:
    return re.compile(rf"(<!-- figures:{name} -->\n)(.*?)(\n<!-- /figures:{name} -->)", re.S)


def recorded(name: str) -> dict[str, Any]:
    return dict(json.loads((FIGURES / f"{name}.json").read_text()))


def _replacement(body: str) -> Callable[[re.Match[str]], str]:
    """A ``re.sub`` replacement keeping the block's markers around ``body`` (taken literally)."""
    return lambda m: m.group(1) + body + m.group(3)


def render_readme(text: str) -> str:
    """``text`` with every figure block replaced by the rendering of its recorded JSON."""
    for name, (_, render, _) in FIGURES_OF.items():
        pattern = block(name)
        if not pattern.search(text):
            raise SystemExit(f"README.md: no <!-- figures:{name} --> block")
        text = pattern.sub(_replacement(render(recorded(name))), text)
    return text


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="+", choices=sorted(FIGURES_OF), help="figures to measure")
    parser.add_argument("--render", action="store_true", help="only re-render the README")
    parser.add_argument("--check", action="store_true", help="README == rendering of the JSON?")
    args = parser.parse_args(argv)
    if args.check:
        text = README.read_text()
        stale = text != render_readme(text)
        print("README figures are stale: run make readme-figures" if stale else "README figures ok")
        return int(stale)
    if not args.render:
        FIGURES.mkdir(parents=True, exist_ok=True)
        names = args.only or [n for n, (_, _, default) in FIGURES_OF.items() if default]
        for name in names:
            print(f"measuring {name} ...", flush=True)
            figure = FIGURES_OF[name][0]()
            (FIGURES / f"{name}.json").write_text(json.dumps(figure, indent=2) + "\n")
    text = README.read_text()  # read after measuring: the loss sweep takes half an hour
    README.write_text(render_readme(text))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
