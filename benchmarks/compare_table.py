"""The comparison table: every experiment of a config, mean and per-target Pearson (CV and
held-out test), beside the generator's oracle.

    python benchmarks/compare_table.py configs/compare.yaml > benchmarks/results/compare.md
"""

from __future__ import annotations

import argparse

from taemi.config import load_config
from taemi.pipeline import open_data
from taemi.report import leaderboard, markdown_table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("config")
    args = parser.parse_args()
    cfg = load_config(args.config)
    table = leaderboard(cfg, open_data(cfg))
    table = table.sort_values("cv mean", ascending=False, na_position="last")
    print(markdown_table(table))


if __name__ == "__main__":
    main()
