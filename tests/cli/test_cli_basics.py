from __future__ import annotations

import json
import subprocess
import sys

from typer.testing import CliRunner

import advkit
from advkit.cli import app

runner = CliRunner()


def test_version():
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0
    assert advkit.__version__ in result.stdout


def test_help_lists_commands():
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    assert "models" in result.stdout


def test_models_json(weights_dir):
    result = runner.invoke(app, ["models", "--json"])
    assert result.exit_code == 0, result.output
    rows = {r["name"]: r for r in json.loads(result.stdout)["models"]}
    assert rows["resnet20"]["dataset"] == "cifar10"
    assert rows["resnet20"]["weights"].endswith("resnet20.th")
    assert rows["resnet50"]["input_size"] == [224, 224]


def test_models_of_an_unknown_dataset_is_an_error():
    result = runner.invoke(app, ["models", "--dataset", "mnist"])
    assert result.exit_code == 2 and result.stderr.startswith("error: unknown --dataset 'mnist'; registered: cifar10")


def test_unknown_command_is_one_line():
    result = runner.invoke(app, ["nosuch"])
    assert result.exit_code != 0
    assert result.stderr.strip().count("\n") == 0
    assert result.stderr.startswith("error:")


def test_python_dash_m_entry_point():
    out = subprocess.run([sys.executable, "-m", "advkit", "--version"], capture_output=True, text=True)
    assert out.returncode == 0 and advkit.__version__ in out.stdout


def test_startup_imports_stay_light():
    # `advkit --help` must not pay for torch (≈2 s) and `store info` not for torchvision (≈2 s more).
    code = (
        "import sys, advkit.cli; heavy = {'torch', 'torchvision', 'h5py'} & set(sys.modules); "
        "import advkit.data; print(sorted(heavy), 'torchvision' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["[]", "False"]
    # Registering the ImageNet models must not import torchvision either (it pulls in torch._dynamo,
    # ≈3 s), nor the attack registry scikit-image and scipy (≈0.4 s): every CIFAR command would pay.
    code = ("import sys, advkit.models, advkit.attacks, advkit.bench; "
            "print(sorted({'torchvision', 'skimage', 'scipy'} & set(sys.modules)))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["[]"]


def test_cli_lists_attacks():
    result = runner.invoke(app, ["--json", "attacks", "--norm", "l2"])
    assert result.exit_code == 0, result.stderr
    assert [a["name"] for a in json.loads(result.stdout)["attacks"]] == ["apgd", "apgd-t", "autoattack", "cw", "deepfool", "fab", "fab-t",
                                                                 "hopskipjump", "pgd_l2", "square"]
    table = runner.invoke(app, ["attacks"])
    assert table.exit_code == 0 and "spsa" in table.stdout and "black box" in table.stdout
    # one line per attack, the summary cut to the terminal's width (80 here)
    from advkit.attacks import list_attacks

    lines = table.stdout.strip().splitlines()
    assert len(lines) == len(list_attacks()) + 4 and max(map(len, lines)) <= 80
    bad = runner.invoke(app, ["attacks", "--norm", "l0"])
    assert bad.exit_code != 0 and "unknown --norm 'l0'" in bad.stderr


def test_help_paragraphs_are_rewrapped_not_broken_at_source_lines():
    import typer.main

    def helps(command):
        yield command.help or ""
        for sub in getattr(command, "commands", {}).values():
            yield from helps(sub)

    # Typer keeps a docstring's line breaks after its first paragraph; AdvkitGroup joins them
    group = typer.main.get_command(app)
    assert all("\n" not in paragraph for text in helps(group) for paragraph in text.split("\n\n"))
    result = runner.invoke(app, ["bench", "--help"])
    assert result.exit_code == 0
    # (the docstring breaks after "results.csv,"; at 80 columns the help now wraps before it)
    assert any("results.csv, results.md" in line for line in result.stdout.splitlines())


def test_sigterm_unwinds_as_ctrl_c_with_one_line():
    """`timeout`, `docker stop` and batch schedulers end a run with SIGTERM: it died with no
    message, skipping the cleanup Ctrl-C gets (gen-adv's lock file stayed)."""
    import os
    import signal
    import time

    import typer

    from advkit.cli import AdvkitGroup

    cleaned = []
    demo = typer.Typer(cls=AdvkitGroup)

    @demo.command()
    def work() -> None:
        try:
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(10)
        finally:
            cleaned.append(True)

    @demo.command()
    def other() -> None:
        pass

    before = signal.getsignal(signal.SIGTERM)
    result = CliRunner().invoke(demo, ["work"])
    assert result.exit_code == 143 and result.stderr == "error: terminated (SIGTERM)\n" and cleaned == [True]
    assert signal.getsignal(signal.SIGTERM) is before  # (restored for the embedding process)
