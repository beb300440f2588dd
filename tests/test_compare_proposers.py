"""`detect compare --proposers`: proposal methods compared on one backbone, MultiBox from a real checkpoint."""
from __future__ import annotations

import contextlib
import io
import json

import pytest

from detect import cli
from detect.config import load_config
from detect.engine.multibox_trainer import MultiBoxTrainConfig, train_multibox
from detector_setup import tiny_config

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("torch_one_thread")]
PROPOSERS = ["multibox", "combined"]
TINY_MULTIBOX = ["data.train=shapes:20:0:train", "model.backbone=googlenet_bn", "model.width=0.125",
                 "model.num_priors=8", "model.input_size=64", "optim.optimizer=adamw", "optim.lr=0.003",
                 "optim.batch_size=4", "optim.epochs=1", "run.device=cpu", "run.amp=false"]


@pytest.fixture(scope="module")
def comparison(tmp_path_factory):
    root = tmp_path_factory.mktemp("compare_proposers")
    with contextlib.redirect_stdout(io.StringIO()):
        multibox = train_multibox(load_config(MultiBoxTrainConfig, None,
                                              TINY_MULTIBOX + [f"run.out_dir={root / 'multibox'}"]))
    config = tiny_config(root / "cfg", root / "cache")
    out = root / "out"
    log = io.StringIO()
    with contextlib.redirect_stdout(log):
        code = cli.main(["compare", "--config", str(config), "--backbones", "vgg11", "--proposers", ",".join(PROPOSERS),
                         "--multibox-checkpoint", str(multibox), "--proposer-param", "multibox.top_k=20",
                         "--proposer-param", "combined.strategy=single", "--proposer-param", "combined.min_box_size=4",
                         "--out", str(out)])
    assert code == 0, log.getvalue()
    results = {name: json.loads((out / "results" / f"{name}.json").read_text()) for name in PROPOSERS}
    return out, multibox, results


def test_each_proposer_gets_its_own_cache_on_the_same_backbone(comparison):
    _, multibox, results = comparison
    assert {r["proposal_method"] for r in results.values()} == set(PROPOSERS)
    assert {r["backbone"] for r in results.values()} == {"vgg11"} and {r["kind"] for r in results.values()} == {"proposer"}
    assert results["multibox"]["proposal_cache"] != results["combined"]["proposal_cache"]
    assert results["multibox"]["proposal_params"] == {"checkpoint": str(multibox), "top_k": 20}
    assert results["combined"]["proposal_params"]["checkpoint"] == str(multibox)
    assert results["multibox"]["proposal_recall"]["boxes_per_image"] <= 20
    # the union adds Selective Search's boxes to MultiBox's
    assert results["combined"]["proposal_recall"]["boxes_per_image"] > results["multibox"]["proposal_recall"]["boxes_per_image"]
    differing = {(section, key) for section in results["multibox"]["config"] for key in results["multibox"]["config"][section]
                 if results["multibox"]["config"][section][key] != results["combined"]["config"][section][key]}
    assert differing == {("proposals", "method"), ("proposals", "params"), ("train", "out_dir")}


def test_report_has_a_recall_row_and_curve_per_proposer(comparison):
    out, _, results = comparison
    report = (out / "report.md").read_text()
    assert report.startswith("# Comparison of proposers")
    table = report.split("## Proposal recall on the test set")[1].split("##")[0]
    for name, result in results.items():
        row = next(line for line in table.splitlines() if line.startswith(f"| {name} | {name} |"))
        assert f"{result['proposal_recall']['recall']['0.5']['all']:.3f}" in row
    assert (out / "plots" / "proposal_recall.png").stat().st_size > 1000
