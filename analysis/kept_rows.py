"""Result tables that grow across machines and sessions.

A sweep's checkpoints live only on the machine that trained them, while its small result files
are committed. When a later session adds runs on a new machine, the committed rows of runs that
are not on this machine must stay: ``merge_rows`` keeps them, lets rows of runs analysed again
replace theirs in place, and appends new runs at the end.
"""
from __future__ import annotations

from typing import Optional

import pandas as pd


def merge_rows(known: Optional[pd.DataFrame], fresh: pd.DataFrame, key: str = "run") -> pd.DataFrame:
    """``known`` with the rows whose ``key`` appears in ``fresh`` replaced by fresh ones, in
    ``known``'s order, followed by the fresh rows of new keys in their own order."""
    if known is None or known.empty:
        return fresh.reset_index(drop=True)
    position = {k: i for i, k in enumerate(known[key])}
    order = [position.get(k, len(known) + i) for i, k in enumerate(fresh[key])]
    kept = known[~known[key].isin(set(fresh[key]))]
    merged = pd.concat([kept.assign(_order=[position[k] for k in kept[key]]), fresh.assign(_order=order)],
                       ignore_index=True)
    return merged.sort_values("_order", kind="stable").drop(columns="_order").reset_index(drop=True)
