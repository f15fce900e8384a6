"""Per-participant normalisation when a test participant has few clips.

The normalised packs standardise each participant by statistics over all of its clips
(test clips included: no labels are used). A team whose test set holds only m clips of a
person has statistics from m clips. This keeps m clips of each inferred test participant,
builds the normalised packs from those clips alone (the others count as nobody's), has
the trained fold models of a normalised experiment predict them, and scores those clips
against the same experiment with all clips' statistics and the raw-feature experiment.

    python benchmarks/bench_pnorm.py [--on lv-taemi-pn] [--off paper-taemi]

Writes benchmarks/results/pnorm-few-clips.md.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
import torch

from taemi.cache import participant_normalised
from taemi.config import ROLES, load_config
from taemi.data import labels_matrix, open_data
from taemi.experiment import NORMALISED_ROLES, open_packs
from taemi.metrics import score_table
from taemi.models import create_model
from taemi.pipeline import ensure_participants
from taemi.progress import set_quiet
from taemi.training import ClipInputs, predict

OUT = Path("benchmarks/results")


def fold_mean_prediction(cfg, experiment: str, backbone: str, packs, ids: list[str]
                         ) -> np.ndarray:
    """The mean test prediction of the experiment's seed-0 fold models on `packs`."""
    spec = cfg.experiments[experiment].model
    inputs = ClipInputs(packs, ids, {r: cfg.cache.steps_for(r) for r in ROLES})
    index = np.arange(len(ids))
    preds = []
    for folder in sorted((cfg.paths.models / experiment / backbone / "seed0").glob("fold*")):
        model = create_model(spec.name, dims=inputs.dims, **spec.params())
        model.load_state_dict(torch.load(folder / "model.pt", map_location="cpu",
                                         weights_only=True))
        preds.append(predict(model, inputs, index))
    return np.mean(preds, axis=0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", default="configs/levers.yaml")
    parser.add_argument("--on", default="lv-taemi-pn")
    parser.add_argument("--off", default="paper-taemi")
    parser.add_argument("--clips", default="1,3,10")
    args = parser.parse_args()
    set_quiet(True)
    cfg = load_config(args.config)
    data = open_data(cfg)
    on_backbone = cfg.experiments[args.on].backbones[0]
    off_backbone = "vit-w2v"
    participants = ensure_participants(cfg, data)
    test_ids = data.test_ids
    who_test = participants.of(test_ids)
    y_test = labels_matrix(data.test_labels, test_ids)
    raw = open_packs(cfg, data, off_backbone)
    full = fold_mean_prediction(cfg, args.on, on_backbone, open_packs(cfg, data, on_backbone),
                                test_ids)
    off = fold_mean_prediction(cfg, args.off, off_backbone, raw, test_ids)
    rng = np.random.default_rng(0)
    sizes = np.unique(who_test, return_counts=True)[1]
    lines = [f"normalised: {args.on}; raw: {args.off}; {len(sizes)} inferred test "
             f"participants, median {int(np.median(sizes))} clips each", "",
             "| test clips kept per participant | clips scored | raw features | normalised, "
             "statistics from the kept clips | normalised, statistics from all clips |",
             "| ---: | ---: | ---: | ---: | ---: |"]
    for m in [int(c) for c in args.clips.split(",")]:
        kept = np.zeros(len(test_ids), bool)
        for person in np.unique(who_test):
            rows = np.flatnonzero(who_test == person)
            kept[rng.choice(rows, size=min(m, len(rows)), replace=False)] = True
        labels = participants.of(participants.ids).copy()
        row_of = {clip: i for i, clip in enumerate(participants.ids)}
        for i in np.flatnonzero(~kept):
            labels[row_of[test_ids[i]]] = -1  # not in this smaller test set
        with tempfile.TemporaryDirectory(dir=cfg.cache.dir) as tmp:
            packs = dict(raw)
            for role in NORMALISED_ROLES:
                if role in packs:
                    order = np.array([row_of[c] for c in packs[role].ids])
                    packs[role] = participant_normalised(raw[role], labels[order],
                                                         cfg.cache.normalise_prior, tmp)
            few = fold_mean_prediction(cfg, args.on, on_backbone, packs, test_ids)
        scored = [score_table(y_test[kept], p[kept])["mean"] for p in (off, few, full)]
        lines.append(f"| {m} | {kept.sum()} | " + " | ".join(f"{s:.3f}" for s in scored) + " |")
    whole = score_table(y_test, full)["mean"]
    lines.append(f"| all | {len(test_ids)} | {score_table(y_test, off)['mean']:.3f} | "
                 f"{whole:.3f} | {whole:.3f} |")
    text = "\n".join(lines)
    print(text)
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "pnorm-few-clips.md").write_text(
        f"    python benchmarks/bench_pnorm.py --on {args.on} --off {args.off}\n\n{text}\n")


if __name__ == "__main__":
    main()
