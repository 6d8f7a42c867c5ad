"""Optional DVCLive view of the per-step log (`variant train --dvclive DIR`).

Loss, subnet probability, subnet use and tokens/s of each optimizer step go to
DIR/plots/metrics/*.tsv (what `dvc plots show` reads) and the latest values to
DIR/metrics.json (`dvc metrics show`). The log parquet stays the record; this is a view of
it, rewritten from the log's rows on a resume so that each step appears once.
"""
from __future__ import annotations

from pathlib import Path

LIVE_COLUMNS = ("loss", "subnet_prob", "used_subnet", "tokens_per_s")


class LiveLog:
    def __init__(self, directory: Path):
        try:
            from dvclive import Live
        except ImportError:
            raise ValueError(f"--dvclive {directory}: the dvclive package is not installed "
                             "(pip install dvclive)") from None
        # no dvc.yaml edits and no experiment commits: the pipeline's dvc.yaml is generated
        self.live = Live(str(directory), resume=False, report=None, save_dvc_exp=False, dvcyaml=None,
                         monitor_system=False)

    def replay(self, rows: list[dict]) -> None:
        """The steps a resumed run did before (the directory was emptied), once each."""
        for row in rows:
            self.add(row)

    def add(self, row: dict) -> None:
        self.live.step = int(row["step"])
        for name in LIVE_COLUMNS:
            self.live.log_metric(name, float(row[name]))
        self.live.next_step()

    def close(self) -> None:
        self.live.end()
