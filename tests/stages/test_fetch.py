"""The fetch stage: resumable, verified downloads against a local HTTP server (never the
internet), the tiny pre-training, make-data and the CLI's error lines."""
import hashlib
import json
import os
import socket
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import torch

from conftest import small_vae, small_var
from variant.stages import fetch
from variant.models.checkpoint import build_vae, build_var, load_models, read_state_dict, save_state_dict, sha256_file
from variant.config import load_params

REPO = Path(__file__).resolve().parents[2]
PARAMS = REPO / "params.yaml"
FAST = dict(retries=2, backoff=0.01, timeout=5.0, progress=False)


pytestmark = pytest.mark.usefixtures("one_thread")


class Server:
    """http.server with Range support; `files` maps a path to bytes, `requests` records
    (path, Range header) of each GET, `cut` names files whose first response stops half-way."""

    def __init__(self):
        self.files, self.requests, self.cut = {}, [], set()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def do_GET(self):
                name = self.path.lstrip("/")
                rng = self.headers.get("Range")
                outer.requests.append((name, rng))
                if name not in outer.files:
                    self.send_error(404)
                    return
                body, start = outer.files[name], 0
                if rng:
                    start = int(rng.removeprefix("bytes=").split("-")[0])
                    if start >= len(body):
                        self.send_response(416)
                        self.send_header("Content-Range", f"bytes */{len(body)}")
                        self.send_header("Content-Length", "0")
                        self.end_headers()
                        return
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
                else:
                    self.send_response(200)
                self.send_header("Content-Length", str(len(body) - start))
                self.end_headers()
                if name in outer.cut:   # drop the connection half-way, once
                    outer.cut.discard(name)
                    self.wfile.write(body[start:start + (len(body) - start) // 2])
                    self.wfile.flush()
                    self.close_connection = True
                    return
                self.wfile.write(body[start:])

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True).start()

    def gets(self, name):
        return [r for n, r in self.requests if n == name]


@pytest.fixture
def server():
    s = Server()
    yield s
    s.httpd.shutdown()
    s.httpd.server_close()


def dead_url() -> str:
    """A local port with nothing listening: connections are refused at once."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}"


@pytest.fixture(scope="module")
def released(tmp_path_factory):
    """Small stand-ins for the released files: bytes of a VQVAE and a depth-6 VAR."""
    d = tmp_path_factory.mktemp("released")
    save_state_dict(small_vae(), d / "vae.pth")
    save_state_dict(small_var(depth=6), d / "var.pth")
    return {fetch.VAE_FILE: (d / "vae.pth").read_bytes(), "var_d6.pth": (d / "var.pth").read_bytes(),
            "ref.npz": b"reference batch " * 5000}


def paper_cfg(url):
    return {"profile": "paper", "model": {"patch_nums": [1, 2, 3, 4, 5], "var": {"depth": 6}},
            "fetch": {"base_url": url, "files": [fetch.VAE_FILE, "var_d6.pth"],
                      "reference_batch": "ref.npz", "reference_url": f"{url}/ref.npz"}}


def test_download_records_then_skips_then_detects_corruption(server, released, tmp_path):
    server.files.update(released)
    out = tmp_path / "pretrained"
    m = fetch.fetch_released(paper_cfg(server.url), out, **FAST)
    for name, body in released.items():
        assert (out / name).read_bytes() == body
        assert m["files"][name]["sha256"] == hashlib.sha256(body).hexdigest()
        assert m["files"][name]["source"] == "download"
    assert json.loads((out / "fetch.json").read_text())["files"] == m["files"]
    # vae.pth/var.pth: the released bytes under the contract's names, and they load
    assert sha256_file(out / "var.pth") == m["files"]["var_d6.pth"]["sha256"] == m["files"]["var.pth"]["sha256"]
    var, vae = load_models(out / "var.pth", out / "vae.pth")
    assert var.depth == 6 and vae.vocab_size == 32
    assert not list(out.glob("*.part")) and not list(out.glob(".*tmp"))

    n = len(server.requests)
    fetch.fetch_released(paper_cfg(server.url), out, **FAST)   # second run: nothing downloaded
    assert len(server.requests) == n

    data = bytearray((out / "var_d6.pth").read_bytes())
    data[100] ^= 0xFF
    (out / "var.pth").unlink()           # a hard link: write a new file, not through it
    (out / "var_d6.pth").unlink()
    (out / "var_d6.pth").write_bytes(bytes(data))
    with pytest.raises(fetch.ChecksumError, match=r"var_d6\.pth: sha256 .* does not match .* recorded in .*fetch\.json"):
        fetch.fetch_released(paper_cfg(server.url), out, **FAST)
    assert len(server.requests) == n


def test_truncated_part_resumes_with_range(server, released, tmp_path):
    body = released["ref.npz"]
    server.files["ref.npz"] = body
    dest = tmp_path / "ref.npz"
    (tmp_path / "ref.npz.part").write_bytes(body[:12345])
    fetch.download(f"{server.url}/ref.npz", dest, **FAST)
    assert dest.read_bytes() == body and not (tmp_path / "ref.npz.part").exists()
    assert server.gets("ref.npz") == ["bytes=12345-"]


def test_dropped_connection_is_retried_from_where_it_stopped(server, released, tmp_path):
    body = released["ref.npz"]
    server.files["ref.npz"] = body
    server.cut.add("ref.npz")
    fetch.download(f"{server.url}/ref.npz", tmp_path / "ref.npz", **FAST)
    assert (tmp_path / "ref.npz").read_bytes() == body
    assert server.gets("ref.npz") == [None, f"bytes={len(body) // 2}-"]


def test_unreachable_url_says_where_to_put_the_file_by_hand(released, tmp_path):
    out = tmp_path / "pretrained"
    cfg = paper_cfg(dead_url())
    with pytest.raises(fetch.DownloadError) as e:
        fetch.fetch_released(cfg, out, **FAST)
    msg = str(e.value)
    assert "\n" not in msg and "3 tries" in msg and msg.startswith("3 files could not be downloaded")
    for name in released:   # every missing file, with its URL and the path to put it at
        url = cfg["fetch"]["reference_url"] if name == "ref.npz" else f"{cfg['fetch']['base_url']}/{name}"
        assert f"cannot download {url} " in msg and f"put it at {(out / name).resolve()}," in msg
    # put there by hand: the next run verifies and records them without the network
    for name, body in released.items():
        (out / name).write_bytes(body)
    m = fetch.fetch_released(cfg, out, **FAST)
    assert m["files"]["var_d6.pth"]["sha256"] == hashlib.sha256(released["var_d6.pth"]).hexdigest()
    assert "by hand" in m["files"]["var_d6.pth"]["source"]


def test_http_404_is_not_retried(server, tmp_path):
    with pytest.raises(fetch.DownloadError, match=r"HTTP 404 .*1 try\).*put it at"):
        fetch.download(f"{server.url}/missing.pth", tmp_path / "missing.pth", **FAST)
    assert len(server.requests) == 1


def test_expected_sha256_from_params_is_checked_on_first_download(server, released, tmp_path):
    server.files.update(released)
    cfg = paper_cfg(server.url)
    cfg["fetch"]["sha256"] = {"ref.npz": "0" * 64}
    with pytest.raises(fetch.ChecksumError, match=r"ref\.npz: the download has sha256 .* params fetch\.sha256"):
        fetch.fetch_released(cfg, tmp_path, **FAST)
    assert (tmp_path / "ref.npz.corrupt").exists() and not (tmp_path / "ref.npz").exists()

# -----------------------------------------------------------------------------
# tiny pre-training


@pytest.fixture(scope="module")
def tiny_cfg():
    cfg = load_params(PARAMS, "tiny")
    cfg["data"].update(num_classes=3, image_size=8, train_per_class=4, eval_per_class=2)
    cfg["model"] = {"patch_nums": [1, 2, 3, 4],     # last scale 4 x downsample 2 = 8 px
                    "vae": {"vocab_size": 32, "z_channels": 8, "ch": 32, "ch_mult": [1, 2],
                            "num_res_blocks": 1, "share_quant_resi": 4},
                    "var": {"depth": 2, "width": 32, "num_heads": 2}}
    cfg["fetch"]["vae"] = {"steps": 30, "batch_size": 8, "lr": 3e-3}
    cfg["fetch"]["var"] = {"steps": 30, "batch_size": 8, "lr": 3e-3}
    return cfg


def test_tiny_pretraining_learns_and_writes_loadable_files(tiny_cfg, tmp_path):
    data = tmp_path / "data" / "train"
    fetch.make_data(tiny_cfg, "train", data)
    out = tmp_path / "pretrained"
    m = fetch.pretrain_tiny(tiny_cfg, data, out)
    vae_info, var_info = m["training"]["vae"], m["training"]["var"]
    assert vae_info["rec_loss_final"] < 0.8 * vae_info["rec_loss_first"]
    assert var_info["loss_final"] < var_info["loss_first"] - 0.3
    assert vae_info["codebook"]["used"] > 1
    for name in ("vae.pth", "var.pth"):
        assert m["files"][name]["sha256"] == sha256_file(out / name)
    assert json.loads((out / "fetch.json").read_text())["files"] == m["files"]
    var = build_var(read_state_dict(out / "var.pth"))
    vae = build_vae(read_state_dict(out / "vae.pth"), var.patch_nums)
    assert (var.depth, var.width, var.num_classes, var.patch_nums) == (2, 32, 3, (1, 2, 3, 4))
    assert (vae.vocab_size, vae.image_size) == (32, 8)
    # seeded: a rerun writes the same weights, over the old files
    m2 = fetch.pretrain_tiny(tiny_cfg, data, out)
    assert m2["files"]["var.pth"]["sha256"] == m["files"]["var.pth"]["sha256"]
    assert sorted(p.name for p in out.iterdir()) == ["fetch.json", "vae.pth", "var.pth"]


def test_quantize_train_matches_the_tokenizer():
    """The training forward quantises exactly as f_to_tokens does; gradients flow."""
    vae = small_vae()
    x = torch.rand(2, 3, 10, 10) * 2 - 1
    f = vae.quant_conv(vae.encoder(x))
    f_hat, vq = vae.quantize.quantize_train(f)
    expected = vae.quantize.tokens_to_fhat(vae.quantize.f_to_tokens(f))
    torch.testing.assert_close(f_hat, expected, rtol=0, atol=1e-5)
    rec, vq_loss = vae(x)
    (rec.square().mean() + vq_loss).backward()
    assert vae.encoder.conv_in.weight.grad.abs().sum() > 0
    assert vae.quantize.embedding.weight.grad.abs().sum() > 0

# -----------------------------------------------------------------------------
# make-data and the CLI


def variant(*args, cwd=REPO):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    return subprocess.run([sys.executable, "-m", "variant.cli", *args], capture_output=True, text=True,
                          cwd=cwd, env=env)


def test_make_data_splits_are_disjoint_and_reruns_overwrite(tiny_cfg, tmp_path):
    from variant.tiny.data import load_images
    train, ev = tmp_path / "train", tmp_path / "eval"
    a = fetch.make_data(tiny_cfg, "train", train)
    b = fetch.make_data(tiny_cfg, "eval", ev)
    assert a["count"] == 12 and b["count"] == 6 and a["seed"] != b["seed"]
    xa, _ = load_images(train)
    xb, _ = load_images(ev)
    assert not {bytes(x.numpy()) for x in xa} & {bytes(x.numpy()) for x in xb}
    again = fetch.make_data(tiny_cfg, "train", train)
    assert again == a and sorted(p.name for p in tmp_path.iterdir()) == ["eval", "train"]


def test_train_extractor_writes_weights_and_record(tiny_cfg, tmp_path):
    cfg = {**tiny_cfg, "fetch": {**tiny_cfg["fetch"], "feature_extractor": {"epochs": 1}}}
    fetch.make_data(cfg, "train", tmp_path / "train")
    out = tmp_path / "feature_extractor.pth"
    info = fetch.train_extractor(cfg, tmp_path / "train", out)   # 8 px images, resized to 32
    assert info["epochs"] == 1 and info["data_sha256"]
    assert json.loads(out.with_suffix(".json").read_text())["val_images"] == info["val_images"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["feature_extractor.json", "feature_extractor.pth", "train"]


def test_cli_refuses_paper_make_data_in_one_line(tmp_path):
    r = variant("make-data", "--profile", "paper", "--split", "train", "--out", str(tmp_path / "d"))
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert "data.source 'imagefolder'" in r.stderr and "data.root" in r.stderr
    assert not (tmp_path / "d").exists()


def test_cli_fetch_names_a_missing_data_directory(tmp_path):
    r = variant("fetch", "--profile", "tiny", "--data", str(tmp_path / "none"), "--out-dir", str(tmp_path / "p"))
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert f"image directory not found: {tmp_path / 'none'}" in r.stderr
