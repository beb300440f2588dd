"""MultiBox end to end on synthetic shapes: train, resume exactly, then propose through build_proposer."""
import json

import numpy as np
import pytest
import torch

from detect.config import load_config
from detect.engine.multibox_trainer import MultiBoxTrainConfig, train_multibox
from detect.errors import ConfigError
from detect.proposals import build_proposer
from detect.proposals.multibox import dataset_normalised_boxes, kmeans_priors
from detect.utils.checkpoint import load_checkpoint
from detect.utils.interrupt import Interrupted

TINY = ["data.train=shapes:20:0:train", "model.backbone=googlenet_bn", "model.width=0.125", "model.num_priors=8",
        "model.input_size=64", "optim.optimizer=adamw", "optim.lr=0.003", "optim.batch_size=4",
        "run.device=cpu", "run.log_every=1", "run.amp=false"]

pytestmark = pytest.mark.usefixtures("torch_one_thread")


def tiny_config(tmp_path, name, *extra):
    return load_config(MultiBoxTrainConfig, None, TINY + [f"run.out_dir={tmp_path / name}", *extra])


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """Two epochs straight, and the same two epochs as one run stopped after epoch 1 and resumed."""
    tmp = tmp_path_factory.mktemp("multibox")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # module scope runs before the per-test torch_one_thread fixture
    try:
        straight = train_multibox(tiny_config(tmp, "straight", "optim.epochs=2"))
        train_multibox(tiny_config(tmp, "resumed", "optim.epochs=1"))
        resumed = train_multibox(tiny_config(tmp, "resumed", "optim.epochs=2"), resume=True)
    finally:
        torch.set_num_threads(threads)
    return straight, resumed


def test_checkpoint_holds_kmeans_priors_of_the_training_boxes(trained):
    from detect.data.spec import build_dataset

    state = load_checkpoint(trained[0])
    expected = kmeans_priors(dataset_normalised_boxes(build_dataset("shapes:20:0:train")), 8, seed=0)
    assert torch.equal(state["model"]["priors"], torch.from_numpy(expected))
    assert state["finished"] and state["epoch"] == 2 and state["step"] == 6  # 12 images / batch 4 x 2 epochs


def test_resumed_run_continues_its_schedule_and_ends_where_a_straight_run_does(trained):
    straight, resumed = (load_checkpoint(p) for p in trained)
    assert resumed["step"] == straight["step"]
    for key, value in straight["model"].items():
        assert torch.allclose(resumed["model"][key].float(), value.float(), atol=1e-5), key
    metrics = (trained[1].parent / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["step"] for line in metrics] == [1, 2, 3, 4, 5, 6]  # epoch 2 went on at step 4


def test_resuming_with_another_model_is_refused(trained, tmp_path):
    cfg = load_config(MultiBoxTrainConfig, None, TINY + [f"run.out_dir={trained[0].parent}", "model.num_priors=9"])
    with pytest.raises(ConfigError, match="use another run.out_dir, or leave out --resume"):
        train_multibox(cfg, resume=True)


def test_trained_model_proposes_through_build_proposer(trained):
    from detect.data.spec import build_dataset

    image = build_dataset("shapes:20:0:test").load_image(0)
    proposer = build_proposer("multibox", checkpoint=str(trained[0]), top_k=5)
    boxes, scores = proposer.propose(image)
    height, width = image.shape[:2]
    assert boxes.dtype == np.float32 and scores.dtype == np.float32 and 0 < len(boxes) <= 5
    assert np.all(boxes[:, :2] >= 0) and np.all(boxes[:, 2] <= width) and np.all(boxes[:, 3] <= height)
    assert np.all(boxes[:, 2:] > boxes[:, :2]) and np.all(np.diff(scores) <= 0)
    assert proposer.params()["top_k"] == 5 and len(proposer.params()["checkpoint_sha1"]) == 16


def test_combined_proposer_merges_real_selective_search_and_multibox(trained):
    from detect.data.spec import build_dataset
    from detect.proposals.selective_search import SelectiveSearch

    image = build_dataset("shapes:20:0:test").load_image(0)
    combined = build_proposer("combined", checkpoint=str(trained[0]), top_m=3, strategy="single", min_box_size=4)
    assert combined.selective_search.ks == [200.0]  # the `single` preset's k = 100, doubled
    boxes, scores = combined.propose(image)
    learned, _ = combined.multibox.propose(image)
    segmented, _ = SelectiveSearch("single", ks=[200.0], min_box_size=4).propose(image)
    assert np.array_equal(boxes[: len(learned)], learned[:3])  # MultiBox's top 3 first
    assert len(np.unique(boxes, axis=0)) == len(boxes) <= len(learned[:3]) + len(segmented)
    assert np.all(np.diff(scores) < 0)
    assert combined.params()["multibox"]["top_k"] == 3


def test_sigterm_mid_epoch_checkpoints_and_the_rerun_finishes_like_a_straight_run(trained, tmp_path):
    import signal

    from detect.proposals.multibox import MultiBoxNet

    forwards = []

    def terminate_on_second_step(module, args, output):
        if isinstance(module, MultiBoxNet) and module.training:
            forwards.append(1)
            if len(forwards) == 2:
                signal.raise_signal(signal.SIGTERM)  # a real signal, at a known step

    cfg = tiny_config(tmp_path, "stopped", "optim.epochs=2")
    hook = torch.nn.modules.module.register_module_forward_hook(terminate_on_second_step)
    try:
        with pytest.raises(Interrupted, match="stopped by SIGTERM") as stop:
            train_multibox(cfg)
    finally:
        hook.remove()
    assert stop.value.exit_code == 143 and stop.value.resume_flag == "--resume"
    path = stop.value.checkpoint
    stopped = load_checkpoint(path)
    assert (stopped["epoch"], stopped["batches_done"], stopped["step"], stopped["finished"]) == (0, 2, 2, False)
    resumed, straight = load_checkpoint(train_multibox(cfg, resume=True)), load_checkpoint(trained[0])
    assert resumed["step"] == 6 and resumed["finished"]
    for key, value in straight["model"].items():
        assert torch.allclose(resumed["model"][key].float(), value.float(), atol=1e-5), key


@pytest.mark.slow
def test_two_process_torchrun_training_writes_one_checkpoint_and_log(tmp_path):
    import os
    import subprocess
    import sys

    from detect.utils.metric_logger import read_metrics

    config = tmp_path / "tiny.yaml"
    config.write_text("{}\n")
    out = tmp_path / "ddp"
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
               "-m", "detect.cli", "train-multibox", "--config", str(config), *TINY, f"run.out_dir={out}",
               "optim.epochs=1"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    state = load_checkpoint(out / "last.pth")
    # 12 images, 6 per process, batch 4 per process: 2 steps, each averaging both processes' gradients
    assert state["step"] == 2 and state["finished"]
    assert [r["step"] for r in read_metrics(out / "metrics.jsonl")] == [1, 2]  # rank 0 logs, once a step
    assert done.stdout.count("MultiBox checkpoint:") == 2  # both ranks finish


def test_the_old_output_dir_key_still_works_with_a_deprecation_message(tmp_path, capsys):
    cfg = load_config(MultiBoxTrainConfig, None, TINY + [f"run.output_dir={tmp_path / 'old'}"])
    assert cfg.run.out_dir == str(tmp_path / "old")
    assert "run.output_dir is deprecated; use run.out_dir" in capsys.readouterr().err
