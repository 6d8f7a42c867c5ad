"""VARIANT_RESOURCE_LOG: each `variant` command appends one JSON line of what it cost, whatever
its exit status; `variant resources` turns the log into one parquet."""
import json
from pathlib import Path

import pandas as pd
import torch

from conftest import cli_main
from variant.util.resources import ENV, table

REPO = Path(__file__).resolve().parents[2]
COLUMNS = ["stage", "job", "out", "rc", "wall_s", "peak_gpu_mib", "peak_host_mib", "bytes_written", "gpu"]


def lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_a_command_appends_one_line_of_its_cost(tmp_path):
    log = tmp_path / "logs" / "r.jsonl"          # its folder is made on the way
    r = cli_main("cost", "--depth", "4", "--subnet-depth", "4", "2", cwd=REPO, env={ENV: log})
    assert r.returncode == 0, r.stderr
    [row] = lines(log)
    assert row["stage"] == "cost" and row["rc"] == 0
    assert row["wall_s"] > 0 and row["bytes_written"] >= 0 and row["peak_host_mib"] > 0
    assert row["argv"] == "cost --depth 4 --subnet-depth 4 2" and row["job"] == "" and row["out"] == ""
    if torch.cuda.is_initialized():   # an earlier test in this process touched the GPU
        assert row["gpu"] == torch.cuda.get_device_name(torch.cuda.current_device())
    else:
        assert row["gpu"] == "" and row["peak_gpu_mib"] is None

    r = cli_main("cost", "--depth", "4", "--subnet-depth", "4", cwd=REPO, env={ENV: log})
    assert r.returncode == 0 and len(lines(log)) == 2           # appended, the first line kept
    assert lines(log)[0] == row


def test_a_failing_command_is_recorded_with_its_exit_status(tmp_path):
    log = tmp_path / "r.jsonl"
    r = cli_main("fetch", "--profile", "nosuch", cwd=REPO, env={ENV: log})
    assert r.returncode == 2 and "nosuch" in r.stderr
    [row] = lines(log)
    assert row["stage"] == "fetch" and row["rc"] == 2 and row["wall_s"] > 0


def test_without_the_variable_nothing_is_written(tmp_path, monkeypatch):
    monkeypatch.delenv(ENV, raising=False)
    r = cli_main("cost", "--depth", "4", "--subnet-depth", "4", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert list(tmp_path.iterdir()) == []
    log = tmp_path / "r.jsonl"                    # a log of an earlier run is left alone too
    cli_main("cost", "--depth", "4", "--subnet-depth", "4", cwd=tmp_path, env={ENV: log})
    cli_main("cost", "--depth", "4", "--subnet-depth", "4", cwd=tmp_path)
    assert len(lines(log)) == 1 and sorted(p.name for p in tmp_path.iterdir()) == ["r.jsonl"]


def row(stage, start, **kw):
    return dict(stage=stage, job="", out="", rc=0, start=start, wall_s=1.0, peak_gpu_mib=None,
                peak_host_mib=100.0, bytes_written=10, gpu="", rank=0, host="h", argv=stage) | kw


def test_table_skips_a_cut_last_line_and_sorts_by_start(tmp_path, capsys):
    log = tmp_path / "r.jsonl"
    text = "".join(json.dumps(r) + "\n" for r in (row("train", 30.0), row("fetch", 10.0), row("sample", 20.0)))
    cut = json.dumps(row("evaluate", 5.0))[:25]                  # the writer died mid-line
    log.write_text(text + cut)
    df = table(log)
    assert df["stage"].tolist() == ["fetch", "sample", "train"]
    assert df["start"].tolist() == [10.0, 20.0, 30.0] and list(df.index) == [0, 1, 2]
    assert f"{log}:4: skipped, not JSON" in capsys.readouterr().err


def test_resources_command_writes_the_parquet(tmp_path):
    log = tmp_path / "r.jsonl"
    for args in (["cost", "--depth", "4", "--subnet-depth", "4"], ["fetch", "--profile", "nosuch"]):
        cli_main(*args, cwd=REPO, env={ENV: log})
    r = cli_main("resources", log, "--out", tmp_path / "stages.parquet", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    df = pd.read_parquet(tmp_path / "stages.parquet")
    assert set(COLUMNS) <= set(df.columns)
    assert df["stage"].tolist() == ["cost", "fetch"] and df["rc"].tolist() == [0, 2]
    assert "cost" in r.stdout and "fetch" in r.stdout                 # the per-stage summary


def test_resources_names_a_missing_log(tmp_path):
    missing = tmp_path / "nope.jsonl"
    r = cli_main("resources", missing, "--out", tmp_path / "x.parquet", cwd=tmp_path)
    assert r.returncode == 2
    assert len(r.stderr.strip().splitlines()) == 1 and str(missing) in r.stderr
    assert r.stderr.startswith("variant resources: error:") and "no such file" in r.stderr
    assert not (tmp_path / "x.parquet").exists()


def test_a_usage_error_is_recorded_too(tmp_path):
    log = tmp_path / "r.jsonl"
    r = cli_main("sample", "--no-such-option", cwd=REPO, env={ENV: log})
    assert r.returncode == 2 and "the following arguments are required" in r.stderr
    [row] = lines(log)
    assert row["stage"] == "sample" and row["rc"] == 2 and row["argv"] == "sample --no-such-option"


def test_a_full_disk_is_one_line_naming_the_file_and_leaves_no_temporary(tmp_path, monkeypatch):
    """torch and pyarrow raise ENOSPC wrapped in errors of their own, which name no file."""
    import errno
    log = tmp_path / "r.jsonl"
    cli_main("cost", "--depth", "4", "--subnet-depth", "4", cwd=REPO, env={ENV: log})

    def full(self, path, **kw):
        Path(path).write_bytes(b"half a parquet")
        try:
            raise OSError(errno.ENOSPC, "No space left on device")
        except OSError as e:
            raise RuntimeError("unexpected pos 1991939840 vs 1991939728") from e
    monkeypatch.setattr(pd.DataFrame, "to_parquet", full)
    out = tmp_path / "stages.parquet"
    r = cli_main("resources", log, "--out", out, cwd=tmp_path)
    assert r.returncode == 1 and "Traceback" not in r.stderr
    [line] = r.stderr.strip().splitlines()
    assert line.startswith("variant resources: error: no space left on the device writing ") and str(out) in line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.jsonl"]   # the temporary removed


def test_an_interrupt_is_one_line_recorded_with_rc_130_and_leaves_no_temporary(tmp_path, monkeypatch):
    """SIGINT (timeout --signal=INT, Snakemake stopping its jobs) mid-write: no traceback."""
    log = tmp_path / "r.jsonl"
    cli_main("cost", "--depth", "4", "--subnet-depth", "4", cwd=REPO, env={ENV: log})

    def interrupted(self, path, **kw):
        Path(path).write_bytes(b"half a parquet")
        raise KeyboardInterrupt
    monkeypatch.setattr(pd.DataFrame, "to_parquet", interrupted)
    r = cli_main("resources", log, "--out", tmp_path / "stages.parquet", cwd=tmp_path, env={ENV: log})
    assert r.returncode == 130 and "Traceback" not in r.stderr
    [line] = r.stderr.strip().splitlines()
    assert line.startswith("variant resources: interrupted;")
    assert lines(log)[-1]["rc"] == 130
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.jsonl"]
