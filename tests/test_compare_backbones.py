"""`detect compare` across backbones: equal terms, resumable, a report whose numbers are the run's.

One module-scoped comparison on the synthetic shapes (thin VGG-11 and ResNet-18, 2 steps, 64 px) is
run the way an interrupted one would be finished: first VGG-11 alone, then ResNet-18 half trained by
hand, then the full comparison, which must skip VGG-11 and resume ResNet-18.
"""
from __future__ import annotations

import base64
import contextlib
import io
import json
import shutil
import subprocess
import tempfile
from html.parser import HTMLParser
from types import SimpleNamespace

import cv2
import numpy as np
import pytest

from backbones import build_backbone, count_parameters
from detect import cli
from detect.engine.detection_inference import load_detector
from detect.utils.checkpoint import load_checkpoint
from detector_setup import tiny_config

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("torch_one_thread")]
BACKBONES = ["vgg11", "resnet18"]
# ResNet takes none of the tiny config's VGG options (init=kaiming): `detect train/test` need them removed.
RESNET_OVERRIDES = ["model.backbone=resnet18", "model.backbone_options={}"]


def run_cli(*argv: str) -> int:
    return cli.main([str(a) for a in argv])


@pytest.fixture(scope="module")
def comparison(tmp_path_factory):
    root = tmp_path_factory.mktemp("compare")
    config = tiny_config(root / "cfg", root / "cache")
    out = root / "out"
    logs = [io.StringIO(), io.StringIO()]
    with contextlib.redirect_stdout(logs[0]):
        assert run_cli("compare", "--config", config, "--backbones", "vgg11", "--out", out) == 0
    with contextlib.redirect_stdout(io.StringIO()):
        # ResNet-18 stopped after step 1 of 2, as an interrupted comparison would leave it
        assert run_cli("train", "--config", config, *RESNET_OVERRIDES, f"train.out_dir={out / 'runs/resnet18'}",
                       "train.steps=1") == 0
    with contextlib.redirect_stdout(logs[1]):
        assert run_cli("compare", "--config", config, "--backbones", ",".join(BACKBONES), "--out", out) == 0
    logs = [log.getvalue() for log in logs]
    results = {name: json.loads((out / "results" / f"{name}.json").read_text()) for name in BACKBONES}
    return SimpleNamespace(root=root, config=config, out=out, logs=logs, results=results)


def test_interrupted_comparison_skips_finished_backbones_and_resumes_the_half_trained_one(comparison):
    second = comparison.logs[1]
    assert "vgg11: done before" in second and "vgg11: training" not in second
    assert "resumed from" in second and "at step 1" in second
    assert load_checkpoint(comparison.out / "runs/resnet18/last.pth")["step"] == 2
    logged = [json.loads(line) for line in (comparison.out / "runs/resnet18/metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in logged if r["split"] == "train"] == [1, 2]  # step 1 from the first session, step 2 from the resumed one
    assert comparison.results["resnet18"]["training_time"]["sessions"] == 1  # the compare's own session


def test_backbones_share_data_proposals_schedule_and_seed(comparison):
    vgg, resnet = (comparison.results[n] for n in BACKBONES)
    assert vgg["proposal_cache"] == resnet["proposal_cache"]
    differing = {(section, key) for section in vgg["config"] for key in vgg["config"][section]
                 if vgg["config"][section][key] != resnet["config"][section][key]}
    assert differing == {("model", "backbone"), ("model", "backbone_options"), ("train", "out_dir")}
    assert resnet["dropped_backbone_options"] == ["init"] and vgg["dropped_backbone_options"] == []


def test_cost_figures_are_those_of_the_models_themselves(comparison):
    for name, result in comparison.results.items():
        model, _, _ = load_detector(result["checkpoint"])
        assert result["complexity"]["detector_parameters"] == count_parameters(model)
        options = {} if name == "resnet18" else {"init": "kaiming"}
        assert result["complexity"]["backbone_parameters"] == count_parameters(build_backbone(name, width=0.0625, **options))
        assert result["speed"]["seconds_per_image"] > 0 and result["memory"]["peak_rss_mib"] > 0
        assert result["memory"]["peak_rss_above_runtime_mib"] >= 0


def test_report_tables_show_the_result_files_numbers(comparison):
    report = (comparison.out / "report.md").read_text()
    for name, result in comparison.results.items():
        accuracy_row = next(line for line in report.splitlines() if line.startswith(f"| {name} | {name} |"))
        for metric in ("voc07", "voc12", "coco"):
            assert f"{result['metrics'][metric]['mAP']:.4f}" in accuracy_row
        assert f"{result['complexity']['detector_parameters']:,}" in report
    for metric, heading in (("voc07", "VOC07 mAP"), ("coco", "COCO AP")):
        table = report.split(f"## Per-class AP ({heading})")[1].split("##")[0]
        for cls in comparison.results["vgg11"]["metrics"][metric]["ap"]:
            row = next(line for line in table.splitlines() if line.startswith(f"| {cls} |"))
            cells = [c.strip() for c in row.strip("|").split("|")][1:]
            assert cells == [f"{comparison.results[n]['metrics'][metric]['ap'][cls]:.4f}" for n in BACKBONES]


class ImageSources(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.sources: list[str] = []

    def handle_starttag(self, tag, attrs):
        if tag == "img":
            self.sources.append(dict(attrs).get("src", ""))


def test_html_report_has_no_missing_images(comparison):
    page = comparison.out / "report.html"
    parser = ImageSources()
    parser.feed(page.read_text())
    classes = comparison.results["vgg11"]["classes"]
    assert len(parser.sources) == 3 + len(classes)  # mAP bars, speed/accuracy, recall, one PR plot per class
    for src in parser.sources:
        if src.startswith("data:"):
            header, _, payload = src.partition(",")
            assert header == "data:image/png;base64"
            data = base64.b64decode(payload, validate=True)
        else:
            data = (page.parent / src).read_bytes()
        assert data.startswith(b"\x89PNG\r\n\x1a\n")
        image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
        assert image is not None and image.shape[0] > 100 and image.shape[1] > 100


def test_html_report_renders_in_headless_chromium(comparison, tmp_path):
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        pytest.skip("chromium is not installed (apt-get install chromium)")
    shot = tmp_path / "report.png"
    profile = tempfile.mkdtemp(dir=tmp_path)
    subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                    "--disable-background-networking", "--disable-component-update", "--disable-sync",
                    f"--user-data-dir={profile}", f"--screenshot={shot}", "--window-size=1400,2400",
                    (comparison.out / "report.html").resolve().as_uri()],
                   check=True, capture_output=True, timeout=180)
    image = cv2.imread(str(shot), cv2.IMREAD_COLOR)
    assert image is not None and image.shape[:2] == (2400, 1400)
    not_white = (image < 235).any(axis=2)
    assert not_white.mean() > 0.02, "the screenshot is (almost) blank"
    colourful = (image.max(axis=2).astype(int) - image.min(axis=2)) > 60  # plot lines and bars, not grey text
    assert colourful.sum() > 2000, "no coloured plot pixels in the screenshot"


def test_checkpoint_comparison_reports_what_detect_test_prints(comparison, tmp_path, capsys):
    checkpoints = [comparison.out / f"runs/{name}/last.pth" for name in BACKBONES]
    out = tmp_path / "evaluated"
    assert run_cli("compare", "--config", comparison.config, "--backbones", ",".join(BACKBONES),
                   "--checkpoints", ",".join(map(str, checkpoints)), "--out", out) == 0
    report = (out / "report.md").read_text()
    capsys.readouterr()
    for name, checkpoint in zip(BACKBONES, checkpoints):
        overrides = RESNET_OVERRIDES if name == "resnet18" else []
        assert run_cli("test", "--config", comparison.config, "--checkpoint", checkpoint, "--out", tmp_path / name,
                       *overrides) == 0
        printed = capsys.readouterr().out
        tested = json.loads((tmp_path / name / "metrics.json").read_text())
        compared = json.loads((out / "results" / f"{name}.json").read_text())
        assert compared["training_time"] is None and compared["checkpoint"] == str(checkpoint)
        for metric in ("voc07", "voc12", "coco"):
            assert compared["metrics"][metric]["mAP"] == tested[metric]["mAP"]
            assert compared["metrics"][metric]["ap"] == tested[metric]["ap"]
            for value in filter(None, tested[metric]["ap"].values()):  # what `detect test` prints is in the report
                assert f"{value:7.4f}" in printed and f"{value:.4f}" in report
        assert compared["metrics"]["coco"]["stats"] == tested["coco"]["stats"]


def test_changed_config_with_old_results_is_a_clear_error(comparison, capsys):
    code = run_cli("compare", "--config", comparison.config, "--backbones", ",".join(BACKBONES),
                   "--out", comparison.out, "train.steps=3")
    assert code == 2
    err = capsys.readouterr().err
    assert "vgg11.json" in err and "train.steps was 2, now 3" in err


def test_report_only_rerenders_from_the_result_files(comparison, tmp_path):
    out = tmp_path / "copy"
    shutil.copytree(comparison.out / "results", out / "results")
    assert run_cli("compare", "--config", comparison.config, "--backbones", ",".join(BACKBONES), "--out", out,
                   "--report-only") == 0
    assert (out / "report.md").read_text() == (comparison.out / "report.md").read_text()


@pytest.mark.parametrize("argv, message", [
    (["--backbones", "vgg11,resnet18", "--checkpoints", "a.pth"], "1 checkpoint(s) for 2 variant(s)"),
    (["--backbones", "vgg11,resnet_18"], "unknown backbone 'resnet_18'"),
    (["--backbones", "vgg11,resnet18", "--proposers", "selective_search,multibox"], "one backbone"),
    (["--backbones", "vgg11", "--proposers", "selective_search,multibox"], "--multibox-checkpoint"),
    (["--backbones", "vgg11,vgg11"], "lists a name twice"),
])
def test_bad_comparison_requests_fail_before_any_training(tmp_path, capsys, argv, message):
    config = tiny_config(tmp_path / "cfg", tmp_path / "cache")
    assert run_cli("compare", "--config", config, "--out", tmp_path / "out", *argv) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "out" / "runs").exists()
