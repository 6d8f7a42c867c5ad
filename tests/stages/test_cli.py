"""`variant verify-golden` as a user runs it."""
import json
import shutil
import subprocess
import sys

import pytest
import torch

from conftest import GOLDEN, GOLDEN_SETS, cli_main


def variant(*args):
    """`variant ARGS` in this process: the output and exit status (the entry points, the
    imports of a fresh process: subprocesses below)."""
    return cli_main(*args)


@pytest.mark.parametrize("golden", GOLDEN_SETS, ids=lambda p: p.name)
def test_verify_golden_passes_on_the_reference_vectors(golden):
    """Every check of config.json's subnets: 5 before the subnets, then for each 5 of the
    reference sampler and 4 of the lean one (its cache differs by design)."""
    subnets = json.loads((golden / "config.json").read_text())["subnets"]
    r = variant("verify-golden", str(golden))
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"{5 + 9 * len(subnets)} passed, 0 failed" in r.stdout
    d, n = subnets[-1]
    assert f"d={d} N={n} sampled tokens" in r.stdout and f"lean d={d} N={n} sampled tokens" in r.stdout


def test_verify_golden_fails_on_a_planted_difference(tmp_path):
    bad = tmp_path / "golden"
    shutil.copytree(GOLDEN, bad)
    vec = torch.load(bad / "vectors.pth", weights_only=False)
    vec["infer"]["d2_N2"]["tokens"][3][0, 0] += 1
    vec["teacher_forced_logits"][0, 0, 0] += 1e-3
    torch.save(vec, bad / "vectors.pth")
    r = variant("verify-golden", str(bad))
    assert r.returncode == 1
    failed = [line for line in r.stdout.splitlines() if line.endswith("FAIL")]
    assert [line.split("  ")[0] for line in failed] == ["teacher-forced logits", "d=2 N=2 sampled tokens",
                                                        "lean d=2 N=2 sampled tokens"]


def test_verify_golden_names_a_missing_directory(tmp_path):
    r = variant("verify-golden", str(tmp_path / "none"))
    assert r.returncode == 2
    assert "not a golden directory, missing config.json" in r.stderr
    assert "Traceback" not in r.stderr


def test_version_through_the_command_and_python_m():
    from variant import __version__
    for cmd in ([sys.executable, "-m", "variant.cli", "--version"], [sys.executable, "-m", "variant", "--version"]):
        r = subprocess.run(cmd, capture_output=True, text=True)
        assert r.returncode == 0 and r.stdout.strip() == f"variant {__version__}", r.stderr


def test_snakemake_config_keys_are_validated(tmp_path):
    """A misspelt --config key stops the run naming it, instead of running the default profile."""
    import shutil as sh
    from pathlib import Path
    root = Path(__file__).resolve().parents[2]
    snakemake = sh.which("snakemake") or str(Path(sys.executable).parent / "snakemake")
    r = subprocess.run([snakemake, "-n", "all", "--config", "profil=paper"], cwd=root,
                       capture_output=True, text=True)
    assert r.returncode != 0
    assert "profil" in r.stdout + r.stderr and "was unexpected" in r.stdout + r.stderr


# ---- the command line's conventions (issue 20) ---------------------------------------------

def subcommands(parser, path=()):
    """(command words, parser) for every parser under `parser`, depth first."""
    import argparse
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield (*path, name), sub
                yield from subcommands(sub, (*path, name))


def test_every_option_of_every_command_has_help():
    import argparse
    from variant.cli import build_parser
    parsers = dict(subcommands(build_parser(every_module=True)))
    assert ("bench", "sample") in parsers and ("profile",) in parsers
    missing = [f"variant {' '.join(words)} {'/'.join(a.option_strings) or a.dest}"
               for words, p in parsers.items() for a in p._actions
               if not isinstance(a, (argparse._HelpAction, argparse._SubParsersAction)) and not a.help]
    assert not missing, missing


def test_each_command_in_the_table_is_its_module_parser():
    """COMMANDS names the module of every command: building the parser for one command
    loads that module, which defines the command (and the function it runs)."""
    from variant.cli import COMMANDS, build_parser
    for name in COMMANDS:
        parser = build_parser(name.split())
        for word in name.split():
            parser = dict(subcommands(parser))[(word,)]
        assert parser.get_default("func") is not None, name
        assert parser.description, name


def test_top_level_help_imports_no_stage():
    """`variant --help` and `variant bench --help` list every command from the table alone:
    no torch, numpy or stage module (seconds of imports) is loaded."""
    probe = ("import sys\nfrom variant.cli import main\n"
             "try:\n    main(sys.argv[1:])\nexcept SystemExit:\n    pass\n"
             "heavy = [m for m in ('torch', 'numpy', 'pandas', 'variant.stages.sample') if m in sys.modules]\n"
             "print('HEAVY', heavy)\n")
    for args in (["--help"], ["bench", "--help"]):
        r = subprocess.run([sys.executable, "-c", probe, *args], capture_output=True, text=True)
        assert r.returncode == 0, r.stderr
        assert "HEAVY []" in r.stdout, (args, r.stdout[-300:])
        if args == ["--help"]:
            assert "reference-stats" in r.stdout and "features and FID statistics" in r.stdout


def test_a_missing_input_names_the_file_and_what_it_is_for(tmp_path):
    r = variant("findings", "--profile", "tiny", "--quality", str(tmp_path / "none.parquet"),
                "--out", str(tmp_path / "f.md"))
    assert r.returncode == 2, r.stderr
    assert f"{tmp_path / 'none.parquet'}: no such file (--quality: the rows of `variant collect`)" in r.stderr
    assert "Traceback" not in r.stderr and not (tmp_path / "f.md").exists()


def test_an_os_level_missing_file_is_one_line():
    from variant.cli import error_line
    try:
        open("/nonexistent/params.yaml")
    except FileNotFoundError as e:
        assert error_line(e) == "/nonexistent/params.yaml: no such file"
    assert error_line(ValueError("params: bad key")) == "params: bad key"
