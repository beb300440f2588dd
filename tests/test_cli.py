"""The `detect` entry point: the installed script answers, and every subcommand has --help."""
import shutil
import subprocess
import sys

import pytest

from detect import cli


def test_installed_script_lists_every_subcommand():
    exe = shutil.which("detect")
    cmd = [exe, "--help"] if exe else [sys.executable, "-m", "detect.cli", "--help"]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    for name in cli.COMMANDS:
        assert name in out


@pytest.mark.parametrize("name", sorted(cli.COMMANDS))
def test_each_subcommand_has_help(name, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main([name, "--help"])
    assert exit_info.value.code == 0
    assert f"detect {name}" in capsys.readouterr().out


def test_unknown_subcommand_is_rejected(capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["no-such-command"])
    assert exit_info.value.code == 2
    assert "invalid choice" in capsys.readouterr().err
