"""Atomic writes: a killed or failed write never leaves a half file, and its leftovers go."""
import os
import signal
import subprocess
import sys
import textwrap

import pandas as pd
import pytest

from variant.util.atomic import atomic_path, save_figure, temporaries, write_csv, write_text


def test_a_failed_write_keeps_the_old_file_and_no_temporary(tmp_path):
    target = tmp_path / "table.md"
    write_text(target, "old\n")
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("crash mid-write")
    assert target.read_text() == "old\n"
    assert temporaries(target) == []


@pytest.mark.fault
def test_a_killed_write_leaves_the_old_file_and_the_next_write_sweeps_its_temporary(tmp_path):
    target = tmp_path / "rows.csv"
    write_text(target, "old\n")
    script = textwrap.dedent(f"""
        import os, signal
        from variant.util.atomic import atomic_path
        with atomic_path({str(target)!r}) as tmp:
            tmp.write_text("half")
            os.kill(os.getpid(), signal.SIGKILL)
    """)
    r = subprocess.run([sys.executable, "-c", script])
    assert r.returncode == -signal.SIGKILL
    assert target.read_text() == "old\n"
    assert len(temporaries(target)) == 1                  # what the kill left
    write_csv(pd.DataFrame({"a": [1]}), target)
    assert target.read_text() == "a\n1\n" and temporaries(target) == []


def test_figures_and_tables_are_written_whole(tmp_path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots()
    ax.plot([0, 1], [1, 0])
    for name in ("f.pdf", "f.png"):
        save_figure(fig, tmp_path / name)
    plt.close(fig)
    assert (tmp_path / "f.pdf").read_bytes().startswith(b"%PDF")
    assert (tmp_path / "f.png").read_bytes().startswith(b"\x89PNG")
    assert sorted(os.listdir(tmp_path)) == ["f.pdf", "f.png"]


def test_link_or_copy_publishes_a_hard_link_replacing_dst_atomically(tmp_path):
    from variant.util.atomic import link_or_copy
    src, dst, other = tmp_path / "var_d4.pth", tmp_path / "var.pth", tmp_path / "old.pth"
    src.write_bytes(b"new weights")
    other.write_bytes(b"old weights")
    os.link(other, dst)                        # dst exists, and shares its inode with another file
    assert link_or_copy(src, dst) == "hard link"
    assert dst.stat().st_ino == src.stat().st_ino and dst.read_bytes() == b"new weights"
    assert other.read_bytes() == b"old weights"                   # replaced, not written through
    assert other.stat().st_nlink == 1 and src.stat().st_nlink == 2
    assert temporaries(dst) == [] and temporaries(src) == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["old.pth", "var.pth", "var_d4.pth"]


def test_link_or_copy_again_over_its_own_link_leaves_no_temporary(tmp_path):
    from variant.util.atomic import link_or_copy
    src, dst = tmp_path / "var_d4.pth", tmp_path / "var.pth"
    src.write_bytes(b"weights")
    assert link_or_copy(src, dst) == "hard link"
    assert link_or_copy(src, dst) == "hard link"           # a rerun of `variant fetch`
    assert dst.stat().st_ino == src.stat().st_ino
    assert temporaries(dst) == []
