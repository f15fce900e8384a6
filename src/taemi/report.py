"""The CV report (`taemi report`): a leaderboard across experiments and ensembles.

    reports/<config name>/leaderboard.md     the table, the plots, where each number is from
                          leaderboard.json   the same table as data
                          per_target.png     per-target Pearson of every entry
                          oof_scatter.png    out-of-fold predictions of the best entry
                          robustness_<experiment>.png   copied from the experiment

On generated data the held-out test labels are known: the table shows the test score
beside the CV score, and the generator's oracle as the ceiling.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd

from taemi.artifacts import read_json, stable_hash, write_json, write_text
from taemi.config import Config
from taemi.data import ID_COLUMN, TARGETS, ChallengeData, labels_matrix
from taemi.experiment import stale_reason
from taemi.folds import read_folds
from taemi.identity import file_digest
from taemi.plan import run_config
from taemi.plots import grouped_bars, oof_scatter
from taemi.robustness import robustness_current
from taemi.stacking import leaderboard_entries, stack_stale_reason


def _row(name: str, kind: str, cv: dict | None, test: dict | None, folder: Path | None,
         test_single: float | None = None, selection: str = "") -> dict:
    row: dict = {"entry": name, "kind": kind, "folder": str(folder) if folder else "",
                 "selection": selection, "status": ""}
    for target in ("mean", *TARGETS):
        row[f"cv {target}"] = cv[target] if cv else np.nan
    row["test single"] = np.nan if test_single is None else test_single
    row["test mean"] = test["mean"] if test else np.nan
    return row


def leaderboard(cfg: Config, data: ChallengeData) -> pd.DataFrame:
    """One row per trained experiment and per stacking method, plus the oracle; `status`
    says which are stale (the config would retrain or restack them) and why."""
    rows = []
    folds = read_folds(cfg.folds.path) if cfg.folds.path.is_file() else None
    for name in cfg.experiments:
        path = cfg.paths.models / name / "cv.json"
        if path.is_file():
            cv = read_json(path)
            row = _row(name, f"experiment ({cv['model']})", cv["overall"],
                       cv.get("heldout_test"), path.parent,
                       cv.get("heldout_test_single"), cv.get("selection", "outer"))
            stale = stale_reason(cfg, name, data, folds) if folds is not None else "no folds"
            row["status"] = f"stale: {stale}" if stale else _tuned_note(cv)
            rows.append(row)
    if cfg.stack is not None and (cfg.paths.ensembles / cfg.stack.name / "cv.json").is_file():
        folder = cfg.paths.ensembles / cfg.stack.name
        stack = read_json(folder / "cv.json")
        stale = stack_stale_reason(cfg, data, folds) if folds is not None else "no folds"
        for method, entry in leaderboard_entries(stack):
            label = f"{method} ({stack['best_single']})" if method == "best single" else method
            row = _row(label, "ensemble", entry["cv"], entry.get("heldout_test"),
                       folder if method == stack["method"] else None)
            row["status"] = f"stale: {stale}" if stale else ""
            rows.append(row)
    synth = data.root / "synth.json"
    if synth.is_file():
        oracle = read_json(synth)["oracle"]
        rows.append(_row("oracle (sees the noise-free latent)", "ceiling", None,
                         oracle["test"], None))
    return pd.DataFrame(rows)


def _tuned_note(cv: dict) -> str:
    """What the status column says of a current experiment: the folds its tuning saw, and
    whether its test predictions are refit models'."""
    tuned, refit = cv.get("tuned"), cv.get("refit") or {}
    notes = [f"tuned on rows of folds {tuned['saw_rows_of_folds']}"] if tuned else []
    if refit.get("used"):
        notes.append(f"test mean: refit models ({refit['why']})")
    return "; ".join(notes)


def markdown_table(table: pd.DataFrame) -> str:
    """The leaderboard as a markdown table (empty cells where a score does not exist)."""
    columns = ["entry", "kind", "selection", "cv mean", "test single", "test mean",
               *[f"cv {t}" for t in TARGETS], "status"]
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for _, row in table.iterrows():
        cells = [f"{row[c]:.4f}" if isinstance(row[c], float) and not np.isnan(row[c])
                 else ("" if isinstance(row[c], float) else str(row[c])) for c in columns]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _grouping(cfg: Config) -> str:
    record = Path(cfg.folds.path).with_name("folds.json")
    if not record.is_file():
        return ""
    info = read_json(record)
    return f"; grouped by {info['chosen']}: {info['reason']}"


def write_report(cfg: Config, data: ChallengeData) -> Path:
    """Write the leaderboard (markdown + JSON) and its plots; return the markdown's path."""
    cfg = run_config(cfg, data, strict=False)
    out = cfg.paths.reports / cfg.name
    out.mkdir(parents=True, exist_ok=True)
    table = leaderboard(cfg, data)
    records = table.replace({np.nan: None}).to_dict("records")
    key = report_key(cfg, table, records)
    record, path = out / "report.json", out / "leaderboard.md"
    if path.is_file() and record.is_file() and read_json(record).get("key") == key:
        return path  # its table, plots and their inputs are what they were: not redrawn
    write_json(out / "leaderboard.json", records)
    parts = [f"# Leaderboard: {cfg.name}", "",
             f"Data: `{cfg.data.root}`; folds: `{cfg.folds.path}` ({cfg.folds.n_splits} folds, "
             f"{cfg.folds.scheme}{_grouping(cfg)}).", "",
             "Which rows each number comes from: **cv** is the mean Pearson of out-of-fold "
             "predictions, each made once by a fold model that never saw that fold, whose "
             "epoch was chosen on its own training rows (selection `inner`; `outer` marks "
             "the optimistic choice on the scored fold). It estimates **test single**, one "
             "fold model's score on the held-out test (mean over fold models). **test mean** "
             "is what is submitted, the mean of the fold models (or, where **status** says "
             "so, of models refit on every labelled row), on the held-out test (generated "
             "data only); averaging is worth the difference. No test label ever "
             "reaches a choice. A tuned experiment's **status** names the CV folds whose rows "
             "its tuning trials learnt from and were judged on: those folds' OOF scores saw "
             "that choice, so its CV there may be optimistic. **status** also marks entries "
             "the config would retrain or restack (stale), and why.", "",
             markdown_table(table), ""]
    scored = table[table["cv mean"].notna()]
    if not scored.empty:
        bars = scored.set_index("entry")[[f"cv {t}" for t in ("mean", *TARGETS)]]
        bars.columns = ["mean", *TARGETS]
        oracle = table.loc[table["kind"] == "ceiling", "test mean"]
        grouped_bars(bars, out / "per_target.png", "Out-of-fold Pearson per target",
                     reference=float(oracle.iloc[0]) if len(oracle) else None)
        parts += ["![per-target Pearson](per_target.png)", ""]
        with_folder = scored[scored["folder"] != ""]
        if not with_folder.empty:
            best = with_folder.loc[with_folder["cv mean"].idxmax()]
            oof = pd.read_csv(Path(best["folder"]) / "oof.csv", dtype={ID_COLUMN: str})
            y = labels_matrix(data.labels, oof[ID_COLUMN])
            oof_scatter(y, oof[list(TARGETS)].to_numpy(), out / "oof_scatter.png",
                        f"{best['entry']}: out-of-fold predictions")
            parts += [f"Out-of-fold predictions of the best entry ({best['entry']}):", "",
                      "![OOF scatter](oof_scatter.png)", ""]
    for name in cfg.experiments:  # a table older than the models it measured is left out
        plot = cfg.paths.models / name / "robustness.png"
        if plot.is_file() and robustness_current(plot.parent):
            shutil.copyfile(plot, out / f"robustness_{name}.png")
            parts += [f"Missing-modality robustness of {name}:", "",
                      f"![robustness {name}](robustness_{name}.png)", ""]
    write_text(path, "\n".join(parts))
    write_json(record, {"key": key})
    return path


REPORT_VERSION = 1  # the report's text and plots: a change redraws every report


def report_key(cfg: Config, table: pd.DataFrame, records: list[dict]) -> str:
    """What a report is drawn from: its table, the predictions its scatter plots, the
    robustness plots it copies, the folds' record, and the report's version."""
    inputs = {"table": records, "v": REPORT_VERSION}
    scored = table[(table["cv mean"].notna()) & (table["folder"] != "")]
    if not scored.empty:
        oof = Path(scored.loc[scored["cv mean"].idxmax(), "folder"]) / "oof.csv"
        inputs["oof"] = file_digest(oof) if oof.is_file() else None
    inputs["robustness"] = {name: file_digest(plot) for name in cfg.experiments
                            if (plot := cfg.paths.models / name / "robustness.png").is_file()
                            and robustness_current(plot.parent)}
    folds_record = Path(cfg.folds.path).with_name("folds.json")
    inputs["folds"] = file_digest(folds_record) if folds_record.is_file() else None
    inputs["where"] = [str(cfg.data.root), str(cfg.folds.path)]  # named in its text
    return stable_hash(inputs)
