"""Is `mathforge ablate`'s seed-aware verdict honest? Null calibration and power on a planted effect.

    python bench/ablate_null.py --pairs 40 --out runs/bench/ablate_null

Each pair is one ablation of bench/ablate_null.yaml (a small train-only run) with only its base and
its null arm: the same config with other seeds. Pairs use disjoint seeds, so they are independent.
Under "no difference" the verdict must say "the configs differ" in about 5% of pairs: the bench
prints the count and a two-sided binomial test against 5% (the verdict is calibrated unless p < 1%).
Then, in every pair, 30% of the null arm's level-2 items are made wrong (a planted effect near the
smallest detectable difference) and the bench prints how often the verdict finds it, overall and on
level 2 (Holm-adjusted over levels), beside the smallest detectable difference the report states.
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import time
from pathlib import Path

import numpy as np
from scipy.stats import binomtest

from mathforge.ablate import load, replicate_rows, replicates, run_ablation, verdicts

TEMPLATE = Path(__file__).with_name("ablate_null.yaml")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pairs", type=int, default=40)
    ap.add_argument("--out", type=Path, default=Path("runs/bench/ablate_null"))
    ap.add_argument("--share", type=float, default=0.3, help="share of level-2 items planted wrong")
    args = ap.parse_args()
    base = load(TEMPLATE)
    bench = base.run["eval"]["benchmarks"][0]
    p_null, found_all, found_l2, mdd, diffs, planted_mdd = [], 0, 0, [], [], []
    start = time.monotonic()
    for k in range(args.pairs):
        seeds = [100 * k + i for i in range(len(base.data_seeds))]
        cfg = load(TEMPLATE, [f"data_seeds={seeds}", f"train_seeds=[{100 * k + 50}]"])
        out = args.out / f"pair{k:03d}"
        if not (out / "comparison.json").exists():  # a finished pair is analysed again, not rerun
            run_ablation(cfg, out, log=lambda *_: None)
        rows = replicate_rows(cfg, replicates(cfg, out))
        test = verdicts(rows, cfg)["benchmarks"][bench]
        p_null.append(test["all"]["null"]["p_value"])
        diffs.append(test["all"]["null"]["difference"])
        mdd.append(test["all"]["null"]["min_detectable"])
        planted_mdd.append(test["level 2"]["null"]["min_detectable"])
        planted = _plant(rows, bench, args.share, seed=k)
        ptest = verdicts(planted, cfg)["benchmarks"][bench]
        found_all += int(ptest["all"]["null"]["p_value"] < cfg.alpha)
        found_l2 += int(ptest["level 2"]["null"].get("p_holm", 1.0) < cfg.alpha)
        elapsed = time.monotonic() - start
        print(f"pair {k + 1}/{args.pairs}: null p {p_null[-1]:.3f}, difference {100 * diffs[-1]:+.1f} points; "
              f"{elapsed / 60:.1f} min, ETA {elapsed / (k + 1) * (args.pairs - k - 1) / 60:.1f} min", flush=True)
    hits = int(sum(p < 0.05 for p in p_null))
    binom = float(binomtest(hits, len(p_null), 0.05).pvalue)
    summary = {"pairs": len(p_null), "significant_at_5pct": hits, "share": hits / len(p_null),
               "binomial_p_vs_5pct": binom, "calibrated_at_1pct": bool(binom >= 0.01),
               "null_difference_sd_points": 100 * statistics.pstdev(diffs),
               "median_min_detectable_points": 100 * statistics.median(mdd),
               "planted": {"share_of_level2_items_wrong": args.share, "found_overall": found_all / len(p_null),
                           "median_level2_min_detectable_points": 100 * statistics.median(planted_mdd),
                           "found_level2_holm": found_l2 / len(p_null)},
               "minutes": round((time.monotonic() - start) / 60, 1)}
    (args.out / "calibration.json").write_text(json.dumps(summary, indent=1))
    print(json.dumps(summary, indent=1))


def _plant(rows: dict, bench: str, share: float, seed: int) -> dict:
    """The null arm's rows with `share` of the level-2 items answered wrong (the same items in every
    replicate: a config that breaks a kind of problem, not a noisier run)."""
    rng = np.random.default_rng(seed)
    out = copy.deepcopy(rows)
    items = out["null"][0]["items"][bench]
    level2 = [items["ids"][i] for i, lvl in enumerate(items["level"]) if str(lvl) == "2"]
    broken = set(rng.choice(level2, size=round(share * len(level2)), replace=False).tolist())
    for row in out["null"]:
        it = row["items"][bench]
        for g, col in it["correct"].items():
            it["correct"][g] = [0 if i in broken else c for i, c in zip(it["ids"], col, strict=True)]
    return out


if __name__ == "__main__":
    main()
