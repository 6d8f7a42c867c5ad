"""Check the VARiant paper against itself and against the analytic cost model.

`check_paper()` recomputes every derived number of the paper (speedups, memory and KV
reductions, FID differences, schedule lengths) from the numbers it is derived from, compares
every quantity printed in two places, and compares each KV cache with
`variant.costmodel.kv_cache_mib`. One row per check:

- claimed: the printed number (claim_id); recomputed: what the other place(s) give.
- rel_error and tolerance are relative to the claimed value, ok = rel_error <= tolerance.
  The tolerance follows the printed precision of the claim; the note states it in the claim's
  unit (e.g. a speedup printed to 0.1x: +-0.05x). Integer MB and percent values get +-1,
  because the paper truncates as often as it rounds (5495.6 MiB -> 5495, 80.8% -> 80%).
- Bounds ("FID > 130", "less than 4"): only the amount by which the bound is violated counts.
- places: both places in the paper, with the printed text.

The paper's "MB" is read as MiB (its VAR-d30 KV cache, 28687 MB, is the cost model's 28687.5
MiB) and its "GB" as 1000 MB (28687 MB is printed as 28.7GB).
"""
from __future__ import annotations

import functools

import pandas as pd

from variant.costmodel import MiB, PAPER_PATCH_NUMS, VARShape, kv_cache_mib, parameter_count
from variant.models.supernet import subnet_layers
from variant.report.paper.numbers import load_paper_numbers, validate_numbers

VARIANTS = {"VARiant-d16": 16, "VARiant-d8": 8, "VARiant-d4": 4, "VARiant-d2": 2}
TABLE3_ROWS = ("VAR-d30", "VARiant-d16", "VARiant-d8", "VARiant-d2")
BATCHES = (64, 128, 256)
D30 = VARShape.from_depth(30)
COLUMNS = ["check", "claim_id", "claimed", "recomputed", "rel_error", "tolerance", "ok", "places", "note"]


class _Checks:
    """Looks numbers up by id and collects check rows that cite both places."""

    def __init__(self, numbers: pd.DataFrame):
        self.frame = validate_numbers(numbers).set_index("id")
        self.rows: list[dict] = []

    def __getitem__(self, id: str) -> float:
        return float(self.frame.at[id, "value"])

    def is_oom(self, id: str) -> bool:
        return self.frame.at[id, "unit"] == "OOM"

    def cite(self, ref: str) -> str:
        if ref not in self.frame.index:  # a recomputation outside the paper
            return ref
        return f"{self.frame.at[ref, 'where']}: '{self.frame.at[ref, 'quote']}'"

    def add(self, check, claim_id, recomputed, sources, tol, note="", claim_is="equal"):
        """claim_is: "equal", or "upper_bound"/"lower_bound" when the claim bounds the recomputed value."""
        claimed = self[claim_id]
        violation = {"equal": abs(claimed - recomputed),
                     "upper_bound": max(0.0, recomputed - claimed),
                     "lower_bound": max(0.0, claimed - recomputed)}[claim_is]
        unit = self.frame.at[claim_id, "unit"]
        how = f"+-{tol:g} {unit}"
        if claim_is != "equal":
            how = f"claim is a {claim_is.replace('_', ' ')}, {how}"
        self.rows.append(dict(
            check=check, claim_id=claim_id, claimed=claimed, recomputed=float(recomputed),
            rel_error=violation / abs(claimed), tolerance=tol / abs(claimed),
            ok=bool(violation <= tol + 1e-9 * abs(claimed)),  # float noise only
            places=f"{self.cite(claim_id)} VS " + "; ".join(self.cite(s) for s in dict.fromkeys(sources)),
            note=f"{how}; {note}" if note else how))

    def same(self, check, claim_id, source, tol, note="", scale=1.0):
        """The same quantity printed in two places (`scale` converts the source's unit)."""
        self.add(check, claim_id, scale * self[source], [source], tol, note)


def _kv_model(d: int | None = None, bridge: int | None = None, batch: int = 64) -> tuple[float, str]:
    value = kv_cache_mib(D30, d, None if d is None else bridge, batch)
    what = "plain VAR-d30" if d is None else f"VAR-d30 with d={d}, N={bridge}"
    return value, f"cost model kv_cache_mib({what}, batch {batch}) = {value:.1f} MiB"


def _speedups(c: _Checks):
    base = "table2/VAR-d30/latency_s"

    def speedup(row):
        return c[base] / c[f"table2/{row}/latency_s"]

    for row in ("VAR-d30", "VAR-CoDe", *VARIANTS):
        c.add("speedup = VAR-d30 latency / latency (Table 2)", f"table2/{row}/speedup_x", speedup(row),
              [base, f"table2/{row}/latency_s"], 0.05)
    for claim in ("abstract/VARiant-d2/speedup_x", "text/intro/VARiant-d16/speedup_x",
                  "text/intro/VARiant-d8/speedup_x", "text/intro/VARiant-d2/speedup_x",
                  "text/sec4.2-tradeoffs/VARiant-d2/speedup_x"):
        row = claim.split("/")[-2]
        c.add("speedup in the text vs Table 2 latencies", claim, speedup(row),
              [base, f"table2/{row}/latency_s"], 0.05)
    c.add("speedup of d16,N=7 <= speedup of d16,N=6 (Table 2)", "text/sec6.3/recommended/speedup_x",
          speedup("VARiant-d16"), [base, "table2/VARiant-d16/latency_s"], 0.05,
          "N=7 runs one more scale at full depth than Table 2's d16 (N=6); the paper gives no N=7 "
          "latency, so only this bound can be checked", claim_is="lower_bound")


def _reduction(part: float, whole: float) -> float:
    return 100 * (1 - part / whole)


def _memory_reductions(c: _Checks):
    bridge = int(c["table6/bridge-zone/value"])
    t2 = {row: c[f"table2/{row}/kv_mb"] for row in ("VAR-d30", *VARIANTS)}
    model = {row: _kv_model(d, bridge)[0] for row, d in VARIANTS.items()}
    model_d30 = _kv_model()[0]
    for claim, row in [("abstract/VARiant-d16-d8/mem_reduction_min_pct", "VARiant-d16"),
                       ("abstract/VARiant-d16-d8/mem_reduction_max_pct", "VARiant-d8"),
                       ("abstract/VARiant-d2/mem_reduction_pct", "VARiant-d2"),
                       ("text/intro/VARiant-d16/mem_reduction_pct", "VARiant-d16"),
                       ("text/intro/VARiant-d8/mem_reduction_pct", "VARiant-d8"),
                       ("text/intro/VARiant-d2/mem_reduction_pct", "VARiant-d2"),
                       ("text/sec4.2-tradeoffs/VARiant-d16-d8/mem_reduction_min_pct", "VARiant-d16"),
                       ("text/sec4.2-tradeoffs/VARiant-d16-d8/mem_reduction_max_pct", "VARiant-d8"),
                       ("text/sec4.2-tradeoffs/VARiant-d2/mem_reduction_pct", "VARiant-d2")]:
        mem = _reduction(c[f"table2/{row}/mem_mb"], c["table2/VAR-d30/mem_mb"])
        c.add("memory reduction = 1 - KV / VAR-d30 KV (Table 2)", claim, _reduction(t2[row], t2["VAR-d30"]),
              ["table2/VAR-d30/kv_mb", f"table2/{row}/kv_mb"], 1.0,
              f"{row}; Table 2's Mem column gives {mem:.1f}%, the cost-model KV cache "
              f"{_reduction(model[row], model_d30):.1f}%")
    for row in ("VARiant-d16", "VARiant-d8", "VARiant-d2"):
        claim = f"text/sec4.3/{row}/kv_reduction_pct"
        c.add("KV reduction at batch 64 vs Table 3", claim,
              _reduction(c[f"table3/bs64/{row}/kv_mb"], c["table3/bs64/VAR-d30/kv_mb"]),
              ["table3/bs64/VAR-d30/kv_mb", f"table3/bs64/{row}/kv_mb"], 0.05)
        c.add("KV reduction at batch 64 vs cost model", claim, _reduction(model[row], model_d30),
              [_kv_model()[1], _kv_model(VARIANTS[row], bridge)[1]], 0.05)

    gb_from, gb_to = "text/sec6.3/recommended/memory_from_gb", "text/sec6.3/recommended/memory_to_gb"
    for claim in ("figure5/recommended/mem_reduction_pct", "text/sec4.5.3/recommended/mem_reduction_pct",
                  "text/sec6.3/recommended/mem_reduction_pct"):
        c.add("memory reduction of d16,N=7 = 1 - 18.4GB / 28.7GB", claim, _reduction(c[gb_to], c[gb_from]),
              [gb_from, gb_to], 1.0)
    n7, n7_text = _kv_model(16, 7)
    c.add("memory reduction of d16,N=7 vs cost model", "text/sec6.3/recommended/mem_reduction_pct",
          _reduction(n7, model_d30), [_kv_model()[1], n7_text], 1.0, "36% is a KV-cache reduction")
    increase = "text/sec4.5.2/N6-N7/memory_increase_pct"
    c.add("memory increase N 6->7 = 18.4GB / Table 2 d16 KV", increase,
          100 * (1000 * c[gb_to] / t2["VARiant-d16"] - 1), [gb_to, "table2/VARiant-d16/kv_mb"], 1.0)
    c.add("memory increase N 6->7 vs cost model", increase, 100 * (n7 / model["VARiant-d16"] - 1),
          [_kv_model(16, bridge)[1], n7_text], 1.0)

    share = "text/sec4.3/VAR-d30/kv_share_pct"
    for table, kv, total in [("Table 3", "table3/bs64/VAR-d30/kv_mb", "table3/bs64/VAR-d30/total_mb"),
                             ("Table 2", "table2/VAR-d30/kv_mb", "table2/VAR-d30/mem_mb")]:
        c.add(f"KV share of VAR-d30's total memory ({table})", share, 100 * c[kv] / c[total],
              [kv, total], 0.05)


def _memory_across_places(c: _Checks):
    for row in TABLE3_ROWS:
        c.same("KV cache, Table 2 vs Table 3 (batch 64)", f"table2/{row}/kv_mb",
               f"table3/bs64/{row}/kv_mb", 1.0)
        c.same("memory, Table 2 Mem vs Table 3 Total (batch 64)", f"table2/{row}/mem_mb",
               f"table3/bs64/{row}/total_mb", 1.0)
    for claim, source in [("text/sec4.2-vs-code/VAR-CoDe/memory_gb", "table2/VAR-CoDe/kv_mb"),
                          ("text/sec4.2-vs-code/VARiant-d4/memory_gb", "table2/VARiant-d4/kv_mb"),
                          ("text/sec4.2-vs-code/VARiant-d2/memory_gb", "table2/VARiant-d2/kv_mb"),
                          ("text/sec6.3/recommended/memory_from_gb", "table3/bs64/VAR-d30/kv_mb")]:
        c.same("GB in the text vs KV cache MB in the tables", claim, source, 0.05, "1 GB = 1000 MB",
               scale=1e-3)

    for bs in BATCHES[1:]:
        for row in TABLE3_ROWS:
            claim = f"table3/bs{bs}/{row}/kv_mb"
            if not c.is_oom(claim):
                k = bs // 64
                c.add(f"Table 3 KV at batch {bs} = {k} x batch 64", claim, k * c[f"table3/bs64/{row}/kv_mb"],
                      [f"table3/bs64/{row}/kv_mb"], float(k), f"{k} x an integer MB")
    for bs in BATCHES:
        for row in TABLE3_ROWS:
            kv, params, total = (f"table3/bs{bs}/{row}/{col}" for col in ("kv_mb", "params_mb", "total_mb"))
            if not c.is_oom(total):
                c.add("Table 3 Total >= KV Cache + Params", total, c[kv] + c[params], [kv, params], 0.0,
                      f"the rest ({c[total] - c[kv] - c[params]:.0f} MB) would be activations and workspace",
                      claim_is="upper_bound")
                if (bs, row) != (64, "VAR-d30"):
                    c.same("Table 3 Params is the same model in every row", params,
                           "table3/bs64/VAR-d30/params_mb", 0.0)

    def kv_ids(row):
        return [f"table3/bs{bs}/{row}/kv_mb" for bs in BATCHES]

    def batches(row, oom):
        return [bs for bs, i in zip(BATCHES, kv_ids(row)) if c.is_oom(i) == oom]

    c.add("first OOM batch vs Table 3", "text/sec4.3/VAR-d30/oom_batch", min(batches("VAR-d30", True)),
          kv_ids("VAR-d30"), 0.0)
    for row in ("VARiant-d8", "VARiant-d2"):
        c.add("largest batch that runs vs Table 3", f"text/sec4.3/{row}/max_batch", max(batches(row, False)),
              kv_ids(row), 0.0)


def _fids(c: _Checks):
    text = ["abstract/VAR-d30/fid", "abstract/VARiant-d16/fid", "abstract/VARiant-d8/fid",
            "abstract/VARiant-d2/fid", "text/intro/VARiant-d16/fid", "text/intro/VARiant-d8/fid",
            "text/intro/VARiant-d2/fid", "text/sec4.2-tradeoffs/VAR-d30/fid",
            "text/sec4.2-tradeoffs/VARiant-d16/fid", "text/sec4.2-tradeoffs/VARiant-d8/fid",
            "text/sec4.2-tradeoffs/VARiant-d2/fid", "text/sec4.2-vs-code/VAR-CoDe/fid",
            "text/sec4.2-vs-code/VARiant-d4/fid", "text/sec4.2-vs-code/VARiant-d8/fid"]
    to_table2 = {  # claim -> Table 2 row of the same model
        **{claim: claim.split("/")[-2] for claim in text},
        "table1/full-depth/fid": "VAR-d30", "table5/skip-r7-r10/subnet_fid": "VARiant-d16",
        **{f"table4/d{d}/joint_subnet_fid": row for row, d in VARIANTS.items()},
        **{f"table4/d{d}/tf_full_fid": "VAR-d30" for d in VARIANTS.values()},  # pretrained weights
        **{f"table8/d{d}/N6": row for row, d in VARIANTS.items()},  # Table 2 runs N=6
    }
    for claim, row in to_table2.items():
        c.same("FID vs Table 2", claim, f"table2/{row}/fid", 0.005)
    c.same("FID vs Table 2", "text/intro/baseline/fid", "table2/VAR-d30/fid", 0.005,
           "the intro compares d16 against 1.96, the supernet's full network (Tables 4, 5, 8), "
           "while its speedup and memory saving are against VAR-d30 (1.95)")
    c.same("IS vs Table 2", "table5/skip-r7-r10/subnet_is", "table2/VARiant-d16/is", 0.5)

    full = "table4/d16/joint_full_fid"  # the full network of the d16 supernet
    pairs = [("table4/d16/tf_subnet_fid", "table1/late-subnet/fid"),
             ("table5/skip-r7-r10/full_fid", full),
             *((f"table8/d30/N{n}", full) for n in range(6, 11)),
             ("text/sec6.3/d30/fid", "table8/d30/N6"),
             *((claim, "table8/d16/N7") for claim in ("text/sec6.3/d16-N7/fid", "text/sec6.3/recommended/fid",
                                                      "figure5/recommended/fid",
                                                      "text/sec4.5.3/recommended/fid")),
             ("text/sec3.2.1/full-depth/fid", "table1/full-depth/fid"),
             ("text/sec3.2.1/early-subnet/fid", "table1/early-subnet/fid"),
             ("text/sec3.2.1/late-subnet/fid", "table1/late-subnet/fid"),
             ("text/sec4.4.1/d16/tf_fid_from", "table4/d16/tf_full_fid"),
             ("text/sec4.4.1/d16/tf_fid_to", "table4/d16/tf_subnet_fid"),
             *((f"text/sec4.4.2/{row}/{col}", f"table5/{row}/{col}")
               for row in ("skip-r1-r10", "skip-r7-r10") for col in ("subnet_fid", "full_fid"))]
    for claim, source in pairs:
        c.same("same FID in two places", claim, source, 0.005)
    c.same("same FID in two places", "text/sec3.2.1/mid-subnet/fid", "table1/mid-subnet/fid", 0.05)

    def span(check, prefix, ids):
        values = [c[i] for i in ids]
        c.add(check, f"{prefix}_min", min(values), ids, 0.005)
        c.add(check, f"{prefix}_max", max(values), ids, 0.005)

    span("FID range in the text vs Table 4", "text/sec4.4.1/d2-d4/joint_subnet_fid",
         ["table4/d2/joint_subnet_fid", "table4/d4/joint_subnet_fid"])
    span("FID range in the text vs Table 4", "text/sec4.4.1/d8-d16/joint_subnet_fid",
         ["table4/d8/joint_subnet_fid", "table4/d16/joint_subnet_fid"])
    span("FID range in the text vs Table 4", "text/sec4.4.1/all/joint_full_fid",
         [f"table4/d{d}/joint_full_fid" for d in VARIANTS.values()])


def _fid_claims(c: _Checks):
    """Differences, ratios and bounds stated about FIDs."""
    full, early, late = "table1/full-depth/fid", "table1/early-subnet/fid", "table1/late-subnet/fid"
    c.add("FID increase = subnet FID - full FID (Table 1)", "text/sec3.2.1/early-subnet/fid_increase",
          c[early] - c[full], [early, full], 0.005)
    c.add("FID increase = subnet FID - full FID (Table 1)", "text/sec3.2.1/late-subnet/fid_increase",
          c[late] - c[full], [late, full], 0.005)
    c.add("early-scale FID increase of the 50% subnet (Table 1)",
          "text/intro/half-depth/early_fid_increase_lower_bound", c[early] - c[full], [early, full], 0.5,
          f"the nearest FID above 20 is Table 4's training-free d8 ({c['table4/d8/tf_subnet_fid']:g}), "
          "a 25% subnet on the late scales", claim_is="lower_bound")
    c.add("late-scale FID increase of the 50% subnet (Table 1)",
          "text/intro/late-scales/fid_diff_upper_bound", c[late] - c[full], [late, full], 0.5,
          claim_is="upper_bound")

    collapsed = ["table4/d2/tf_subnet_fid", "table4/d4/tf_subnet_fid"]
    for claim in ("text/sec4.4.1/d2-d4/tf_subnet_fid_lower_bound",
                  "text/sec4.4.1/d2-d4/recover_from_fid_lower_bound"):
        c.add("training-free FID of d2, d4 > 130 (Table 4)", claim, min(c[i] for i in collapsed), collapsed,
              0.5, "d4's 130 is not above 130; it passes only within the printed precision",
              claim_is="lower_bound")
    joint = ["table4/d2/joint_subnet_fid", "table4/d4/joint_subnet_fid"]
    gains = {d: c[f"table4/d{d}/tf_subnet_fid"] / c[f"table4/d{d}/joint_subnet_fid"] for d in (2, 4)}
    c.add("FID improvement of d2, d4 = training-free / joint (Table 4)",
          "text/sec4.4.1/d2-d4/improvement_lower_bound_x", min(gains.values()), collapsed + joint, 0.5,
          f"d2: {gains[2]:.1f}x, d4: {gains[4]:.1f}x", claim_is="lower_bound")

    for n in (6, 7, 8, 9):
        a, b = f"table8/d16/N{n}", f"table8/d16/N{n + 1}"
        c.add("FID improvement from N to N+1 at d16 (Table 8)",
              f"text/sec4.5.2/N{n}-N{n + 1}/fid_improvement", c[a] - c[b], [a, b], 0.005)
    rec, top = "table8/d16/N7", "table8/d30/N7"
    c.add("FID gap of d16,N=7 to the full network (Table 8)", "text/sec6.3/d16-N7/fid_delta_vs_full",
          c[rec] - c[top], [rec, top], 0.005)
    c.add("FID degradation of d16,N=7 in percent (Table 8)", "text/sec6.3/recommended/fid_degradation_pct",
          100 * (c[rec] / c[top] - 1), [rec, top], 0.5)

    fixed = ["figure2a/p=0.1/full_fid", "figure2a/p=1.0/full_fid"]
    c.add("late-training full FID <= 2.2 vs the fixed-ratio runs of Figure 2a",
          "figure2c/epoch25/full_fid_upper_bound", max(c[i] for i in fixed), fixed, 0.05,
          "assumes Figure 2a shows the end (epoch 25) of the runs of Figure 2c; the paper does not say",
          claim_is="upper_bound")
    for what, claim, progressive in [
            ("subnet", "figure2a/p=1.0/subnet_fid", "table4/d16/joint_subnet_fid"),
            ("full network", "figure2a/p=0.1/full_fid", "table4/d16/joint_full_fid")]:
        c.add(f"progressive d16 beats the best fixed-ratio {what} (Figure 2a vs Table 4)", claim,
              c[progressive], [progressive], 0.005,
              "assumes Figure 2 uses the d16 subnet, the paper's running example", claim_is="upper_bound")


def _architecture(c: _Checks):
    """Shares of layers and tokens quoted in the text, from D=30 and the scale sizes."""
    depth = int(c["algorithm1/setup/D"])
    for d in VARIANTS.values():
        c.add("depth share = d / D (Table 4 row label)", f"table4/d{d}/depth_share_pct", 100 * d / depth,
              ["algorithm1/setup/D"], 0.5, "the labels look nominal: d/32 gives 6.25/12.5/25/50")
    for claim in ("text/intro/half-depth/depth_share_pct", "text/sec3.2.1/shallow-subnet/depth_share_pct"):
        c.add("depth share of the d16 subnet = 16 / 30", claim, 100 * 16 / depth, ["algorithm1/setup/D"],
              0.5, "Sec. 3.2.1 itself derives 46.7% fewer FLOPs = 1 - 16/30")
    kept = len(subnet_layers(depth, 16))
    c.add("layer-wise FLOPs reduction = 1 - 16/30", "text/sec3.2.1/late-subnet/flops_reduction_pct",
          100 * (1 - kept / depth), ["variant.models.supernet.subnet_layers(30, 16)"], 0.05)
    c.add("full-only layers = D - shared layers", "text/sec3.3.2/full-only-layers/count",
          depth - c["text/sec3.3.2/shared-layers/count"],
          ["algorithm1/setup/D", "text/sec3.3.2/shared-layers/count"], 0.0)

    tokens = [p * p for p in PAPER_PATCH_NUMS]
    bridge = int(c["table6/bridge-zone/value"])
    scales = f"scales {PAPER_PATCH_NUMS} (VAR's patch_nums)"
    c.add("share of tokens in scales r7-r10", "text/sec3.2.1/late-subnet/latency_share_pct",
          100 * sum(tokens[bridge:]) / sum(tokens), [scales], 0.5,
          "the paper gives no per-scale latency; token share stands in for it")
    c.add("share of tokens in the bridge zone r1-r6", "figure2b/bridge-zone/token_share_pct",
          100 * sum(tokens[:bridge]) / sum(tokens), [scales, "table6/bridge-zone/value"], 5.0,
          f"'approx. 30%' read as +-5 points; {sum(tokens[:bridge])} of {sum(tokens)} tokens, "
          "consistent with the 87% of Sec. 3.2.1")


def _schedule(c: _Checks):
    rho1, rho2 = "text/sec3.3.2/phase1/subnet_share", "text/sec3.3.2/phase3/subnet_share"
    for claim, source, scale in [
            ("text/intro/phase1/subnet_prob_pct", rho1, 100),
            ("text/sec3.3.2/phase1/subnet_prob_pct", rho1, 100),
            ("text/sec6.2/phase1/subnet_prob_pct", rho1, 100), ("text/sec4.1/stage1/subnet_share", rho1, 1),
            ("algorithm1/phase1/subnet_prob", rho1, 1), ("text/sec3.3.2/eq5/p_start", rho1, 1),
            ("text/sec4.1/stage2/subnet_share_start", rho1, 1),
            ("text/sec4.1/stage2/subnet_share_end", rho2, 1), ("text/sec4.1/stage3/subnet_share", rho2, 1),
            ("text/sec6.2/phase2-end/subnet_prob_pct", rho2, 100),
            ("algorithm1/phase2/p_start", "text/sec3.3.2/eq5/p_start", 1),
            ("algorithm1/phase2/p_slope", "text/sec3.3.2/eq5/p_slope", 1)]:
        c.same("sampling schedule, same value in two places", claim, source, 0.0, scale=scale)
    start, slope = "text/sec3.3.2/eq5/p_start", "text/sec3.3.2/eq5/p_slope"
    c.add("Eq. 5 reaches rho_2 at E_2: 0.2 + 0.8", rho2, c[start] + c[slope], [start, slope], 1e-9)

    phases = ("phase1_epochs", "phase2_epochs", "phase3_epochs")
    totals = []
    for d in VARIANTS.values():
        ids = [f"table7/d{d}/{p}" for p in phases]
        c.add("Table 7 total = sum of phases", f"table7/d{d}/total_epochs", sum(c[i] for i in ids), ids, 0.0)
        for phase, stage in (("phase1", "stage1"), ("phase2", "stage2")):
            c.same("stage length, Table 7 vs Sec. 4.1", f"table7/d{d}/{phase}_epochs",
                   f"text/sec4.1/{stage}/epochs", 0.0)
        totals.append(f"table7/d{d}/total_epochs")
    p3 = [f"table7/d{d}/phase3_epochs" for d in VARIANTS.values()]
    for suffix, pick in (("min", min), ("max", max)):
        c.add("training length range vs Table 7", f"text/sec4.1/training/epochs_{suffix}",
              pick(c[t] for t in totals), totals, 0.0)
        c.add("stage 3 length range vs Table 7", f"text/sec4.1/stage3/epochs_{suffix}",
              pick(c[i] for i in p3), p3, 0.0)
    p = [f"table7/d16/{x}" for x in phases]
    for claim, upto in (("text/sec6.2/phase1-end/epoch", 1), ("text/sec6.2/phase2-end/epoch", 2),
                        ("text/sec6.2/phase3-end/epoch", 3)):
        c.add("phase end epoch of d16 vs Table 7", claim, sum(c[i] for i in p[:upto]), p[:upto], 0.0)

    c.add("batch = per-GPU batch x GPUs (Table 6)", "table6/batch-size/value",
          c["table6/batch-per-gpu/value"] * c["table6/batch-gpus/value"],
          ["table6/batch-per-gpu/value", "table6/batch-gpus/value"], 0.0)
    for claim, source in [("text/sec4.1/optimizer/batch_size", "table6/batch-size/value"),
                          ("text/sec4.1/optimizer/learning_rate", "table6/learning-rate/value"),
                          ("text/sec4.1/hardware/gpus", "table6/hardware-gpus/value"),
                          ("table6/batch-gpus/value", "table6/hardware-gpus/value"),
                          ("figure5/a/fixed_N", "table6/bridge-zone/value"),
                          ("figure5/recommended/D", "text/sec6.3/recommended/d"),
                          ("figure5/recommended/N", "text/sec6.3/recommended/N"),
                          ("text/sec4.5.3/recommended/D", "text/sec6.3/recommended/d"),
                          ("text/sec4.5.3/recommended/N", "text/sec6.3/recommended/N"),
                          ("text/sec4.2-paradigm/VAR/steps", "table2/VAR-d30/steps"),
                          ("text/sec4.2-paradigm/DiT-XL-2/steps", "table2/DiT-XL-2/steps"),
                          ("text/sec4.2-paradigm/AR/steps_max", "table2/LlamaGen-XXL/steps")]:
        c.same("same setting in two places", claim, source, 0.0)
    depths = c.frame[c.frame["table"] == "table4"]["row"].nunique()
    c.add("depth configurations = Table 4 subnets + full network", "text/sec4.1/depth-configs/count",
          depths + 1, ["Table 4 rows"], 0.0)


@functools.cache
def _fp32_state_mib() -> tuple[float, int]:
    """(MiB, VQVAE parameters) of VAR-d30 + VQVAE weights and buffers in fp32 (autocast keeps
    weights in fp32).

    The VAR part is analytic (building a 2B-parameter model here would take 8 GB); the 109M
    VQVAE is built. VAR's buffers: zero_k_bias (D x C fp32), the L x L fp32 block-causal mask
    and the L level ids (int64).
    """
    from variant.models.vqvae import VQVAE  # imports torch: only this check needs it

    vae = VQVAE()
    vae_bytes = sum(t.numel() * t.element_size() for t in (*vae.parameters(), *vae.buffers()))
    L, C = D30.tokens, D30.width
    var_bytes = 4 * (parameter_count(D30) + D30.depth * C + L * L) + 8 * L
    return (var_bytes + vae_bytes) / MiB, sum(p.numel() for p in vae.parameters())


def _cost_model(c: _Checks):
    bridge = int(c["table6/bridge-zone/value"])
    code = kv_cache_mib(VARShape.from_depth(16), None, None, 64)
    code_text = f"cost model kv_cache_mib(plain VAR-d16, batch 64) = {code:.1f} MiB"
    models = {"VAR-d30": _kv_model(), "VAR-CoDe": (code, code_text),
              **{row: _kv_model(d, bridge) for row, d in VARIANTS.items()}}
    notes = {"VAR-CoDe": "CoDe's peak KV is its refiner, a plain VAR-d16 over all scales"}
    for row, (value, text) in models.items():
        c.add("KV cache vs cost model (Table 2)", f"table2/{row}/kv_mb", value, [text], 1.0,
              notes.get(row, ""))
    for bs in BATCHES:
        for row in TABLE3_ROWS:
            claim = f"table3/bs{bs}/{row}/kv_mb"
            if not c.is_oom(claim):
                value, text = _kv_model(VARIANTS.get(row), bridge, bs)
                c.add("KV cache vs cost model (Table 3)", claim, value, [text], 1.0)
    for claim, (value, text) in [("text/sec4.2-vs-code/VAR-CoDe/memory_gb", (code, code_text)),
                                 ("text/sec4.2-vs-code/VARiant-d4/memory_gb", _kv_model(4, bridge)),
                                 ("text/sec4.2-vs-code/VARiant-d2/memory_gb", _kv_model(2, bridge)),
                                 ("text/sec6.3/recommended/memory_from_gb", _kv_model()),
                                 ("text/sec6.3/recommended/memory_to_gb", _kv_model(16, 7))]:
        c.add("KV cache GB in the text vs cost model", claim, value / 1000, [text], 0.05, "1 GB = 1000 MB")

    n30, n16 = parameter_count(D30), parameter_count(VARShape.from_depth(16))
    counted30 = f"cost model parameter_count(VAR-d30) = {n30:,}"
    counted16 = f"cost model parameter_count(VAR-d16) = {n16:,}"
    for claim, n, sources in [*((f"table2/{row}/params", n30, [counted30]) for row in ("VAR-d30", *VARIANTS)),
                              ("table2/VAR-CoDe/params", n30 + n16, [counted30, counted16]),
                              ("text/sec4.2-tradeoffs/VARiant/params", n30, [counted30]),
                              ("text/sec4.2-vs-code/VAR-CoDe/drafter_params", n30, [counted30]),
                              ("text/sec4.2-vs-code/VAR-CoDe/refiner_params", n16, [counted16])]:
        c.add("#Param vs cost model", claim, n, sources, 0.05e9)
    params = "table3/bs64/VAR-d30/params_mb"
    c.add("Params MB vs VAR-d30 weights in fp32", params, 4 * n30 / MiB, [counted30 + " x 4 bytes"], 1.0,
          f"the transformer alone leaves {c[params] - 4 * n30 / MiB:.0f} MiB unexplained; see the VQVAE row")
    state_mib, vae_params = _fp32_state_mib()
    c.add("Params MB vs VAR-d30 + VQVAE weights and buffers in fp32", params, state_mib,
          ["parameter_count(VAR-d30) + VAR buffers + variant.models.vqvae.VQVAE(), 4 bytes each"], 1.0,
          f"the VQVAE tokenizer ({vae_params / 1e6:.1f}M parameters, {4 * vae_params / MiB:.1f} MiB) "
          "closes the gap")


def check_paper(numbers: pd.DataFrame | None = None) -> pd.DataFrame:
    """One row per check of the paper against itself and the cost model (see the module doc).

    `numbers` defaults to the packaged numbers.csv; pass an edited copy to plant an error.
    """
    c = _Checks(load_paper_numbers() if numbers is None else numbers)
    for group in (_speedups, _memory_reductions, _memory_across_places, _fids, _fid_claims,
                  _architecture, _schedule, _cost_model):
        group(c)
    return pd.DataFrame(c.rows, columns=COLUMNS)
