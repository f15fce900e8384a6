"""A CV that predicts the test: subject-independent generated data, participants inferred
and kept apart, folds chosen from the evidence, and no selection on scored rows."""

from __future__ import annotations

import hashlib
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import adjusted_rand_score

import taemi.training
from conftest import MODEL, TINY, tiny_config
from taemi.artifacts import read_json
from taemi.data import TARGETS, DataError
from taemi.folds import HOLDOUT, label_groups, make_folds, read_folds, selection_split
from taemi.participants import ensure_participants
from taemi.pipeline import ensure_cache, ensure_tuning, open_data, train_experiments
from taemi.splits import ensure_folds, inspect_data
from taemi.synth import generate


def _clips(root: Path) -> pd.DataFrame:
    return pd.read_csv(root / "heldout" / "clips.csv", dtype={"Filename": str})


@pytest.fixture(scope="module")
def disjoint_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("disjoint") / "data"
    generate(root, replace(TINY, seed_videos="disjoint"))
    return root


def test_generated_splits_are_subject_independent(tiny_root: Path, disjoint_root: Path) -> None:
    for root in (tiny_root, disjoint_root):
        clips = _clips(root)
        assert (clips.groupby("participant")["split"].nunique() == 1).all()
    shared = _clips(tiny_root).groupby("seed_video")["split"].nunique()
    assert (shared > 1).mean() > 0.3  # the default: test clips mimic labelled seed videos
    assert (_clips(disjoint_root).groupby("seed_video")["split"].nunique() == 1).all()


def test_force_replaces_only_generated_data(tmp_path: Path) -> None:
    copy = tmp_path / "abaw"
    (copy / "test_data").mkdir(parents=True)
    (copy / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="never replaced"):
        generate(copy, replace(TINY, scale=0.01), force=True)
    assert (copy / "notes.txt").read_text() == "mine"


def test_inferred_participants_match_the_true_ones(tiny_root: Path, tmp_path: Path) -> None:
    cfg = tiny_config(tiny_root, tmp_path)
    data = open_data(cfg)
    ensure_cache(cfg, data, report=False)
    found = ensure_participants(cfg, data)
    truth = _clips(tiny_root).set_index("Filename").loc[found.ids, "participant"]
    assert adjusted_rand_score(truth, found.labels) > 0.9
    assert found.identifiable and all(m.separation > 2 for m in found.modalities)
    again = ensure_participants(cfg, data)  # kept beside the folds, not recomputed
    assert (again.labels == found.labels).all()
    assert (tmp_path / "folds" / "participants.csv").is_file()


def test_true_participant_ids_from_a_file(tiny_root: Path, tmp_path: Path) -> None:
    ids_file = tmp_path / "people.csv"
    _clips(tiny_root).assign(participant=lambda c: "p" + c["participant"].astype(str))[
        ["Filename", "participant"]].to_csv(ids_file, index=False)
    cfg = tiny_config(tiny_root, tmp_path, folds={
        "path": str(tmp_path / "folds" / "folds.csv"), "n_splits": 3,
        "group_by": "participant", "participants": str(ids_file)})
    folds = ensure_folds(cfg).merge(_clips(tiny_root), on="Filename")
    assert (folds.groupby("participant")["fold"].nunique() == 1).all()
    pd.read_csv(ids_file, dtype=str).iloc[:-3].to_csv(ids_file, index=False)  # 3 ids lost
    with pytest.raises(DataError, match=r"people\.csv: no participant for ids"):
        ensure_folds(cfg)


def test_all_zero_label_vector_is_never_one_group() -> None:
    y = np.zeros((40, len(TARGETS)))
    y[:10, 0] = 0.5  # one recurring vector
    groups = label_groups(y)
    assert len(set(groups[:10])) == 1
    assert len(set(groups[10:])) == 30  # thirty unrelated all-zero clips, thirty groups


def test_auto_follows_the_evidence(tiny_root: Path, disjoint_root: Path,
                                   tmp_path: Path) -> None:
    chosen = {}
    for name, root in (("shared", tiny_root), ("disjoint", disjoint_root)):
        cfg = tiny_config(root, tmp_path / name)
        data = open_data(cfg)
        ensure_cache(cfg, data, report=False)
        evidence, chosen[name], reason = inspect_data(cfg, data)
        assert evidence.test_with_known_participant < 0.2  # the test's people are new
        assert evidence.participants_crossing_train_valid <= 1
        assert reason
    assert chosen["shared"] == "participant"
    assert chosen["disjoint"] == "both"
    cfg = tiny_config(tiny_root, tmp_path / "shared")
    folds = ensure_folds(cfg).merge(_clips(tiny_root), on="Filename")
    assert (folds.groupby("participant")["fold"].nunique() == 1).all()
    record = read_json(tmp_path / "shared" / "folds" / "folds.json")
    assert record["group_by"] == "auto" and record["chosen"] == "participant"
    assert record["evidence"]["clips_test"] == len(open_data(cfg).test_ids)


def test_a_folds_file_made_elsewhere_is_never_overwritten(tiny_root: Path,
                                                          tmp_path: Path) -> None:
    cfg = tiny_config(tiny_root, tmp_path)
    data = open_data(cfg)
    mine = make_folds(data.labels, 3, seed=99)[["Filename", "fold"]]
    cfg.folds.path.parent.mkdir(parents=True)
    mine.to_csv(cfg.folds.path, index=False)
    with pytest.raises(DataError, match="not written by taemi"):
        ensure_folds(cfg, data)
    given = tiny_config(tiny_root, tmp_path, folds={"path": str(cfg.folds.path),
                                                    "given": True})
    assert ensure_folds(given, data)["fold"].tolist() == mine["fold"].tolist()
    cfg.folds.path.unlink()
    made = ensure_folds(cfg, data)  # the kit's own file is remade when the config changes
    other = tiny_config(tiny_root, tmp_path, folds={"path": str(cfg.folds.path),
                                                    "n_splits": 3, "group_by": "none"})
    assert not ensure_folds(other, data)["fold"].equals(made["fold"])


def test_selection_split_keeps_groups_whole_and_off_the_fold() -> None:
    rng = np.random.default_rng(0)
    folds = pd.DataFrame({"Filename": [f"{i:05d}" for i in range(600)],
                          "fold": rng.integers(0, 4, 600), "group": rng.integers(0, 80, 600)})
    folds.loc[:49, "fold"] = HOLDOUT
    fit, select = selection_split(folds, 2, fraction=0.2)
    scored = set(folds.loc[folds["fold"] == 2, "Filename"])
    assert not scored & (set(fit) | set(select)) and not set(fit) & set(select)
    assert len(select) == pytest.approx(0.2 * (len(fit) + len(select)), rel=0.3)
    chosen = folds.set_index("Filename").loc[select, "group"].unique()
    rest = folds[folds["Filename"].isin(fit)]
    assert not rest["group"].isin(chosen).any()
    fit2, select2 = selection_split(folds.drop(columns="group"), 3)  # a folds file by hand
    assert set(select2) == set(folds.loc[folds["fold"] == 0, "Filename"])
    assert not set(folds.loc[folds["fold"] == 3, "Filename"]) & set(fit2)


class SelectionSpy:
    """Records which clips each selection decision inside `fit_fold` scored."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.seen: list[set[str]] = []
        self.seeds: list[int] = []
        real_fit, real_predict = taemi.training.fit_fold, taemi.training.predict
        self.inside = False

        def fit_fold(model, inputs, *args, **kwargs):
            self.inside = True
            self.seen.append(set())
            self.seeds.append(args[6] if len(args) > 6 else kwargs["seed"])
            try:
                return real_fit(model, inputs, *args, **kwargs)
            finally:
                self.inside = False

        def predict(model, inputs, index, *args, **kwargs):
            if self.inside:
                self.seen[-1].update(inputs.ids[i] for i in np.asarray(index))
            return real_predict(model, inputs, index, *args, **kwargs)

        monkeypatch.setattr(taemi.training, "fit_fold", fit_fold)
        monkeypatch.setattr(taemi.training, "predict", predict)


def _grid(root: Path, work: Path, **train) -> object:
    return tiny_config(root, work, train={"epochs": 2, "batch_size": 32, "threads": 1,
                                          **train},
                       experiments={"t": {"model": MODEL, "seeds": [0]}},
                       paths={"models": str(work / "models")})


@pytest.mark.parametrize("selection", ["inner", "outer"])
def test_no_scored_row_reaches_a_selection(tiny_root: Path, tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch,
                                           selection: str) -> None:
    spy = SelectionSpy(monkeypatch)
    cfg = _grid(tiny_root, tmp_path, selection=selection)
    cv = train_experiments(cfg)["t"]
    folds = read_folds(cfg.folds.path)
    assert len(spy.seen) == 3
    for fold, seen in enumerate(spy.seen):
        scored = set(folds.loc[folds["fold"] == fold, "Filename"])
        assert seen
        if selection == "inner":
            assert not seen & scored
        else:  # the spy does catch the optimistic choice
            assert seen == scored
    assert cv["selection"] == selection
    assert cv["heldout_test_single"] is not None


def test_fixed_selection_runs_every_epoch(tiny_root: Path, tmp_path: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    spy = SelectionSpy(monkeypatch)
    cfg = _grid(tiny_root, tmp_path, selection="fixed", epochs=3, patience=1)
    train_experiments(cfg)
    assert spy.seen == [set(), set(), set()]
    done = read_json(cfg.paths.models / "t" / "vit-w2v" / "seed0" / "fold1" / "done.json")
    assert done["epochs_run"] == 3 and done["best_epoch"] == 3


def test_tuning_never_sees_a_cv_fold_nor_a_final_seed(tiny_root: Path, tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    spy = SelectionSpy(monkeypatch)
    cfg = tiny_config(
        tiny_root, tmp_path, train={"epochs": 2, "batch_size": 32, "threads": 1},
        experiments={"t": {"model": MODEL, "seeds": [0]}},
        tune={"experiment": "t", "n_trials": 2, "folds": [1], "dir": str(tmp_path / "tune")})
    ensure_tuning(cfg)
    folds = read_folds(cfg.folds.path)
    scored = set(folds.loc[folds["fold"] == 1, "Filename"])
    assert len(spy.seen) == 2 and all(seen and not seen & scored for seen in spy.seen)
    assert not {0 * 1000 + 1} & set(spy.seeds)  # the final fold-1 job's seed


def test_an_interrupted_retrain_keeps_the_finished_model(tiny_root: Path, tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch
                                                         ) -> None:
    cfg = _grid(tiny_root, tmp_path)
    train_experiments(cfg)
    job = cfg.paths.models / "t" / "vit-w2v" / "seed0" / "fold0"
    before = {p: hashlib.sha256((job / p).read_bytes()).hexdigest()
              for p in ("model.pt", "done.json", "oof.csv", "metrics.csv")}

    def interrupt(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(taemi.training, "score_table", interrupt)
    with pytest.raises(KeyboardInterrupt):
        train_experiments(_grid(tiny_root, tmp_path, lr=0.01))
    monkeypatch.undo()
    train_experiments(cfg)  # the original config: the job is done, and still itself
    after = {p: hashlib.sha256((job / p).read_bytes()).hexdigest() for p in before}
    assert after == before


def test_inspect_command_prints_the_evidence(tiny_root: Path, tmp_path: Path,
                                             capsys: pytest.CaptureFixture) -> None:
    import yaml

    from taemi.cli import main

    path = tmp_path / "c.yaml"
    cfg = tiny_config(tiny_root, tmp_path)
    path.write_text(yaml.safe_dump(cfg.resolved()))
    assert main(["inspect", str(path), "-q"]) == 0
    out = capsys.readouterr().out
    assert "participants (inferred)" in out and "group_by auto -> participant" in out
    assert "test clips that look like a labelled participant: 0.0%" in out


def test_both_purges_the_folds_seed_videos_from_its_training_rows(disjoint_root: Path,
                                                                  tmp_path: Path) -> None:
    from taemi.experiment import fold_inputs, open_packs
    from taemi.folds import seed_groups

    cfg = tiny_config(disjoint_root, tmp_path, folds={
        "path": str(tmp_path / "folds" / "folds.csv"), "n_splits": 3, "group_by": "both"})
    data = open_data(cfg)
    folds = ensure_folds(cfg, data).merge(_clips(disjoint_root), on="Filename")
    assert (folds.groupby("participant")["fold"].nunique() == 1).all()
    labels = data.labels.set_index("Filename").loc[folds["Filename"]]
    seeds = pd.Series(seed_groups(labels[list(TARGETS)].to_numpy()), index=folds["Filename"])
    packs = open_packs(cfg, data, "vit-w2v")
    for fold in range(3):
        _, parts, _ = fold_inputs(cfg, data, read_folds(cfg.folds.path), packs, fold)
        learned = set(parts["fit"]) | set(parts["select"])
        assert learned and not set(seeds[parts["val"]]) & set(seeds[list(learned)])
        people = folds.set_index("Filename")["participant"]
        assert not set(people[parts["val"]]) & set(people[list(learned)])
    assert "purged" in read_json(cfg.folds.path.with_name("folds.json"))["reason"]
