"""analysis/simnet_transfer.py: its table (mean ± std per method beside the paper's Table 3) and one real run."""
import os
import sys

import pandas as pd

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "analysis"))

import simnet_transfer  # noqa: E402


def test_table_means_and_paper_row():
    rows = [dict(method="SimFormer", split="split1", seed=s, run=f"SimFormer/split1/seed{s}", image_pairs=100,
                 base_f1_similar=v, base_f1_dissimilar=90.0, base_similar_share=10.0, base_pairs=1000,
                 novel_f1_similar=v - 20, novel_f1_dissimilar=70.0, novel_similar_share=40.0, novel_pairs=900)
            for s, v in ((1, 60.0), (2, 70.0))]
    text = simnet_transfer.table(pd.DataFrame(rows, columns=simnet_transfer.COLUMNS))
    line = next(ln for ln in text.splitlines() if ln.startswith("| SimFormer |"))
    # mean ± std (ddof 1) of 60, 70 = 65.0 ± 7.1; novel 45.0 ± 7.1
    assert line == "| SimFormer | 2 | 65.0 ± 7.1 | 90.0 ± 0.0 | 45.0 ± 7.1 | 70.0 ± 0.0 | 40.0 ± 0.0 |"
    paper = next(ln for ln in text.splitlines() if ln.startswith("| paper"))
    assert paper == "| paper, COCO-Stuff-10K split1 | | 89.3 | 86.7 | 75.6 | 80.4 | n/a |"
    assert "100 training image pairs" in text
