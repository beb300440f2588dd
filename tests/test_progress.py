"""Progress output in a log (stderr not a terminal): whole lines, no carriage returns, no cursor-up escape
sequences, even for a bar nested under another (the evaluation inside training) and around tqdm.write."""
from __future__ import annotations

import io
import re

from tqdm import tqdm

from detect.cli import main as cli
from detect.utils.progress import LogProgress, progress_bar
from detector_setup import tiny_config

CURSOR_UP = "\x1b[A"


def nested(make_bar, log: io.StringIO) -> str:
    """An outer bar of 3 steps with an inner bar of 20 items and a tqdm.write message after each."""
    outer = make_bar(total=3, desc="train", file=log)
    for step in range(3):
        for _ in make_bar(range(20), desc="detect", leave=False, file=log):
            pass
        tqdm.write(f"step {step + 1}: mAP 0.5", file=log)
        outer.update(1)
    outer.close()
    return log.getvalue()


def test_a_bar_nested_in_another_writes_plain_lines_to_a_log():
    out = nested(progress_bar, io.StringIO())
    assert CURSOR_UP not in out and "\x1b" not in out and "\r" not in out, repr(out)
    lines = out.splitlines()
    assert [line for line in lines if line.startswith("step")] == [f"step {i}: mAP 0.5" for i in (1, 2, 3)]
    assert all(line.startswith(("train", "detect", "step")) for line in lines), lines  # no empty or torn lines
    assert sum(line.startswith("detect") and "20/20" in line for line in lines) == 3, "each inner bar's final count"
    assert lines[-1].startswith("train") and "3/3" in lines[-1], lines


def test_plain_tqdm_writes_cursor_up_escapes_for_the_nested_bar():
    """The behaviour the log bars replace (so the test above can fail)."""
    assert CURSOR_UP in nested(tqdm, io.StringIO())


def test_a_log_bar_writes_a_line_at_the_start_and_the_end_then_at_most_one_per_interval():
    log = io.StringIO()
    for _ in progress_bar(range(1000), desc="work", file=log):
        pass
    assert log.getvalue().splitlines()[0].startswith("work:   0%") and len(log.getvalue().splitlines()) == 2
    assert "1000/1000" in log.getvalue().splitlines()[-1]

    log = io.StringIO()
    bar = LogProgress(total=5, desc="every", file=log, mininterval=0)
    for _ in range(5):
        bar.update(1)
    bar.close()
    assert [line.split("|")[-1].split()[0] for line in log.getvalue().splitlines()] == [
        "0/5", "1/5", "2/5", "3/5", "4/5", "5/5"]


def test_on_a_terminal_the_bar_is_plain_tqdm():
    class Terminal(io.StringIO):
        def isatty(self):
            return True

    bar = progress_bar(range(3), file=Terminal())
    assert type(bar) is tqdm
    bar.close()
    assert isinstance(progress_bar(range(3), file=io.StringIO()), LogProgress)


def test_detect_train_with_evaluation_writes_plain_lines_to_a_redirected_log(tmp_path, capsys):
    config = tiny_config(tmp_path, tmp_path / "proposals", data={"val": "shapes:30:0:test"},
                         train={"progress": True, "eval_every": 1, "fit_check_images": 0})
    assert cli(["train", "--config", str(config)]) == 0
    err = capsys.readouterr().err
    assert "detect" in err and "train" in err, err[-2000:]  # the evaluation's bar and the training bar reported
    assert CURSOR_UP not in err and "\r" not in err, repr(err[-2000:])  # whole lines only
    done, total = re.search(r"(\d+)/(\d+)", [line for line in err.splitlines() if line.startswith("detect")][-1]).groups()
    assert done == total, "the evaluation's last line is its final count"
