"""Tokenise the training set once: the VQVAE is frozen, so its token maps never change.

`variant tokenize --profile P --vae VAE.pth --data DIR --out artifacts/P/tokens/train`
encodes every image, and its horizontal flip, into the K token maps of the multi-scale
quantiser, concatenated into one row of L = sum(pn^2) tokens. Training then builds VAR's
teacher-forcing input from the tokens with `quantize.teacher_forcing_input` (a few
embedding look-ups and interpolations) instead of running the VQVAE encoder every step.

Layout of the output directory:
  shard-00000.pt ...  {"tokens": (n, L) int16 (int32 if the vocabulary exceeds int16),
                       "labels": (n,) int64, "flipped": (n,) bool, "image": (n,) int64,
                       "view": (n,) int16, "meta": {...}}; one shard holds `shard_size`
                       images, ordered (image, view, flip), so sample id =
                       (image * views + view) * flips + flip.
  index.json          counts, patch_nums, L, dtype, vocab_size, classes, vae sha256,
                      flips, views, randaugment, image_size, and every shard's sha256.
Each shard is written atomically (temporary file, then rename); a re-run skips shards that
exist and match (same VAE, images, views), so an interrupted job resumes where it stopped.
index.json is written last, so its presence means the set is complete. Under torchrun
(one process per GPU) each process encodes every world-th missing shard and the first
writes the index: the same files as one process.

Images (read by variant.util.images): ImageFolder layout root/<class>/<image> (png, jpg,
jpeg, webp, bmp), classes numbered in sorted order (ImageNet's synset order, as VAR's
class labels); a class folder without images is an error. An image that
is not `image_size` square is resized (shorter side to round(1.125 * image_size), Lanczos)
and centre-cropped, VAR's evaluation transform; training-time random crops are not used,
since a crop frozen at tokenise time would be no augmentation at all.

Augmentation, honestly: augmentation acts on pixels, before tokenisation.
  - Horizontal flip is free: both versions are stored, and training picks one per image
    and epoch with p = 0.5 (see variant.stages.train).
  - RandAugment (Table 6: 2 ops, magnitude 9) would need re-tokenising every epoch. We
    implement it as `views`: with `--randaugment N M` every image is tokenised `--views V`
    times (default: the longest schedule's epoch count in params, 35 for the paper
    profile), each view with its own seeded RandAugment draw (and both flips); epoch e
    trains on view e mod V. This is exact per-epoch RandAugment when V >= epochs, at V
    times the tokenise cost and storage (paper: 1.28M x 2 x 35 x 680 x 2 B ~ 122 GB).
    Without RandAugment there is a single un-augmented view.
  - Mixup mixes VAR inputs and class conditions at train time (see variant.stages.train).

`variant bench tokenize` (variant.bench.tokenize) times a training step fed from tokens
against one that encodes its images every step; the measurements are in benchmarks/README.md.
The encoder is a small part of a step; the larger savings are what that timing leaves out:
no image decoding and resizing per step, no image loader, and free horizontal flips.
"""
from __future__ import annotations

import json
import math
import os
import sys
from pathlib import Path

import numpy as np
import torch

from variant.options import params_options
from variant.training.distributed import DistInfo, barrier, init_distributed
from variant.util.atomic import torch_save, write_text
from variant.util.files import unreadable
from variant.util.hashing import sha256_cached, sha256_file
from variant.util.images import list_image_folder, read_image_square, to_float

FORMAT = 1


# ---------------------------------------------------------------------------------------
# small helpers shared with variant.stages.train

def seed_of(*keys: int) -> int:
    """A 63-bit seed from integer keys (numpy SeedSequence: well mixed, platform-independent)."""
    return int(np.random.SeedSequence([int(k) for k in keys]).generate_state(2, np.uint64)[0] >> np.uint64(1))


def progress(iterable=None, **kw):
    """tqdm on a terminal, a silent pass-through otherwise."""
    from tqdm.auto import tqdm
    return tqdm(iterable, disable=not sys.stderr.isatty(), **kw)


def split_scales(tokens_BL: torch.Tensor, patch_nums) -> list[torch.Tensor]:
    """(B, L) concatenated token maps -> one (B, pn^2) tensor per scale."""
    return list(tokens_BL.long().split([p * p for p in patch_nums], dim=1))


# ---------------------------------------------------------------------------------------
# images

def load_pixels(path, image_size: int) -> torch.Tensor:
    """uint8 (3, S, S): as is if already S x S, else shorter side to 1.125 S and centre crop."""
    return torch.from_numpy(read_image_square(path, image_size)).permute(2, 0, 1).contiguous()


class _ImageViews(torch.utils.data.Dataset):
    """Image i -> (uint8 (V, 3, S, S) views, label, i). View v is RandAugment'ed with a draw
    seeded by (seed, v, i) when randaugment is set; otherwise the single view is the image."""

    def __init__(self, items, image_size, views, randaugment, seed):
        self.items, self.image_size, self.views = items, image_size, views
        self.randaugment, self.seed = randaugment, seed
        self._ra = None

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        path, label = self.items[i]
        img = load_pixels(path, self.image_size)
        if self.randaugment is None:
            return img.unsqueeze(0), label, i
        if self._ra is None:
            from torchvision.transforms import v2
            self._ra = v2.RandAugment(num_ops=self.randaugment[0], magnitude=self.randaugment[1])
        out = []
        for v in range(self.views):
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed_of(self.seed, v, i))
                out.append(self._ra(img))
        return torch.stack(out), label, i


# ---------------------------------------------------------------------------------------
# tokenising

def token_dtype(vocab_size: int) -> torch.dtype:
    return torch.int16 if vocab_size <= torch.iinfo(torch.int16).max + 1 else torch.int32


def _shard_meta(common: dict, lo: int, hi: int) -> dict:
    return dict(common, images=[lo, hi])


def _shard_intact(path: Path, sha256: str | None) -> bool:
    """The file index.json recorded: present, and (when recorded) of that sha256."""
    return path.is_file() and (sha256 is None or sha256_file(path) == sha256)


def _shard_ok(path: Path, meta: dict) -> bool:
    if not path.is_file():
        return False
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        return obj.get("meta") == meta
    except Exception:  # a torn or foreign file: recompute it
        return False


@torch.no_grad()
def encode_batch(vae, imgs_u8: torch.Tensor, flips: bool, device) -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 (B, V, 3, S, S) -> tokens (B, V, F, L) long, flipped (F,) bool."""
    B, V = imgs_u8.shape[:2]
    x = to_float(imgs_u8.to(device).flatten(0, 1))
    versions = [x, x.flip(-1)] if flips else [x]
    out = []
    for xv in versions:
        out.append(torch.cat(vae.img_to_tokens(xv), dim=1))
    tokens = torch.stack(out, dim=1)  # (B*V, F, L)
    return tokens.view(B, V, len(versions), -1).cpu(), torch.tensor([False, True][:len(versions)])


def tokenize(vae_path, data_dir, out_dir, patch_nums, image_size: int | None = None,
             flips: bool = True, views: int = 1, randaugment=None, shard_size: int = 2048,
             batch_size: int = 32, device: str = "cpu", workers: int = 0, seed: int = 0,
             log=print, info: DistInfo | None = None) -> dict:
    """Write the token shards and index.json of `data_dir` (see the module docstring).
    info: this process among torchrun's (default: the only one)."""
    from variant.models.checkpoint import build_vae, read_state_dict

    info = info or DistInfo(device=torch.device(device))

    out_dir = Path(out_dir)
    for name, value, least in (("--shard-size", shard_size, 1), ("--batch-size", batch_size, 1),
                               ("--views", views, 1), ("--workers", workers, 0)):
        if not isinstance(value, int) or value < least:
            raise ValueError(f"{name}: {value!r} is not an integer of at least {least} "
                             f"(e.g. {name} {max(least, 1) if name != '--shard-size' else 2048})")
    if randaugment is None and views != 1:
        raise ValueError(f"views={views} without RandAugment would store identical copies; use views=1")
    if randaugment is not None:
        randaugment = [int(randaugment[0]), int(randaugment[1])]
    vae_sha = sha256_cached(vae_path)
    vae = build_vae(read_state_dict(vae_path), patch_nums, str(vae_path))
    image_size = image_size or vae.image_size
    if image_size != vae.image_size:
        raise ValueError(f"image_size {image_size} does not fit the VQVAE: its last scale "
                         f"{vae.patch_nums[-1]} x downsample {vae.downsample} = {vae.image_size} px")
    items, classes = list_image_folder(data_dir)
    n_img, n_f = len(items), 2 if flips else 1
    L = sum(p * p for p in vae.patch_nums)
    dtype = token_dtype(vae.vocab_size)
    common = {"format": FORMAT, "vae_sha256": vae_sha, "patch_nums": list(vae.patch_nums),
              "image_size": image_size, "flips": flips, "views": views, "randaugment": randaugment,
              "seed": seed, "num_images": n_img}
    index = dict(common, count=n_img * views * n_f, L=L, dtype=str(dtype).replace("torch.", ""),
                 vocab_size=vae.vocab_size, num_classes=len(classes), classes=classes,
                 shard_size=shard_size, data=str(data_dir), shards=[])
    index_path = out_dir / "index.json"
    if (old := _up_to_date(index_path, common, index["count"], info, log)) is not None:
        return old

    device = info.device
    vae = vae.to(device).eval().requires_grad_(False)
    n_shards = math.ceil(n_img / shard_size)
    todo = []
    for s in range(n_shards):
        lo, hi = s * shard_size, min(n_img, (s + 1) * shard_size)
        if not _shard_ok(out_dir / f"shard-{s:05d}.pt", _shard_meta(common, lo, hi)):
            todo.append((s, lo, hi))
    done_images = n_img - sum(hi - lo for _, lo, hi in todo)
    if done_images and info.main:
        log(f"{out_dir}: {n_shards - len(todo)} of {n_shards} shards already done, skipped")
    todo = todo[info.rank::info.world]   # each shard is one process's: the same file as from one
    bar = progress(total=n_img, initial=done_images, unit="img", desc="tokenize") if info.main else None
    ds = _ImageViews(items, image_size, views, randaugment, seed)
    for s, lo, hi in todo:
        loader = torch.utils.data.DataLoader(torch.utils.data.Subset(ds, range(lo, hi)),
                                             batch_size=batch_size, num_workers=workers,
                                             pin_memory=str(device).startswith("cuda"))
        toks, labels, index_of = [], [], []
        for imgs, lab, idx in loader:
            t, flipped = encode_batch(vae, imgs, flips, device)
            toks.append(t.to(dtype))
            labels.append(lab)
            index_of.append(idx)
            if bar is not None:
                bar.update(len(lab))
        t = torch.cat(toks)                       # (n, V, F, L)
        n = t.shape[0]
        shard = {
            "tokens": t.reshape(-1, L).contiguous(),
            "labels": torch.cat(labels).long().repeat_interleave(views * n_f),
            "flipped": flipped.repeat(n * views),
            "image": torch.cat(index_of).long().repeat_interleave(views * n_f),
            "view": torch.arange(views, dtype=torch.int16).repeat_interleave(n_f).repeat(n),
            "meta": _shard_meta(common, lo, hi),
        }
        torch_save(shard, out_dir / f"shard-{s:05d}.pt")
    if bar is not None:
        bar.close()
    barrier(info)   # every shard is on disk
    if not info.main:
        barrier(info)   # while the first process writes the index
        return json.loads(index_path.read_text())
    for s in range(n_shards):
        lo, hi = s * shard_size, min(n_img, (s + 1) * shard_size)
        path = out_dir / f"shard-{s:05d}.pt"
        index["shards"].append({"file": path.name, "images": [lo, hi],
                                "count": (hi - lo) * views * n_f, "sha256": sha256_file(path)})
    write_text(index_path, json.dumps(index, indent=1) + "\n")
    log(f"{out_dir}: {index['count']} samples ({n_img} images x {views} view(s) x {n_f} flip(s)), "
        f"L={L}, {n_shards} shard(s)")
    barrier(info)
    return index


def _up_to_date(index_path: Path, common: dict, count: int, info: DistInfo, log) -> dict | None:
    """The existing index when it and every shard it lists are this set's; else None, with
    the index removed and the shards that are cut or changed too (recomputed then). The
    first process checks (the shards' sha256 reads the whole set once), the others wait."""
    if info.main and index_path.is_file():
        old, out_dir = json.loads(index_path.read_text()), index_path.parent
        bad = None
        if {k: old.get(k) for k in common} == common and old.get("count") == count:
            bad = [s["file"] for s in old["shards"] if not _shard_intact(out_dir / s["file"], s.get("sha256"))]
            for name in bad:
                log(f"{out_dir / name}: missing or not the shard index.json recorded; recomputing it")
                (out_dir / name).unlink(missing_ok=True)
        if bad == []:
            log(f"{out_dir}: up to date ({old['count']} samples)")
        else:
            index_path.unlink()   # stale: rebuilt
    barrier(info)
    return json.loads(index_path.read_text()) if index_path.is_file() else None


# ---------------------------------------------------------------------------------------
# reading

# shards verified in this process, by (path, size, mtime): a training run opens each shard
# once per TokenDataset, and hashing it again on every open would be wasted reads
_VERIFIED: set[tuple[str, int, int]] = set()


def _verify_once(path: Path, sha256: str | None, fix: str) -> None:
    """A cut or changed shard fails here, naming it, instead of deep in torch.load (OSError)
    or, worse, loading: mmap reads a torn zip until the first missing page."""
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    if sha256 is None or key in _VERIFIED:   # an index written before shards were hashed: nothing to check
        return
    got = sha256_file(path)
    if got != sha256:
        raise unreadable(path, "token shard", f"sha256 {got[:12]}... is not {sha256[:12]}... recorded in "
                         "index.json: cut or changed since `variant tokenize` wrote it", fix)
    _VERIFIED.add(key)


class TokenDataset:
    """The token shards of one `variant tokenize` output.

    Iterating streams the shards in order and yields (tokens (L,) int64, label, flipped).
    Training uses `gather(ids)`: random access by sample id, (image * views + view) *
    flips + flip, through memory-mapped shards (only the pages touched are read).
    """

    def __init__(self, root):
        self.root = Path(root)
        path = self.root / "index.json"
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no token index (run `variant tokenize`, or it did not finish)")
        self.index = json.loads(path.read_text())
        if self.index.get("format") != FORMAT:
            raise ValueError(f"{path}: token format {self.index.get('format')!r}, expected {FORMAT}")
        for k in ("num_images", "views", "flips", "L", "shard_size", "patch_nums", "num_classes"):
            setattr(self, k, self.index[k])
        self.n_flips = 2 if self.flips else 1
        self._shards: dict[int, dict] = {}

    def __len__(self):
        return self.index["count"]

    @property
    def samples_per_image(self) -> int:
        return self.views * self.n_flips

    def shard(self, s: int) -> dict:
        if s not in self._shards:
            info = self.index["shards"][s]
            path = self.root / info["file"]
            fix = f"rerun `variant tokenize --out {self.root}` with the same arguments: it recomputes the shard"
            if not path.is_file():
                raise FileNotFoundError(f"{path}: token shard missing ({fix})")
            _verify_once(path, info.get("sha256"), fix)
            try:
                shard = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
            except Exception as e:   # torch raises many types for a torn file
                raise unreadable(path, "token shard", f"{type(e).__name__}: {' '.join(str(e).split())[:200]}",
                                 fix) from e
            rows = info.get("count")
            if not (isinstance(shard, dict) and {"tokens", "labels"} <= set(shard)
                    and shard["tokens"].dim() == 2 and shard["tokens"].shape[1] == self.L
                    and rows in (None, shard["tokens"].shape[0])):
                raise unreadable(path, "token shard", f"not {rows or 'n'} rows of {self.L} tokens and labels", fix)
            self._shards[s] = shard
        return self._shards[s]

    def __iter__(self):
        for s in range(len(self.index["shards"])):
            sh = self.shard(s)
            for i in range(sh["tokens"].shape[0]):
                yield sh["tokens"][i].long(), int(sh["labels"][i]), bool(sh["flipped"][i])

    def sample_id(self, image, view, flip):
        return (image * self.views + view) * self.n_flips + flip

    def gather(self, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(tokens (B, L) int64, labels (B,) int64) of sample ids, in the order given."""
        ids = torch.as_tensor(ids, dtype=torch.long)
        per_shard = self.shard_size * self.samples_per_image
        shard_of, offset = ids // per_shard, ids % per_shard
        tokens = torch.empty(len(ids), self.L, dtype=torch.long)
        labels = torch.empty(len(ids), dtype=torch.long)
        for s in shard_of.unique().tolist():
            m = shard_of == s
            sh = self.shard(s)
            tokens[m] = sh["tokens"][offset[m]].long()
            labels[m] = sh["labels"][offset[m]]
        return tokens, labels


# ---------------------------------------------------------------------------------------
# command line

def add_parser(sub):
    p = sub.add_parser("tokenize", help="tokenise the training set once (token shards + index.json)")
    params_options(p)
    p.add_argument("--vae", required=True, help="VQVAE checkpoint (reference layout)")
    p.add_argument("--data", required=True, help="ImageFolder directory of training images")
    p.add_argument("--out", required=True, help="output directory, e.g. artifacts/P/tokens/train")
    p.add_argument("--batch-size", type=int, default=None, help="images per encoder batch (64 GPU, 32 CPU)")
    p.add_argument("--shard-size", type=int, default=2048, help="images per shard")
    p.add_argument("--workers", type=int, default=None, help="image-decoding processes")
    p.add_argument("--views", type=int, default=None,
                   help="RandAugment views per image (default: longest schedule's epochs; 1 without RandAugment)")
    p.add_argument("--randaugment", type=int, nargs=2, metavar=("N", "M"), default=None,
                   help="override params train.augment.randaugment")
    p.add_argument("--no-randaugment", action="store_true", help="ignore params' RandAugment")
    p.add_argument("--device", default=None, help="default: params `device`")
    p.set_defaults(func=_main)


def _main(args) -> int:
    from variant.config import load_params, phases_of
    from variant.util.devices import resolve_device
    cfg = load_params(args.params, args.profile)
    aug = cfg["train"]["augment"]
    ra = None if args.no_randaugment else (args.randaugment or aug.get("randaugment"))
    views = args.views
    if views is None:
        views = 1 if ra is None else max(
            sum(phases_of(cfg, int(d))) for d in cfg["train"]["phases"])
    device = str(resolve_device(args.device, cfg))
    info = init_distributed(device)
    tokenize(args.vae, args.data, args.out, cfg["model"]["patch_nums"],
             image_size=cfg["data"]["image_size"], flips=bool(aug.get("hflip", True)), views=views,
             randaugment=ra, shard_size=args.shard_size,
             batch_size=args.batch_size or (64 if device.startswith("cuda") else 32), device=device,
             workers=args.workers if args.workers is not None else min(8, (os.cpu_count() or 1) - 1),
             seed=cfg["data"].get("seed", 0), info=info,
             log=print if info.main else lambda *a: None)
    if info.owns_group:
        torch.distributed.destroy_process_group()
    return 0
