"""The scaling study's reports, rendered from the study dict (`scaling.json`), never parsed back:
`report.md`, a self-contained `report.html` (plots inline as SVG) and the plot files
`scaling.png` (accuracy against data with interval bands, fits and their extrapolation) and
`levels.png` (per-level curves and bars). Plots need matplotlib (extra `plot`); without it the
tables are still written.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from mathforge import htmlreport as H
from mathforge.io import write_text
from mathforge.markdown import table

FLOOR = 0.05  # below this mean accuracy a tiny test set cannot tell a model from chance-level luck
CEILING = 0.95
EXTRAPOLATION = 10  # a predicted size beyond this multiple of the largest measured one is flagged


def write_reports(study: dict[str, Any], out: Path) -> None:
    """Write report.md, report.html and the plot files of a scaling study into `out`."""
    figs = _figures(study)
    write_text(out / "report.md", markdown(study))
    blocks = _html_blocks(study, figs)
    H.write_page(out / "report.html", "Data scaling", blocks)
    for name, fig in figs.items():
        tmp = out / f".{name}.tmp.png"
        fig.savefig(tmp, dpi=110)
        tmp.replace(out / f"{name}.png")


def pct(x: float | None) -> str:
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{100 * x:.1f}"


def interval_text(iv: dict[str, Any], scale: float = 100, fmt: str = "{:.1f}") -> str:
    def one(v):
        return "∞" if v is not None and math.isinf(v) else "-" if v is None or math.isnan(v) else fmt.format(scale * v)
    return f"{one(iv['estimate'])} [{one(iv['lo'])}, {one(iv['hi'])}]"


def meaning(bench: str, entry: dict[str, Any]) -> list[str]:
    """Plain sentences on which numbers of a benchmark's curve carry signal and which do not."""
    pts = entry["points"]
    guess = (entry.get("guess_floor") or {}).get("accuracy", 0.0)
    low = max(FLOOR, guess)
    floor = [p["size"] for p in pts if p["hi"] < low]
    informative = [p["size"] for p in pts if p["lo"] > guess and p["mean"] >= low and p["mean"] <= CEILING]
    out = [f"{bench}: {len(informative)} of {len(pts)} sizes are informative "
           f"(mean between {100 * low:.1f}% and {100 * CEILING:.0f}%, interval above {100 * guess:.1f}%)."]
    if guess:
        out.append(f"Answering every item with the most common training answer of its level scores "
                   f"{100 * guess:.1f}%: accuracy near that is guessing, not reading the problem.")
    if floor:
        out.append(f"Sizes {floor} sit at the floor (whole interval below {100 * low:.1f}%): they say only "
                   "that the student has not learned yet, and say nothing about the slope.")
    if len(informative) < 3:
        out.append("With fewer than 3 informative sizes the fits, the leave-largest-out check and the "
                   "practical answer below are arithmetic on noise: do not act on them.")
    else:
        first, last = pts[0], pts[-1]
        above = last["lo"] > first["hi"]
        out.append(f"The largest size's interval lies {'wholly above' if above else 'not wholly above'} the "
                   "smallest's; the fits and intervals below are worth reading.")
    return out


def markdown(study: dict[str, Any]) -> str:
    """report.md of a scaling study."""
    lines = ["# Data scaling", "", f"Accuracy ({study['metric']} grader) against SFT data size; 95% intervals "
             "bootstrap over test items and training seeds.", "", *_training_md(study["runs"])]
    for bench, entry in study["benchmarks"].items():
        lines += [f"## {bench}", "", *[f"- {s}" for s in meaning(bench, entry)], ""]
        lines += _points_md(entry["points"])
        for name, fit in entry["fits"].items():
            lines += ["", *_fit_md(name, fit, entry["target"])]
        for key in ("by_level", "by_subject"):
            if entry.get(key):
                lines += ["", f"### Accuracy {key.replace('_', ' ')} (%, 95% interval)", "", *_groups_md(entry[key])]
    return "\n".join(lines) + "\n"


def _training_md(runs: list[dict[str, Any]]) -> list[str]:
    """What each size's training was: optimizer steps (a step floor repeats small sets) and wall time."""
    sizes = sorted({r["size"] for r in runs})
    steps = {s: sorted({r.get("train_steps") for r in runs if r["size"] == s} - {None}) for s in sizes}
    secs = {s: [r["seconds"] for r in runs if r["size"] == s and r.get("seconds") is not None] for s in sizes}
    cells = [f"{s}: {'/'.join(map(str, steps[s])) or '?'} steps"
             + (f", {sum(secs[s]) / len(secs[s]):.0f} s a run" if secs[s] else "") for s in sizes]
    return [f"Training per size (optimizer steps, mean wall time of a run): {'; '.join(cells)}.", ""]


def _points_md(points: list[dict[str, Any]]) -> list[str]:
    rows = [(p["size"], pct(p["mean"]), f"[{pct(p['lo'])}, {pct(p['hi'])}]",
             ", ".join(f"{s}: {pct(v)}" for s, v in p["per_seed"].items())) for p in points]
    return table(("size", "mean %", "95% interval", "per seed %"), rows, "rr")


def _fit_md(name: str, fit: dict[str, Any], target: float) -> list[str]:
    if "params" not in fit:
        return [f"**{name}** ({fit['formula']}): {fit.get('failed')}"]
    params = ", ".join(f"{p} = {interval_text(iv, 1, '{:.4g}')}" for p, iv in fit["params"].items())
    far = fit["size_for_target"]["estimate"] > EXTRAPOLATION * fit["largest"]
    out = [f"**{name}**: {fit['formula']}; {params}; R² {fit['r2']:.3f} "
           f"({fit['failed_replicates']} of {fit['replicates']} bootstrap refits failed).",
           f"- size to reach {pct(target)}%: {interval_text(fit['size_for_target'], 1, '{:,.0f}')} samples"
           f" ({fit['size_for_target']['never']} replicates never reach it)"
           + (f"; more than {EXTRAPOLATION}× the largest size measured: an extrapolation, not a forecast" if far else ""),
           f"- gain from doubling the largest size: {interval_text(fit['gain_from_doubling'])} points"]
    ceiling = fit["params"].get("ceiling")
    if ceiling and ceiling["estimate"] >= 0.999:
        out.append("- the ceiling sits at its bound of 100%: these sizes show no saturation yet, so the "
                   "law is a plain power law in the error rate and says nothing about where accuracy levels off")
    llo = fit.get("leave_largest_out")
    if llo and "prediction" in llo:
        out.append(f"- leave-largest-out: fitted without size {llo['size']}, predicts "
                   f"{interval_text(llo['prediction'])}%, measured {pct(llo['measured'])}%; error "
                   f"{interval_text(llo['error'])} points; measured value "
                   f"{'inside' if llo['covered'] else 'OUTSIDE'} the prediction interval")
    return out


def _groups_md(groups: dict[str, Any]) -> list[str]:
    names = list(groups)
    sizes = [p["size"] for p in next(iter(groups.values()))["points"]]
    out = table(("size", *names), [(s, *(f"{pct(g['points'][i]['mean'])} [{pct(g['points'][i]['lo'])}, "
                                         f"{pct(g['points'][i]['hi'])}]" for g in groups.values()))
                                   for i, s in enumerate(sizes)], "r")
    slopes = [f"{n}: {interval_text(g['fits']['log_linear']['params']['b'])}" for n, g in groups.items()
              if "params" in g["fits"].get("log_linear", {})]
    return out + ["", "Log-linear slope b (points per 10× data): " + "; ".join(slopes)] if slopes else out


# ---------------------------------------------------------------- HTML and plots


def _html_blocks(study: dict[str, Any], figs: dict[str, Any]) -> list[str]:
    blocks = [H.paragraph(f"Accuracy ({study['metric']} grader) against SFT data size; 95% intervals bootstrap "
                          "over test items and training seeds.")]
    for bench, entry in study["benchmarks"].items():
        blocks += [H.heading(bench), *[H.paragraph(s, note=True) for s in meaning(bench, entry)]]
        blocks.append(H.table(["size", "mean %", "95% interval", "per seed %"],
                              [(p["size"], pct(p["mean"]), f"[{pct(p['lo'])}, {pct(p['hi'])}]",
                                ", ".join(f"{s}: {pct(v)}" for s, v in p["per_seed"].items())) for p in entry["points"]]))
        blocks += [H.paragraph(line.lstrip("- ").replace("**", "")) for name, fit in entry["fits"].items()
                   for line in _fit_md(name, fit, entry["target"])]
    for name, fig in figs.items():
        blocks.append(H.figure(fig, CAPTIONS[name], name))
    return blocks


CAPTIONS = {
    "scaling": "Accuracy against data size: mean over seeds (dots: single seeds), 95% interval band, "
               "fits (dashed beyond the largest size: extrapolation), leave-largest-out prediction.",
    "levels": "Per level: curves with 95% bands (left) and accuracy at the smallest and largest size (right).",
}


def _figures(study: dict[str, Any]) -> dict[str, Any]:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:  # plotting is optional (extra `plot`); the tables are the result
        return {}
    plt.rcParams["svg.fonttype"] = "path"
    figs = {"scaling": _scaling_figure(plt, study)}
    level_benches = [b for b, e in study["benchmarks"].items() if e.get("by_level")]
    if level_benches:
        figs["levels"] = _levels_figure(plt, study["benchmarks"][level_benches[0]]["by_level"], level_benches[0])
    return figs


def _scaling_figure(plt: Any, study: dict[str, Any]) -> Any:
    import numpy as np

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for i, (bench, entry) in enumerate(study["benchmarks"].items()):
        color = f"C{i}"
        pts = entry["points"]
        x = np.array([p["size"] for p in pts], dtype=float)
        ax.fill_between(x, [100 * p["lo"] for p in pts], [100 * p["hi"] for p in pts], color=color, alpha=0.2)
        ax.plot(x, [100 * p["mean"] for p in pts], "o-", color=color, label=f"{bench} (mean, 95% band)")
        for p in pts:
            ax.scatter([p["size"]] * len(p["per_seed"]), [100 * v for v in p["per_seed"].values()], s=8, color=color, alpha=0.5)
        _draw_fits(ax, entry, x, color)
    ax.set_xscale("log")
    ax.set_xlabel("SFT samples")
    ax.set_ylabel(f"accuracy (%), {study['metric']} grader")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def _draw_fits(ax: Any, entry: dict[str, Any], x: Any, color: str) -> None:
    import numpy as np

    from mathforge.fits import Fit, PowerFit

    inside = np.geomspace(x.min(), x.max(), 50)
    beyond = np.geomspace(x.max(), 4 * x.max(), 20)
    for style, (name, fit) in zip(("--", ":"), entry["fits"].items(), strict=False):
        if "params" not in fit:
            continue
        params = {p: iv["estimate"] for p, iv in fit["params"].items()}
        model = Fit(r2=0, **params) if name == "log_linear" else PowerFit(r2=0, **params)
        ax.plot(inside, [100 * model.predict(n) for n in inside], style, color=color, lw=1, label=name)
        ax.plot(beyond, [100 * model.predict(n) for n in beyond], style, color="grey", lw=1)
        llo = fit.get("leave_largest_out", {})
        if "prediction" in llo and llo["prediction"]["lo"] is not None:
            p = llo["prediction"]
            ax.errorbar([llo["size"] * (1.08 if style == ":" else 0.92)], [100 * p["estimate"]],
                        yerr=[[100 * (p["estimate"] - p["lo"])], [100 * (p["hi"] - p["estimate"])]],
                        fmt="s", ms=4, color="black", capsize=3, label=f"{name}: leave-largest-out")


def _levels_figure(plt: Any, groups: dict[str, Any], bench: str) -> Any:
    import numpy as np

    fig, (ax, bx) = plt.subplots(1, 2, figsize=(10, 4))
    for i, (level, g) in enumerate(groups.items()):
        pts = g["points"]
        x = [p["size"] for p in pts]
        ax.fill_between(x, [100 * p["lo"] for p in pts], [100 * p["hi"] for p in pts], color=f"C{i}", alpha=0.15)
        ax.plot(x, [100 * p["mean"] for p in pts], "o-", color=f"C{i}", label=f"level {level}")
    ax.set_xscale("log")
    ax.set_xlabel("SFT samples")
    ax.set_ylabel("accuracy (%)")
    ax.set_title(bench)
    ax.legend(fontsize=7)
    ax.grid(True, alpha=0.3)
    idx = np.arange(len(groups))
    for j, (which, pos) in enumerate((("smallest", 0), ("largest", -1))):
        pts = [g["points"][pos] for g in groups.values()]
        mean = np.array([100 * p["mean"] for p in pts])
        err = [mean - [100 * p["lo"] for p in pts], [100 * p["hi"] for p in pts] - mean]
        bx.bar(idx + (j - 0.5) * 0.4, mean, 0.4, yerr=err, capsize=3, label=f"{which} size ({pts[0]['size']})")
    bx.set_xticks(idx, [f"level {g}" for g in groups])
    bx.set_ylabel("accuracy (%)")
    bx.legend(fontsize=7)
    fig.tight_layout()
    return fig
