"""The command line's options: defined once, checked while parsing, defaults from the configs;
building the parser imports no heavy module; figures need no pyplot and switch no backend."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import textwrap

import pytest

from perturbscope.cli.main import build_parser, main

HEAVY = ("torch", "pandas", "matplotlib", "scipy")
#: commands that run a model: each takes --device and --threads
MODEL_COMMANDS = ("train", "audit", "demo", "universal", "categorize", "rare-event", "reproduce", "harmless",
                  "noise-training", "report", "bounds")


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    (action,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return dict(action.choices)


def _option(parser: argparse.ArgumentParser, flag: str) -> argparse.Action:
    for a in parser._actions:
        if flag in a.option_strings:
            return a
    raise AssertionError(f"{parser.prog} has no {flag}")


def _run_python(code: str) -> str:
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def test_building_the_parser_and_every_help_imports_no_heavy_module():
    """A regression test of the import graph, not a timing: ``perturbscope --help`` stays fast only
    while no command module imports torch, pandas, matplotlib or scipy at import time."""
    out = _run_python(f"""
        import contextlib, io, json, sys
        import perturbscope.cli.main as m
        parser = m.build_parser()
        commands = list(parser._subparsers._group_actions[0].choices)
        for argv in [["--help"]] + [[c, "--help"] for c in commands] + [["theory", "point", "--help"]]:
            with contextlib.redirect_stdout(io.StringIO()):
                assert m.main(argv) == 0, argv
        print(json.dumps({{"heavy": [k for k in {HEAVY!r} if k in sys.modules], "commands": commands}}))
    """)
    doc = json.loads(out)
    assert doc["heavy"] == []
    assert len(doc["commands"]) == 12


def test_device_and_threads_on_every_command_that_runs_a_model():
    subs = _subparsers(build_parser())
    assert set(MODEL_COMMANDS) | {"theory"} == set(subs)
    for name in MODEL_COMMANDS:
        dev = _option(subs[name], "--device")
        assert dev.default in ("cpu",), name
        _option(subs[name], "--threads")


@pytest.mark.parametrize("argv, flag", [
    (["audit", "--draws", "0"], "--draws"),
    (["audit", "--draws", "2.5"], "--draws"),
    (["audit", "--alphas", "1", "nan"], "--alphas"),
    (["audit", "--alphas", "-2"], "--alphas"),
    (["audit", "--s-max", "inf"], "--s-max"),
    (["audit", "--threads", "0"], "--threads"),
    (["audit", "--device", "tpu"], "--device"),
    (["audit", "--device", "cuda:x"], "--device"),
    (["bounds", "--steps", "0"], "--steps"),
    (["rare-event", "--budget", "1"], "--budget"),
    (["universal", "--xi", "0.1", "--normals", "1"], "--normals"),
    (["theory", "point", "--dims", "0"], "--dims"),
])
def test_bad_numbers_are_refused_while_parsing_in_one_line(argv, flag, tmp_path, capsys):
    cmd = argv[0]
    required = {"audit": ["--checkpoint", "m.pt", "--out", str(tmp_path / "o")],
                "bounds": ["--checkpoint", "m.pt"], "universal": ["--checkpoint", "m.pt", "--out", "o"],
                "rare-event": ["--linear", "10"], "theory": []}[cmd]
    assert main([*argv, *required]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"argument {flag}" in err and "error" in err
    assert not (tmp_path / "o").exists()


def test_a_device_torch_cannot_use_is_a_usage_error(tmp_path, capsys):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    rc = main(["rare-event", "--linear", "20", "--alphas", "2", "--budget", "200", "--n-per-level", "100",
               "--device", "cuda", "--no-progress"])
    assert rc == 2
    assert "--device cuda" in capsys.readouterr().err


def test_defaults_come_from_the_config_dataclasses():
    from perturbscope.audit.config import AuditConfig
    from perturbscope.experiments.harmless import HarmlessConfig
    from perturbscope.experiments.noise_config import NoiseTrainingConfig
    from perturbscope.train_config import TrainConfig

    subs = _subparsers(build_parser())
    audit, tr = AuditConfig(), TrainConfig()
    for cmd in ("audit", "bounds"):
        p = subs[cmd]
        assert _option(p, "--draws").default == audit.draws
        assert _option(p, "--steps").default == audit.steps
        assert _option(p, "--s-max").default == audit.s_max
        assert tuple(_option(p, "--alphas").default) == audit.alphas
        assert _option(p, "--probe-seed").default == audit.seed
    noise = NoiseTrainingConfig()
    p = subs["noise-training"]
    assert _option(p, "--draws").default == noise.audit.draws
    assert _option(p, "--epochs").default == noise.training.epochs
    assert tuple(_option(p, "--rhos").default) == noise.rhos
    assert _option(p, "--audit-limit").default == noise.audit_limit
    assert _option(subs["train"], "--lr").default == tr.lr
    assert _option(subs["train"], "--batch-size").default == tr.batch_size
    h = HarmlessConfig()
    assert _option(subs["harmless"], "--limit").default == h.limit
    assert tuple(_option(subs["harmless"], "--sizes").default) == h.sizes
    # demo's own smaller defaults, shown in its help
    demo = subs["demo"].parse_args([])
    assert (demo.draws, demo.epochs, demo.limit, demo.classes) == (500, 25, 200, [7, 8])
    assert "default: 500" in " ".join(subs["demo"].format_help().split())


def test_torch_free_copies_of_library_names_agree():
    from perturbscope.attacks.best import DEFAULT_BEST
    from perturbscope.cli.bounds_cmd import ATTACKS
    from perturbscope.cli.options import DATA_SOURCES, RARE_METHODS
    from perturbscope.cli.theory_cmd import ENGINE_CHOICES
    from perturbscope.data.tasks import SOURCES
    from perturbscope.probes.rare_event import METHODS
    from perturbscope.theory.engines import ENGINES

    assert set(DATA_SOURCES) == set(SOURCES)
    assert ENGINE_CHOICES == (*ENGINES, "both")
    assert set(ATTACKS) == set(DEFAULT_BEST)
    assert set(RARE_METHODS) <= set(METHODS)


def test_figures_use_no_pyplot_and_keep_the_backend(tmp_path):
    """Importing every module that draws, and drawing, neither switches the user's backend nor
    needs pyplot; save_figure writes atomically and also frees a pyplot figure."""
    out = _run_python(f"""
        import json, sys
        import matplotlib
        matplotlib.rcParams["backend"] = "pdf"   # the user's choice
        import perturbscope.report.plots, perturbscope.report.audit_plot, perturbscope.theory.plots
        import perturbscope.probes.rare_event.plot, perturbscope.analyses.boundary_normals
        import perturbscope.harmless.applications, perturbscope.experiments.universal
        import perturbscope.experiments.categorize, perturbscope.experiments.harmless
        from perturbscope.figures import new_figure, save_figure
        fig, ax = new_figure(1, 2, figsize=(3, 2))
        ax[0].plot([0, 1], [1, 0])
        fig.tight_layout()
        path = save_figure(fig, {str(tmp_path / "a.png")!r})
        no_pyplot = "matplotlib.pyplot" not in sys.modules
        import matplotlib.pyplot as plt
        f2 = plt.figure()
        save_figure(f2, {str(tmp_path / "b.svg")!r})
        print(json.dumps({{"backend": matplotlib.rcParams["backend"], "no_pyplot": no_pyplot,
                          "open": plt.get_fignums(), "path": str(path)}}))
    """)
    doc = json.loads(out)
    assert doc["backend"] == "pdf" and doc["no_pyplot"] and doc["open"] == []
    assert (tmp_path / "a.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (tmp_path / "b.svg").read_text().lstrip().startswith("<?xml")
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary file left
