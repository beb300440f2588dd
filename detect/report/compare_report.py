"""The comparison report: Markdown plus one self-contained HTML page, rendered from result files only.

Every number and plot comes from the per-variant result JSONs that `detect compare` wrote
(detect.engine.comparison), so the report can be re-rendered at any time and never holds a number
typed in by hand. Plots are PNGs under OUT/plots/ (linked from the Markdown) and embedded in the
HTML as base64 data URIs, so the page can be mailed or archived as one file.
"""
from __future__ import annotations

import base64
import html
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from detect.report.detections import plot_precision_recall
from detect.report.figures import pyplot, save_figure
from detect.report.recall_plot import plot_recall_curves
from detect.utils.files import atomic_write_bytes

METRIC_TITLES = {"voc07": "VOC07 mAP", "voc12": "VOC12 mAP", "coco": "COCO AP"}
RECALL_N = ("100", "300", "1000", "2000", "all")
PLOTS_DIR = "plots"


@dataclass
class Table:
    headers: list[str]
    rows: list[list[str]]

    def markdown(self) -> str:
        lines = ["| " + " | ".join(self.headers) + " |", "|" + "---|" * len(self.headers)]
        lines += ["| " + " | ".join(row) + " |" for row in self.rows]
        return "\n".join(lines)

    def html(self) -> str:
        head = "".join(f"<th>{html.escape(h)}</th>" for h in self.headers)
        body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in self.rows)
        return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


@dataclass
class Figure:
    title: str
    path: Path  # the PNG


def fmt(value, digits: int = 4) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def fmt_count(value) -> str:
    return "n/a" if value is None else f"{value:,}"


def slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_") or "x"


# ---------------------------------------------------------------- tables


def accuracy_table(results: list[dict]) -> Table:
    rows = [[r["name"], r["backbone"], r["proposal_method"]]
            + [fmt(r["metrics"][m]["mAP"]) for m in METRIC_TITLES] + [fmt(r["metrics"]["coco"]["stats"]["AP50"])]
            for r in results]
    return Table(["variant", "backbone", "proposals", *METRIC_TITLES.values(), "COCO AP50"], rows)


def cost_table(results: list[dict]) -> Table:
    rows = []
    for r in results:
        c, s, m, t = r["complexity"], r["speed"], r["memory"], r["training_time"]
        rows.append([
            r["name"], fmt_count(c["detector_parameters"]), fmt_count(c["backbone_parameters"]),
            fmt(c["backbone_gflops_224"], 3),
            f"{fmt(c['detector_gflops_first_test_image'], 3)} ({c['proposals_first_test_image']} proposals)",
            fmt(s["seconds_per_image"]), f"{s['device']}, {s['torch_threads']} thread(s)",
            fmt(m["peak_rss_mib"], 1), fmt(m["peak_rss_above_runtime_mib"], 1), fmt(m["gpu_peak_allocated_mib"], 1),
            "given checkpoint" if t is None else f"{fmt(t['seconds'], 1)} ({t['steps']} steps, {t['sessions']} session(s))",
        ])
    return Table(["variant", "detector params", "backbone params", "backbone GFLOPs @224", "detector GFLOPs (test image 1)",
                  "inference s/image", "inference device", "peak RSS MiB", "RSS above runtime MiB", "GPU peak MiB",
                  "training s"], rows)


def per_class_table(results: list[dict], metric: str) -> Table:
    classes = list(results[0]["metrics"][metric]["ap"])
    rows = [[name] + [fmt(r["metrics"][metric]["ap"].get(name)) for r in results] for name in classes]
    rows.append(["mean"] + [fmt(r["metrics"][metric]["mAP"]) for r in results])
    return Table(["class"] + [r["name"] for r in results], rows)


def proposal_groups(results: list[dict]) -> dict[str, list[dict]]:
    """Variants by the proposal cache they read (backbones all share one; proposers each have their own)."""
    groups: dict[str, list[dict]] = {}
    for r in results:
        groups.setdefault(r["proposal_cache"], []).append(r)
    return groups


def recall_table(results: list[dict]) -> Table:
    rows = []
    for members in proposal_groups(results).values():
        r, rec = members[0], members[0]["proposal_recall"]
        rows.append([r["proposal_method"], ", ".join(m["name"] for m in members), fmt(rec["boxes_per_image"], 1)]
                    + [fmt(rec["recall"]["0.5"].get(n), 3) for n in RECALL_N]
                    + [fmt(rec["recall"]["0.7"]["all"], 3), fmt(rec["average_recall"]["all"], 3),
                       fmt(rec["mabo"]["all"], 3), fmt(rec["seconds_per_image"], 3)])
    return Table(["proposals", "used by", "boxes/image"] + [f"recall@0.5 top {n}" for n in RECALL_N]
                 + ["recall@0.7 all", "AR@0.5:0.95 all", "MABO all", "s/image"], rows)


def provenance_table(results: list[dict]) -> Table:
    rows = [[r["name"], r["checkpoint"], r["checkpoint_sha1"][:12], "trained here" if r["trained_here"] else "given",
             str(r["weights"] or "none (from scratch)"), ", ".join(r["dropped_backbone_options"]) or "-"]
            for r in results]
    return Table(["variant", "checkpoint", "sha1", "origin", "initial weights", "base options left out"], rows)


# ---------------------------------------------------------------- plots


def plot_map_bars(results: list[dict], path: Path) -> Path:
    """Grouped bars: one group per metric, one bar per variant, value printed on top."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7.0, 3.8))
    width = 0.8 / len(results)
    x = np.arange(len(METRIC_TITLES))
    for i, r in enumerate(results):
        values = [r["metrics"][m]["mAP"] or 0.0 for m in METRIC_TITLES]
        bars = ax.bar(x + (i - (len(results) - 1) / 2) * width, values, width, label=r["name"])
        ax.bar_label(bars, fmt="%.3f", fontsize=7)
    ax.set_xticks(x, list(METRIC_TITLES.values()))
    ax.set_ylim(0, max(1e-3, max(r["metrics"][m]["mAP"] or 0.0 for r in results for m in METRIC_TITLES)) * 1.2)
    ax.set_ylabel("mean AP")
    ax.grid(True, axis="y", alpha=0.3)
    ax.legend(fontsize=8)
    return save_figure(fig, path)


def plot_speed_accuracy(results: list[dict], path: Path) -> Path:
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(5.6, 4.0))
    for r in results:
        x, y = r["speed"]["seconds_per_image"], r["metrics"]["voc07"]["mAP"] or 0.0
        ax.scatter([x], [y], s=40)
        ax.annotate(r["name"], (x, y), textcoords="offset points", xytext=(5, 4), fontsize=8)
    ax.set_xlabel(f"inference seconds per image ({results[0]['speed']['device']})")
    ax.set_ylabel("VOC07 mAP")
    ax.grid(True, alpha=0.3)
    return save_figure(fig, path)


def render_plots(results: list[dict], out: Path) -> list[Figure]:
    plots = out / PLOTS_DIR
    figures = [Figure("mAP per metric", plot_map_bars(results, plots / "map.png")),
               Figure("VOC07 mAP against inference time", plot_speed_accuracy(results, plots / "speed_accuracy.png"))]
    for name in results[0]["metrics"]["voc07"]["ap"]:
        curves = {r["name"]: (np.asarray(r["pr_curves"][name]["recall"]), np.asarray(r["pr_curves"][name]["precision"]))
                  for r in results if name in r["pr_curves"]}
        if curves:
            aps = {r["name"]: r["metrics"]["voc07"]["ap"][name] for r in results}
            path = plot_precision_recall(curves, aps, plots / f"pr_{slug(name)}.png", f"{name}: precision-recall (VOC07 AP)")
            figures.append(Figure(f"precision-recall: {name}", path))
    recalls = {members[0]["proposal_method"]: members[0]["proposal_recall"] for members in proposal_groups(results).values()}
    path = plot_recall_curves(recalls, plots / "proposal_recall.png", f"proposal recall on {results[0]['test_data']}")
    figures.append(Figure("proposal recall against the number of proposals", path))
    return figures


# ---------------------------------------------------------------- documents


def setup_lines(results: list[dict]) -> list[str]:
    cfg = results[0]["config"]
    varied = "backbones" if results[0]["kind"] == "backbone" else "proposal methods"
    metrics = results[0]["metrics"]
    return [
        f"Compared: {varied} {', '.join(r['name'] for r in results)}; everything else identical.",
        f"Training data: {', '.join(cfg['data']['train'])}; test data: {results[0]['test_data']} "
        f"({results[0]['num_test_images']} images).",
        f"Schedule: {cfg['train']['steps']} steps x {cfg['train']['images_per_batch']} images, lr {cfg['train']['lr']}, "
        f"seed {cfg['train']['seed']}; mode {cfg['model']['mode']}, width x{cfg['model']['width']}, "
        f"scales {cfg['model']['train_scales']} / {cfg['model']['test_scale']}.",
        f"Proposals: at most {results[0]['max_proposals_per_image']} per image, one cache per method.",
        *[f"{METRIC_TITLES[m]}: {metrics[m]['metric_description']}; {metrics[m]['difficult']}." for m in METRIC_TITLES],
        "Inference time: " + results[0]["speed"]["includes"] + ". Peak RSS: " + results[0]["memory"]["peak_rss_source"]
        + " of the measuring process (a fresh one per variant); 'above runtime' subtracts its peak before the "
        "detector was loaded.",
    ]


def sections(results: list[dict]) -> list[tuple[str, Table | None]]:
    return [("Accuracy", accuracy_table(results)), ("Cost, speed and memory", cost_table(results)),
            *[(f"Per-class AP ({METRIC_TITLES[m]})", per_class_table(results, m)) for m in METRIC_TITLES],
            ("Proposal recall on the test set", recall_table(results)), ("Provenance", provenance_table(results))]


def markdown_report(title: str, results: list[dict], figures: list[Figure], out: Path) -> str:
    parts = [f"# {title}", "", *[f"- {line}" for line in setup_lines(results)], ""]
    for heading, table in sections(results):
        parts += [f"## {heading}", "", table.markdown(), ""]
    parts += ["## Plots", ""]
    parts += [f"![{f.title}]({f.path.relative_to(out).as_posix()})" for f in figures]
    return "\n".join(parts) + "\n"


def data_uri(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode("ascii")


STYLE = """body{font-family:sans-serif;margin:2em auto;max-width:1300px;color:#222}
table{border-collapse:collapse;margin:0.5em 0 1.5em}th,td{border:1px solid #ccc;padding:4px 8px;font-size:13px}
th{background:#f0f0f0}td{text-align:right}td:first-child{text-align:left;font-weight:bold}
figure{display:inline-block;margin:0.5em;vertical-align:top}figcaption{font-size:13px;text-align:center}
li{font-size:14px}"""


def html_report(title: str, results: list[dict], figures: list[Figure]) -> str:
    parts = [f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>",
             f"<style>{STYLE}</style></head><body><h1>{html.escape(title)}</h1><ul>"]
    parts += [f"<li>{html.escape(line)}</li>" for line in setup_lines(results)]
    parts.append("</ul>")
    for heading, table in sections(results):
        parts.append(f"<h2>{html.escape(heading)}</h2>{table.html()}")
    parts.append("<h2>Plots</h2>")
    parts += [f"<figure><img src='{data_uri(f.path)}' alt='{html.escape(f.title)}'>"
              f"<figcaption>{html.escape(f.title)}</figcaption></figure>" for f in figures]
    parts.append("</body></html>")
    return "\n".join(parts)


def render_report(results: list[dict], out: str | Path) -> tuple[Path, Path]:
    """Write OUT/report.md, OUT/report.html and OUT/plots/*.png from the variants' results."""
    out = Path(out)
    varied = "backbones" if results[0]["kind"] == "backbone" else "proposers"
    title = f"Comparison of {varied} on {results[0]['test_data']}"
    figures = render_plots(results, out)
    md, page = out / "report.md", out / "report.html"
    md_text = markdown_report(title, results, figures, out).encode()
    html_text = html_report(title, results, figures).encode()
    atomic_write_bytes(md, lambda fh: fh.write(md_text))
    atomic_write_bytes(page, lambda fh: fh.write(html_text))
    return md, page
