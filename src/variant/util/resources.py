"""What one `variant` command cost: wall time, peak GPU and host memory, bytes written.

Opt-in: when the environment names a JSON-lines file in VARIANT_RESOURCE_LOG, every
command appends one line to it on exit, whatever its exit status (the rehearsal's
stages.parquet is built from these lines). One short `write` per line on a file opened
for appending, so the processes of a DAG may share one log.
"""
from __future__ import annotations

import json
import os
import resource
import shlex
import socket
import sys
import time

ENV = "VARIANT_RESOURCE_LOG"
# the arguments that tell two jobs of one stage apart, in this order
JOB_ARGS = ("run", "config", "shards", "only", "bench")


def bytes_written() -> int:
    """Bytes this process passed to write(2) so far (/proc/self/io `wchar`: files and logs,
    whether or not the page cache has flushed them yet); 0 where /proc has no io file."""
    try:
        with open("/proc/self/io") as f:
            return next(int(line.split()[1]) for line in f if line.startswith("wchar:"))
    except (OSError, StopIteration):
        return 0


def _gpu() -> tuple[str, float | None]:
    """The GPU this process used and PyTorch's peak reservation on it (MiB); nothing when
    torch never touched CUDA (torch is not imported for that)."""
    torch = sys.modules.get("torch")
    if torch is None or not torch.cuda.is_initialized():
        return "", None
    d = torch.cuda.current_device()
    return torch.cuda.get_device_name(d), torch.cuda.max_memory_reserved(d) / 2**20


class Recorder:
    """start() before the command runs, finish(args, rc) after; both no-ops without the env."""

    def __init__(self):
        self.path = os.environ.get(ENV)
        self.t0 = time.time()
        self.written0 = bytes_written()

    def finish(self, command: str, args, argv, rc: int) -> None:
        if not self.path:
            return
        gpu, peak_gpu = _gpu()
        job = " ".join(f"{k}={_str(getattr(args, k))}" for k in JOB_ARGS
                       if getattr(args, k, None) not in (None, [], False))
        out = getattr(args, "out", None)
        row = {"stage": command, "job": job, "out": "" if out is None else str(out), "rc": int(rc), "start": round(self.t0, 3),
               "wall_s": round(time.time() - self.t0, 3), "peak_gpu_mib": peak_gpu,
               "peak_host_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
               "bytes_written": bytes_written() - self.written0, "gpu": gpu,
               "rank": int(os.environ.get("RANK", 0)), "host": socket.gethostname(),
               "argv": shlex.join(argv)}
        line = json.dumps(row) + "\n"
        os.makedirs(os.path.dirname(os.path.abspath(self.path)), exist_ok=True)
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, line.encode())
        finally:
            os.close(fd)


def _str(v) -> str:
    return ",".join(map(str, v)) if isinstance(v, (list, tuple)) else str(v)


def table(log_path):
    """The log as one row per command (later lines of the same job after earlier ones, e.g.
    a run resumed after a signal), sorted by start time."""
    import pandas as pd
    rows = []
    with open(log_path) as f:
        for n, line in enumerate(f, 1):
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as e:   # a line cut by a crash of the writer
                print(f"{log_path}:{n}: skipped, not JSON ({e.msg})", file=sys.stderr)
    if not rows:
        raise ValueError(f"{log_path}: no resource rows in it (was {ENV} set for the run?)")
    return pd.DataFrame(rows).sort_values("start", kind="stable").reset_index(drop=True)


def add_parser(sub):
    p = sub.add_parser("resources")
    p.add_argument("log", help=f"the JSON-lines file {ENV} named during the run")
    p.add_argument("--out", required=True, help="the parquet to write (one row per command)")
    p.set_defaults(func=_main)


def _main(args) -> int:
    from variant.util.atomic import write_parquet
    from variant.util.files import require_file
    df = table(require_file(args.log, f"the resource log ({ENV})"))
    write_parquet(df, args.out)
    by_stage = df.groupby("stage", sort=False).agg(jobs=("stage", "size"), wall_s=("wall_s", "sum"),
                                                    peak_gpu_mib=("peak_gpu_mib", "max"),
                                                    peak_host_mib=("peak_host_mib", "max"),
                                                    gib_written=("bytes_written", lambda b: b.sum() / 2**30))
    print(by_stage.round(1).to_string())
    return 0
