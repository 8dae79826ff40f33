"""Fit battles with arena-rank (run in the oracle venv by tests/oracles.py; not our code path).

argv: a Parquet battles file and a JSON options object:
  {"model": "bt"}: BradleyTerry on PairDataset.from_pandas, sandwich intervals;
  {"model": "style"}: LMArena's style control as in arena-rank's LMArena example:
  relative differences (a - b) / (a + b) of tokens, headers, bold, lists from
  conv_metadata (dict counts summed, a total of 0 taken as 1), standardised,
  then ContextualPairDataset.from_pandas and ContextualBradleyTerry with their
  defaults, sandwich intervals.
Prints one JSON line: competitors, ratings, rating_lower, rating_upper (and coeffs).
"""

import json
import sys

import numpy as np
import pandas as pd

FEATURES = {
    "sum_assistant_tokens": ("sum_assistant_a_tokens", "sum_assistant_b_tokens"),
    "header_count": ("header_count_a", "header_count_b"),
    "bold_count": ("bold_count_a", "bold_count_b"),
    "list_count": ("list_count_a", "list_count_b"),
}


def count(value):
    return sum(value.values()) if isinstance(value, dict) else value


def style_frame(df):
    out = df[["model_a", "model_b", "winner"]].copy()
    for name, (key_a, key_b) in FEATURES.items():
        a = df["conv_metadata"].map(lambda m, k=key_a: count(m[k])).astype(float)
        b = df["conv_metadata"].map(lambda m, k=key_b: count(m[k])).astype(float)
        total = (a + b).replace(0, 1)
        raw = (a - b) / total
        out[name] = (raw - raw.mean()) / raw.std()
    return out


def main():
    df = pd.read_parquet(sys.argv[1])
    options = json.loads(sys.argv[2])
    if options["model"] == "bt":
        from arena_rank.models.bradley_terry import BradleyTerry
        from arena_rank.utils.data_utils import PairDataset

        ds = PairDataset.from_pandas(df)
        model = BradleyTerry(n_competitors=len(ds.competitors))
    else:
        from arena_rank.models.contextual_bradley_terry import ContextualBradleyTerry
        from arena_rank.utils.data_utils import ContextualPairDataset

        # pyarrow gives structs back as dicts with every key; drop keys a struct lacks
        df["conv_metadata"] = df["conv_metadata"].map(
            lambda m: {k: ({kk: vv for kk, vv in v.items() if vv is not None}
                           if isinstance(v, dict) else v) for k, v in m.items()})
        frame = style_frame(df)
        ds = ContextualPairDataset.from_pandas(frame, feature_cols=list(FEATURES))
        model = ContextualBradleyTerry(n_competitors=len(ds.competitors),
                                       n_features=len(FEATURES))
    res = model.compute_ratings_and_cis(ds, ci_method="sandwich")
    out = {k: np.asarray(res[k]).tolist() for k in ("ratings", "rating_lower", "rating_upper")}
    out["competitors"] = list(res["competitors"])
    if "coeffs" in res:
        out["coeffs"] = np.asarray(res["coeffs"]).tolist()
    print(json.dumps(out))


if __name__ == "__main__":
    main()
