"""The fetch stage: verified downloads through huggingface_hub and pooch against a local
HTTP server (never the internet), offline and by-hand files, the tiny pre-training,
make-data and the CLI's error lines."""
import hashlib
import json
import os
import socket
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import torch
from huggingface_hub import constants as hf_constants

from conftest import cli_main, small_vae, small_var
from variant import dag
from variant.stages import fetch
from variant.models.checkpoint import build_vae, build_var, load_models, read_state_dict, save_state_dict
from variant.util.hashing import sha256_file
from variant.config import load_params

REPO = Path(__file__).resolve().parents[2]
PARAMS = REPO / "params.yaml"
HUB_REPO, REVISION = "FoundationVision/var", "0123456789abcdef0123456789abcdef01234567"
FAST = dict(progress=False, timeout=5.0)


pytestmark = pytest.mark.usefixtures("one_thread")


class Server:
    """A stand-in for the Hub and the ADM bucket: `files` maps a name to bytes, served at
    /REPO/resolve/REVISION/NAME (with the headers hf_hub_download reads) and at /NAME;
    `requests` records (method, path) of each request."""

    def __init__(self):
        self.files, self.requests = {}, []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def _headers(self):
                outer.requests.append((self.command, self.path))
                hub = f"/{HUB_REPO}/resolve/{REVISION}/"
                name = self.path.removeprefix(hub).lstrip("/")
                if name not in outer.files:
                    self.send_response(404)
                    self.send_header("X-Error-Code", "EntryNotFound")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return None
                body = outer.files[name]
                self.send_response(200)
                if self.path.startswith(hub):
                    self.send_header("ETag", f'"{hashlib.sha256(body).hexdigest()}"')
                    self.send_header("X-Repo-Commit", REVISION)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                return body

            def do_HEAD(self):
                self._headers()

            def do_GET(self):
                body = self._headers()
                if body is not None:
                    self.wfile.write(body)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True).start()

    def downloads(self):
        return [p for m, p in self.requests if m == "GET" and p.endswith((".pth", ".npz"))]


def dead_url() -> str:
    """A local port with nothing listening: connections are refused at once."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}"


def point_hub_at(monkeypatch, url):
    """What HF_ENDPOINT=url does when huggingface_hub is imported."""
    monkeypatch.setattr(hf_constants, "ENDPOINT", url)
    monkeypatch.setattr(hf_constants, "HUGGINGFACE_CO_URL_TEMPLATE", url + "/{repo_id}/resolve/{revision}/{filename}")


@pytest.fixture
def hub(monkeypatch, tmp_path):
    """The local server as the Hub's endpoint (HF_ENDPOINT), online, an empty HF_HOME."""
    s = Server()
    point_hub_at(monkeypatch, s.url)
    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf_home"))
    yield s
    s.httpd.shutdown()
    s.httpd.server_close()


@pytest.fixture(scope="module")
def released(tmp_path_factory):
    """Small stand-ins for the released files: bytes of a VQVAE and a depth-6 VAR."""
    d = tmp_path_factory.mktemp("released")
    save_state_dict(small_vae(), d / "vae.pth")
    save_state_dict(small_var(depth=6), d / "var.pth")
    return {fetch.VAE_FILE: (d / "vae.pth").read_bytes(), "var_d6.pth": (d / "var.pth").read_bytes(),
            "ref.npz": b"reference batch " * 5000}


def paper_cfg(url, revision=REVISION):
    return {"profile": "paper", "model": {"patch_nums": [1, 2, 3, 4, 5], "var": {"depth": 6}},
            "fetch": {"repo_id": HUB_REPO, "revision": revision, "files": [fetch.VAE_FILE, "var_d6.pth"],
                      "reference_batch": "ref.npz", "reference_url": f"{url}/ref.npz"}}


def test_download_records_then_skips_then_detects_corruption(hub, released, tmp_path):
    hub.files.update(released)
    out = tmp_path / "pretrained"
    m = fetch.fetch_released(paper_cfg(hub.url), out, **FAST)
    assert sorted(hub.downloads()) == sorted([f"/{HUB_REPO}/resolve/{REVISION}/{fetch.VAE_FILE}",
                                              f"/{HUB_REPO}/resolve/{REVISION}/var_d6.pth", "/ref.npz"])
    for name, body in released.items():
        assert (out / name).read_bytes() == body
        assert m["files"][name]["sha256"] == hashlib.sha256(body).hexdigest()
        assert m["files"][name]["source"] == "download"
    assert m["files"]["var_d6.pth"]["url"].endswith(f"/{HUB_REPO}/resolve/{REVISION}/var_d6.pth")
    assert json.loads((out / "fetch.json").read_text())["files"] == m["files"]
    # vae.pth/var.pth: the released bytes under the contract's names, and they load
    assert sha256_file(out / "var.pth") == m["files"]["var_d6.pth"]["sha256"] == m["files"]["var.pth"]["sha256"]
    var, vae = load_models(out / "var.pth", out / "vae.pth")
    assert var.depth == 6 and vae.vocab_size == 32

    n = len(hub.requests)
    fetch.fetch_released(paper_cfg(hub.url), out, **FAST)   # second run: nothing downloaded
    assert len(hub.requests) == n

    data = bytearray((out / "var_d6.pth").read_bytes())
    data[100] ^= 0xFF
    (out / "var.pth").unlink()           # a hard link: write a new file, not through it
    (out / "var_d6.pth").unlink()
    (out / "var_d6.pth").write_bytes(bytes(data))
    with pytest.raises(fetch.ChecksumError, match=r"var_d6\.pth: sha256 .* does not match .* recorded in .*fetch\.json"):
        fetch.fetch_released(paper_cfg(hub.url), out, **FAST)
    assert len(hub.requests) == n


def assert_names_each_file(msg, cfg, out, names, reason):
    assert "\n" not in msg and msg.startswith(f"{len(names)} file")
    for name in names:   # each missing file: where it comes from, why not, where to put it
        url = (cfg["fetch"]["reference_url"] if name == "ref.npz"
               else f"/{HUB_REPO}/resolve/{cfg['fetch']['revision'] or 'main'}/{name}")
        assert f"{name} (from " in msg and url in msg and f"put it at {(out / name).resolve()}" in msg
    assert msg.count(reason) == len(names), msg


def test_offline_names_every_missing_file_at_once_and_takes_files_put_by_hand(hub, released, tmp_path,
                                                                              monkeypatch):
    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", True)
    out, cfg = tmp_path / "pretrained", paper_cfg(hub.url)
    t0 = time.perf_counter()
    with pytest.raises(fetch.DownloadError) as e:
        fetch.fetch_released(cfg, out, **FAST)
    assert time.perf_counter() - t0 < 2 and hub.requests == []
    assert_names_each_file(str(e.value), cfg, out, list(released), "offline: HF_HUB_OFFLINE is set")
    for name, body in released.items():   # put there by hand: verified and recorded offline
        (out / name).write_bytes(body)
    m = fetch.fetch_released(cfg, out, **FAST)
    assert m["files"]["var_d6.pth"]["sha256"] == hashlib.sha256(released["var_d6.pth"]).hexdigest()
    assert "by hand" in m["files"]["var_d6.pth"]["source"] and hub.requests == []


def test_an_unreachable_host_fails_at_once_for_every_file(hub, released, tmp_path, monkeypatch):
    dead = dead_url()
    point_hub_at(monkeypatch, dead)
    out, cfg = tmp_path / "pretrained", paper_cfg(dead)
    t0 = time.perf_counter()
    with pytest.raises(fetch.DownloadError) as e:
        fetch.fetch_released(cfg, out, **FAST)
    assert time.perf_counter() - t0 < 5, "no retries against a host that refuses connections"
    assert_names_each_file(str(e.value), cfg, out, list(released), "cannot reach 127.0.0.1:")


def test_an_unpinned_revision_is_not_downloaded(hub, released, tmp_path):
    hub.files.update(released)
    out, cfg = tmp_path / "pretrained", paper_cfg(hub.url, revision=None)
    with pytest.raises(fetch.DownloadError) as e:
        fetch.fetch_released(cfg, out, **FAST)
    hub_files = [fetch.VAE_FILE, "var_d6.pth"]
    assert_names_each_file(str(e.value), cfg, out, hub_files, "params fetch.revision is not pinned")
    assert hub.downloads() == ["/ref.npz"] and (out / "ref.npz").read_bytes() == released["ref.npz"]


def test_a_file_missing_on_the_hub_is_named_and_not_retried(hub, released, tmp_path):
    hub.files.update({k: v for k, v in released.items() if k != "var_d6.pth"})
    out, cfg = tmp_path / "pretrained", paper_cfg(hub.url)
    with pytest.raises(fetch.DownloadError) as e:
        fetch.fetch_released(cfg, out, **FAST)
    assert_names_each_file(str(e.value), cfg, out, ["var_d6.pth"], "EntryNotFound")
    assert [p for _, p in hub.requests].count(f"/{HUB_REPO}/resolve/{REVISION}/var_d6.pth") == 1
    assert (out / fetch.VAE_FILE).is_file() and (out / "ref.npz").is_file()


def test_expected_sha256_from_params_is_checked_on_first_download(hub, released, tmp_path):
    hub.files.update(released)
    cfg = paper_cfg(hub.url)
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


@pytest.mark.skipif(not torch.cuda.is_available(), reason="GPU kernels' determinism")
def test_gpu_pretraining_writes_the_same_weights_twice(tiny_cfg, tmp_path):
    """On a GPU the pre-training runs deterministic kernels: a rebuild of a lost base on the
    same GPU model writes the same files, so rows of several device sessions share it."""
    data = tmp_path / "data" / "train"
    fetch.make_data(tiny_cfg, "train", data)
    cfg = {**tiny_cfg, "device": "cuda"}
    runs = [fetch.pretrain_tiny(cfg, data, tmp_path / f"run{i}")["files"] for i in range(2)]
    assert {n: f["sha256"] for n, f in runs[0].items()} == {n: f["sha256"] for n, f in runs[1].items()}
    assert not torch.are_deterministic_algorithms_enabled()   # the settings do not leak out


def test_a_fetch_cut_after_its_vqvae_resumes_at_the_var_with_the_same_result(tiny_cfg, tmp_path, monkeypatch):
    """The VQVAE is kept beside the outputs until the VAR is done: a fetch stopped in the
    VAR (a device call's time limit) trains only the VAR when it runs again, and writes the
    weights an uninterrupted fetch writes; a changed VQVAE recipe does not reuse it."""
    from variant.tiny import pretrain
    data = tmp_path / "data" / "train"
    fetch.make_data(tiny_cfg, "train", data)
    whole = fetch.pretrain_tiny(tiny_cfg, data, tmp_path / "whole")
    out = tmp_path / "cut"
    real_var = pretrain.train_var

    def stop(*a, **k):
        raise KeyboardInterrupt("the time limit")
    monkeypatch.setattr(pretrain, "train_var", stop)
    with pytest.raises(KeyboardInterrupt):
        fetch.pretrain_tiny(tiny_cfg, data, out)
    assert (out / fetch.KEPT_VQVAE).is_file() and not (out / "var.pth").exists()
    monkeypatch.setattr(pretrain, "train_vqvae", lambda *a, **k: pytest.fail("the VQVAE was trained again"))
    monkeypatch.setattr(pretrain, "train_var", real_var)
    lines = []
    resumed = fetch.pretrain_tiny(tiny_cfg, data, out, log=lines.append)
    assert any("trained by an earlier fetch" in line for line in lines)
    assert {n: f["sha256"] for n, f in resumed["files"].items()} == {n: f["sha256"] for n, f in whole["files"].items()}
    timeless = lambda info: {k: v for k, v in info.items() if k != "seconds"}   # noqa: E731
    assert timeless(resumed["training"]["vae"]) == timeless(whole["training"]["vae"])
    assert not (out / fetch.KEPT_VQVAE).exists()
    assert pretrain.vqvae_key(tiny_cfg) != pretrain.vqvae_key(
        {**tiny_cfg, "fetch": {**tiny_cfg["fetch"], "vae": {**tiny_cfg["fetch"]["vae"], "steps": 31}}})


def test_a_fetch_cut_in_the_var_continues_from_its_last_saved_step(tiny_cfg, tmp_path, monkeypatch):
    """The VAR's training state is saved every tenth of its steps: a fetch cut in the middle
    of the VAR (a device call's time limit) continues from the last save and, on a CPU,
    writes the weights of an uninterrupted fetch; the state of another recipe is not used."""
    from variant.tiny import pretrain
    data = tmp_path / "data" / "train"
    fetch.make_data(tiny_cfg, "train", data)
    whole = fetch.pretrain_tiny(tiny_cfg, data, tmp_path / "whole")
    out, real_update, calls = tmp_path / "cut", pretrain._update, []
    vqvae_steps, var_steps = tiny_cfg["fetch"]["vae"]["steps"], tiny_cfg["fetch"]["var"]["steps"]

    def update(*a):   # VAR step 16 (0-based) is cut: steps 0-15 ran, the state of 15 was saved
        calls.append(1)
        if len(calls) == vqvae_steps + 17:
            raise KeyboardInterrupt("the time limit")
        real_update(*a)
    monkeypatch.setattr(pretrain, "_update", update)
    with pytest.raises(KeyboardInterrupt):
        fetch.pretrain_tiny(tiny_cfg, data, out)
    assert not (out / "var.pth").exists()
    saved = torch.load(out / fetch.KEPT_VAR, weights_only=True)
    assert saved["step"] == 15 == 5 * (var_steps // 10) and len(saved["losses"]) == 15
    monkeypatch.setattr(pretrain, "_update", real_update)
    lines = []
    resumed = fetch.pretrain_tiny(tiny_cfg, data, out, log=lines.append)
    assert any(f"resumed at step 15/{var_steps}" in line for line in lines)
    assert {n: f["sha256"] for n, f in resumed["files"].items()} == {n: f["sha256"] for n, f in whole["files"].items()}
    assert resumed["training"]["var"]["loss_final"] == whole["training"]["var"]["loss_final"]
    assert not (out / fetch.KEPT_VAR).exists() and not (out / fetch.KEPT_VQVAE).exists()
    vae = small_vae()
    other = {**tiny_cfg, "fetch": {**tiny_cfg["fetch"], "var": {**tiny_cfg["fetch"]["var"], "lr": 1e-3}}}
    assert pretrain.var_key(tiny_cfg, vae) != pretrain.var_key(other, vae)


def test_a_profile_sharing_a_base_trains_only_its_var_on_the_bases_vqvae(tiny_cfg, tmp_path, monkeypatch):
    """shares_base (the depth arm of Table 1): the base's vae.pth is used as it is, checked
    against the base's fetch.json, and recorded; only a VAR is written."""
    from variant.tiny import pretrain
    data = tmp_path / "data" / "train"
    fetch.make_data(tiny_cfg, "train", data)
    base = fetch.pretrain_tiny(tiny_cfg, data, tmp_path / "base")
    arm = {**tiny_cfg, "shares_base": "tiny",
           "model": {**tiny_cfg["model"], "var": {**tiny_cfg["model"]["var"], "depth": 3}}}
    monkeypatch.setattr(pretrain, "train_vqvae", lambda *a, **k: pytest.fail("the shared VQVAE was trained again"))
    shared = tmp_path / "base" / "vae.pth"
    m = fetch.pretrain_tiny(arm, data, tmp_path / "arm", shared_vae=shared)
    assert sorted(p.name for p in (tmp_path / "arm").iterdir()) == ["fetch.json", "var.pth"]
    assert m["shared"]["vae.pth"]["sha256"] == base["files"]["vae.pth"]["sha256"] == sha256_file(shared)
    assert m["training"]["vae"] == base["training"]["vae"] and m["training"]["var"]["steps"] == 30
    assert build_var(read_state_dict(tmp_path / "arm" / "var.pth")).depth == 3
    with pytest.raises(fetch.FetchError, match="no such VQVAE .*run the fetch of profile 'tiny' first"):
        fetch.pretrain_tiny(arm, data, tmp_path / "arm2", shared_vae=tmp_path / "none.pth")
    save_state_dict(small_vae(), shared)   # the base's VQVAE replaced by another
    with pytest.raises(fetch.ChecksumError, match="replaced after its fetch"):
        fetch.pretrain_tiny(arm, data, tmp_path / "arm3", shared_vae=shared)


def test_cli_fetch_refuses_a_vqvae_for_a_profile_that_trains_its_own(tmp_path):
    r = variant("fetch", "--profile", "tiny", "--vae", str(tmp_path / "vae.pth"), "--out-dir", str(tmp_path / "p"))
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert "profile 'tiny' pre-trains its own VQVAE" in r.stderr and not (tmp_path / "p").exists()


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
    """`variant ARGS` in this process: the error line and exit status."""
    return cli_main(*args, cwd=cwd)


def variant_process(*args, cwd=REPO, env=None):
    """`variant ARGS` in a process of its own, for what only its environment sets
    (huggingface_hub reads HF_HUB_OFFLINE and HF_HOME when it is imported)."""
    env = dict(os.environ, OMP_NUM_THREADS="1", **(env or {}))
    return subprocess.run([sys.executable, "-m", "variant.cli", *args], capture_output=True, text=True,
                          cwd=cwd, env=env)


def test_make_data_splits_are_disjoint_and_reruns_overwrite(tiny_cfg, tmp_path):
    from variant.util.images import load_images
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


def test_cli_paper_fetch_offline_fails_at_once_naming_each_file(tmp_path):
    t0 = time.perf_counter()
    r = variant_process("fetch", "--profile", "paper", "--out-dir", str(tmp_path / "p"), "--no-progress",
                        env={"HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf")})
    assert r.returncode == 2 and "Traceback" not in r.stderr and time.perf_counter() - t0 < 60
    line = r.stderr.strip().splitlines()[-1]
    cfg = load_params(PARAMS, "paper", {"data.root": "unused"})
    for name in cfg["fetch"]["files"] + [cfg["fetch"]["reference_batch"]]:
        assert f"{name} (from " in line and f"put it at {(tmp_path / 'p' / name).resolve()}" in line


def test_cli_fetch_names_a_missing_data_directory(tmp_path):
    r = variant("fetch", "--profile", "tiny", "--data", str(tmp_path / "none"), "--out-dir", str(tmp_path / "p"))
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert f"image directory not found: {tmp_path / 'none'}" in r.stderr


def _fetch_json(P: dict, files: dict, shared: dict | None = None):
    path = Path(dag.fetch_record(P))
    path.parent.mkdir(parents=True, exist_ok=True)
    doc = {"profile": P["profile"], "files": {n: {"sha256": s} for n, s in files.items()}}
    if shared:
        doc["shared"] = {n: {"sha256": s, "profile": dag.shares_base(P)} for n, s in shared.items()}
    path.write_text(json.dumps(doc))


def test_check_base_records_the_first_base_then_refuses_another(tmp_path, monkeypatch):
    """A rebuilt base (VQVAE, VAR, feature extractor) must be the one the committed rows were
    made on (results/P/fetch.json), and a depth arm's shared VQVAE and extractor the ones its
    base profile recorded."""
    monkeypatch.chdir(tmp_path)
    P = {"profile": "small_hard", "data": {"source": "synthetic"}}
    arm = {"profile": "small_hard_d24", "shares_base": "small_hard", "data": {"source": "synthetic"}}
    with pytest.raises(fetch.FetchError, match="no pre-trained base recorded"):
        fetch.check_base(P)
    _fetch_json(P, {"vae.pth": "a" * 64, "var.pth": "b" * 64})
    extractor = Path(dag.feature_extractor(P))
    with pytest.raises(fetch.FetchError, match=f"{extractor}: no feature extractor"):
        fetch.check_base(P)
    extractor.write_bytes(b"extractor weights")
    lines = []
    fetch.check_base(P, log=lines.append)
    record = json.loads(Path(dag.base_record(P)).read_text())
    assert "records this base" in lines[0] and record["files"]["var.pth"]["sha256"] == "b" * 64
    assert record["extractor"]["feature_extractor.pth"]["sha256"] == hashlib.sha256(b"extractor weights").hexdigest()
    fetch.check_base(P, log=lines.append)   # the same bytes again: rows go on
    extractor.write_bytes(b"an extractor trained elsewhere")
    with pytest.raises(fetch.ChecksumError, match=r"not the one the committed rows were made on \(results/small_hard/fetch\.json\)"):
        fetch.check_base(P)
    extractor.write_bytes(b"extractor weights")
    _fetch_json(P, {"vae.pth": "a" * 64, "var.pth": "c" * 64})   # a rebuild on another GPU model, say
    with pytest.raises(fetch.ChecksumError, match=r"not the one the committed rows were made on \(results/small_hard/fetch\.json\)"):
        fetch.check_base(P)
    _fetch_json(arm, {"var.pth": "d" * 64}, shared={"vae.pth": "e" * 64})   # not small_hard's recorded VQVAE
    with pytest.raises(fetch.ChecksumError, match=r"\(results/small_hard/fetch\.json\)"):
        fetch.check_base(arm)
    assert not Path(dag.base_record(arm)).exists()
    _fetch_json(arm, {"var.pth": "d" * 64}, shared={"vae.pth": "a" * 64})
    fetch.check_base(arm, log=lines.append)
    assert Path(dag.base_record(arm)).is_file()
    with pytest.raises(fetch.FetchError, match="check-base"):
        fetch.check_base({"profile": "paper", "data": {"source": "imagefolder"}})
