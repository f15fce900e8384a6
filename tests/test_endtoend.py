"""End-to-end training: tiny random encoders, trained with the fusion model from generated
media clips through the grid (no network: models are built from a config and saved here)."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from test_extract import LABELLED, TEST, media_root, tone  # noqa: F401  (a fixture)

from conftest import write_pkl
from taemi.cache import pool_steps as pack_pool_steps
from taemi.config import ConfigError, EndToEndConfig, ModelSpec, config_from_dict
from taemi.endtoend import AudioEncoder, EndToEnd, check_backbone, layer_depth, pool_steps
from taemi.experiment import Job
from taemi.extract.common import ModelUnavailable
from taemi.pipeline import check_current, open_data, train_experiments

WORDS = ["happy", "sad", "dogs", "park", "run", "wow", "fine", "no"]


@pytest.fixture(scope="module", autouse=True)
def offline():
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("HF_HUB_OFFLINE", "1")
        yield


@pytest.fixture(scope="module")
def encoders(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A tiny random emotion wav2vec2 (hidden 32 + 3 scores) and a tiny random BERT."""
    from transformers import (
        BertConfig,
        BertModel,
        BertTokenizerFast,
        Wav2Vec2Config,
        Wav2Vec2FeatureExtractor,
        Wav2Vec2Model,
    )

    from taemi.extract.audio import emotion_model_class

    folder = tmp_path_factory.mktemp("encoders")
    torch.manual_seed(0)
    config = Wav2Vec2Config(hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                            intermediate_size=64, conv_dim=(32,) * 7,
                            num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=4,
                            num_labels=3, final_dropout=0.0)
    emotion_model_class()(config).save_pretrained(folder / "w2v-emotion")
    Wav2Vec2Model(config).save_pretrained(folder / "w2v")
    for name in ("w2v-emotion", "w2v"):
        Wav2Vec2FeatureExtractor(return_attention_mask=True).save_pretrained(folder / name)
    vocab = folder / "vocab.txt"
    vocab.write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS]))
    BertTokenizerFast(vocab_file=str(vocab)).save_pretrained(folder / "bert")
    BertModel(BertConfig(vocab_size=5 + len(WORDS), hidden_size=32, num_hidden_layers=2,
                         num_attention_heads=2, intermediate_size=64)
              ).save_pretrained(folder / "bert")
    return {"audio": folder / "w2v-emotion", "plain": folder / "w2v", "text": folder / "bert"}


@pytest.fixture(scope="module")
def raw_root(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The extraction tests' media (tones, a speech clip, no audio, a corrupt file), with
    transcripts and a small `vit` folder added to a copy."""
    root = tmp_path_factory.mktemp("raw") / "data"
    shutil.copytree(request.getfixturevalue("media_root"), root)
    rng = np.random.default_rng(0)
    clips = LABELLED + TEST
    for clip in clips:
        write_pkl(root / "vit" / f"{clip}.pkl", rng.standard_normal((5, 6)).astype(np.float32))
    texts = ["" if k % 4 == 0 else " ".join(rng.choice(WORDS, 3)) for k in range(len(clips))]
    pd.DataFrame({"Filename": clips, "text": texts}).to_csv(root / "transcripts.csv",
                                                            index=False)
    return root


def e2e_config(root: Path, work: Path, encoders: dict[str, Path], **endtoend):
    return config_from_dict({
        "name": "e2e",
        "data": {"root": str(root), "test_list": "test_split.csv"},
        "cache": {"dir": str(work / "cache"), "steps": {"text": 4, "visual": 4, "audio": 6},
                  "workers": 1},
        "folds": {"path": str(work / "folds" / "folds.csv"), "n_splits": 2, "group_by": "none"},
        "backbones": {"vit-raw": {"text": None, "visual": "vit", "audio": None}},
        "train": {"epochs": 2, "batch_size": 4, "eval_batch_size": 4, "threads": 1,
                  "selection": "fixed",  # 6 training clips a fold: no inner split
                  "ema": None, "lr": 3e-3, "loss": {"mse": 1.0, "pearson": 0.5, "gate": 0.3}},
        "experiments": {"e2e": {
            "model": {"name": "taemi_paper", "d_model": 16, "heads": 2, "head": "gate"},
            "endtoend": {"audio_model": str(encoders["audio"]),
                         "text_model": str(encoders["text"]), "emotion_scores": True,
                         "max_seconds": 1.0, "max_chunks": 3, "encoder_lr": 1e-3,
                         "gradient_checkpointing": True, **endtoend}}},
        "paths": {"models": str(work / "models")},
    })


@pytest.fixture(scope="module")
def trained(raw_root: Path, encoders: dict[str, Path],
            tmp_path_factory: pytest.TempPathFactory):
    work = tmp_path_factory.mktemp("e2e")
    cfg = e2e_config(raw_root, work, encoders)
    return cfg, train_experiments(cfg)["e2e"]


def test_endtoend_runs_through_the_grid(trained) -> None:
    cfg, cv = trained
    folder = cfg.experiment_dir("e2e")
    oof = pd.read_csv(folder / "oof.csv", dtype={"Filename": str})
    test = pd.read_csv(folder / "test.csv", dtype={"Filename": str})
    assert sorted(oof["Filename"]) == LABELLED and sorted(test["Filename"]) == TEST
    values = np.concatenate([oof.iloc[:, 2:].to_numpy(), test.iloc[:, 1:].to_numpy()])
    assert np.isfinite(values).all() and (values >= 0).all() and (values <= 1).all()
    assert set(cv["jobs"]) == {f"e2e/vit-raw/seed0/fold{f}" for f in (0, 1)}
    check_current(cfg, open_data(cfg), folder)  # current: it can be submitted as it is


def saved(folder: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(folder / "model.safetensors")


def fold_state(cfg, fold: int = 0) -> dict[str, torch.Tensor]:
    return torch.load(Job("e2e", "vit-raw", 0, fold).folder(cfg.paths.models) / "model.pt",
                      weights_only=True)


def test_encoders_learn_but_the_front_end_does_not(trained, encoders) -> None:
    cfg, _ = trained
    state = fold_state(cfg)
    key = "encoder.layer.1.attention.self.query.weight"
    assert not torch.equal(state[f"encoders.text.model.{key}"], saved(encoders["text"])[key])
    audio0 = saved(encoders["audio"])
    conv = "wav2vec2.feature_extractor.conv_layers.0.conv.weight"
    top = "wav2vec2.encoder.layers.1.attention.q_proj.weight"
    assert torch.equal(state[f"encoders.audio.model.{conv}"], audio0[conv])  # frozen
    assert not torch.equal(state[f"encoders.audio.model.{top}"], audio0[top])


def test_same_seed_same_predictions_and_resume(trained, raw_root, encoders) -> None:
    cfg, _ = trained
    job = Job("e2e", "vit-raw", 0, 1).folder(cfg.paths.models)
    before = pd.read_csv(job / "oof.csv")
    again = train_experiments(cfg)["e2e"]  # every job done: nothing retrains
    assert again["jobs"] == trained[1]["jobs"]
    (job / "done.json").unlink()
    train_experiments(cfg)
    pd.testing.assert_frame_equal(pd.read_csv(job / "oof.csv"), before)


def test_frozen_encoders_do_not_move(raw_root, encoders, tmp_path) -> None:
    cfg = e2e_config(raw_root, tmp_path, encoders, freeze_epochs=5, text_model=None)
    cfg = config_from_dict({**cfg.resolved(), "experiments": {"e2e": {
        **cfg.resolved()["experiments"]["e2e"], "folds": [0]}}})
    train_experiments(cfg)
    state = fold_state(cfg)
    for key, value in saved(encoders["audio"]).items():
        torch.testing.assert_close(state[f"encoders.audio.model.{key}"], value)


def test_pooling_follows_the_cache_rule() -> None:
    rng = np.random.default_rng(0)
    h = rng.standard_normal((3, 11, 4)).astype(np.float32)
    lengths = [11, 7, 2]
    valid = np.arange(11)[None] < np.array(lengths)[:, None]
    pooled, ok = pool_steps(torch.from_numpy(h), torch.from_numpy(valid), 5)
    for b, n in enumerate(lengths):
        expected, expected_ok = pack_pool_steps(h[b, :n], 5)
        np.testing.assert_allclose(pooled[b].numpy(), expected, atol=1e-6)
        np.testing.assert_array_equal(ok[b].numpy(), expected_ok)


def test_crops_in_training_and_chunks_otherwise(encoders) -> None:
    settings = EndToEndConfig(audio_model=str(encoders["plain"]), max_seconds=1.0)
    encoder = AudioEncoder(settings)
    wave = torch.from_numpy(tone(440, 2.5))[None]
    samples = torch.tensor([wave.shape[1]])
    with torch.no_grad():
        encoder.train()
        cropped, _ = encoder(wave, samples)
        encoder.eval()
        _, valid = encoder(wave, samples)
    assert encoder.width == 32 and cropped.shape[1] == 49  # 1 s: 49 steps
    assert valid.sum() == 49 + 74  # 1 s, then 1.5 s (a tail under 1 s joins the last chunk)


def test_layerwise_learning_rates(encoders) -> None:
    settings = EndToEndConfig(text_model=str(encoders["text"]), encoder_lr=1e-4,
                              layer_decay=0.5)
    model = EndToEnd(settings, ModelSpec(name="unimodal_text", d_model=8, heads=2),
                     {"text": 1, "visual": 6, "audio": 1}, {"text": 4, "visual": 4, "audio": 4})
    groups = model.param_groups(1e-3)
    assert groups[0]["lr"] == 1e-3  # the fusion model
    lrs = sorted(g["lr"] for g in groups[1:])
    assert lrs == pytest.approx([1e-4 * 0.5 ** k for k in (3, 2, 1, 0)])  # embed, 2 layers, top
    assert layer_depth("encoder.layer.1.output.dense.weight", 2) == 2
    n = sum(len(g["params"]) for g in groups)
    assert n == len(list(model.parameters()))


def test_bad_settings_name_the_problem(raw_root, encoders, tmp_path) -> None:
    with pytest.raises(ConfigError, match="no emotion regression head"):
        AudioEncoder(EndToEndConfig(audio_model=str(encoders["plain"]), emotion_scores=True))
    with pytest.raises(ModelUnavailable, match="no-such-folder"):
        AudioEncoder(EndToEndConfig(audio_model=str(tmp_path / "no-such-folder")))
    with pytest.raises(ConfigError, match="give audio_model and/or text_model"):
        e2e_config(raw_root, tmp_path, encoders, audio_model=None, text_model=None)
    settings = EndToEndConfig(audio_model="any")
    with pytest.raises(ConfigError, match="backbone 'vit-w2v' also feeds audio"):
        check_backbone("e2e", "vit-w2v", {"visual": "vit", "audio": "wav2vec2"}, settings)


def test_extract_audio_appends_emotion_scores(raw_root: Path, encoders, tmp_path) -> None:
    """`taemi extract audio --emotion-scores`: the published systems' 1024 + 3 features."""
    from taemi.extract.audio import extract_audio
    from taemi.extract.common import ExtractError

    root = tmp_path / "data"
    shutil.copytree(raw_root, root)
    clips = ["00000", "00002"]
    extract_audio(root, str(encoders["audio"]), "emo", emotion_scores=True, device="cpu",
                  ids=clips)
    extract_audio(root, str(encoders["audio"]), "plain", device="cpu", ids=clips)
    for clip in clips:
        emo = pd.read_pickle(root / "emo" / f"{clip}.pkl")
        plain = pd.read_pickle(root / "plain" / f"{clip}.pkl")
        assert emo.shape == (plain.shape[0], 32 + 3)
        np.testing.assert_allclose(emo[:, :32], plain, atol=1e-5)
    with pytest.raises(ExtractError, match="no emotion regression head"):
        extract_audio(root, str(encoders["plain"]), "x", emotion_scores=True, device="cpu",
                      ids=clips)


def test_the_gpu_recipe_runs_on_the_cpu_with_tiny_encoders(raw_root, encoders, tmp_path) -> None:
    """configs/endtoend_gpu.yaml as shipped (bf16, checkpointing, frozen first epoch, gate
    head), with tiny encoders and sizes shrunk by overrides only."""
    from taemi.config import load_config

    exp = "experiments.e2e-taemi-paper"
    cfg = load_config(Path(__file__).parents[1] / "configs" / "endtoend_gpu.yaml", [
        f"data.root={raw_root}", "data.test_list=test_split.csv",
        f"cache.dir={tmp_path / 'cache'}", "cache.workers=1",
        "cache.steps={text: 4, visual: 4, audio: 6}",
        f"folds.path={tmp_path / 'folds.csv'}", "folds.n_splits=2", "folds.group_by=none",
        "folds.identity_features=[vit]",  # these clips have no wav2vec2 folder
        "train.epochs=2", "train.batch_size=4", "train.eval_batch_size=4", "train.threads=1",
        "train.device=cpu", "train.selection=fixed", f"paths.models={tmp_path / 'models'}",
        f"{exp}.model.d_model=16", f"{exp}.model.heads=2", f"{exp}.folds=[0]",
        f"{exp}.endtoend.audio_model={encoders['audio']}",
        f"{exp}.endtoend.text_model={encoders['text']}", f"{exp}.endtoend.max_seconds=1"])
    assert cfg.train.bf16 and cfg.experiments["e2e-taemi-paper"].endtoend.freeze_epochs == 1
    cv = train_experiments(cfg)["e2e-taemi-paper"]
    test = pd.read_csv(tmp_path / "models" / "e2e-taemi-paper" / "test.csv", dtype=str)
    assert sorted(test["Filename"]) == TEST and cv["folds"] == [0]


# ----------------------------------------------------------------------------- inputs


def e2e_inputs(cfg, fold: int = 0, workers: int | None = None, seed: int = 7):
    """A fold's model (untrained) and end-to-end inputs, as a job makes them."""
    from taemi.experiment import fold_inputs, fold_model, open_packs
    from taemi.folds import read_folds
    from taemi.training import seed_everything

    data = open_data(cfg)
    inputs, _, index = fold_inputs(cfg, data, read_folds(cfg.folds.path),
                                   open_packs(cfg, data, "vit-raw"), fold, "fixed")
    seed_everything(seed)  # as a job does: the same initial weights every time
    model, inputs = fold_model(cfg, data, "e2e", inputs, seed)
    if workers is not None:
        inputs.workers = workers
    return model, inputs, index


def test_crops_are_drawn_per_clip_and_epoch_whoever_reads_them(trained) -> None:
    cfg, _ = trained
    groups = [torch.tensor([0, 1, 2, 3]), torch.tensor([4, 5, 6, 7])]
    runs = []
    for workers in (0, 2):
        _, inputs, _ = e2e_inputs(cfg, workers=workers)
        try:
            runs.append([[b["audio_wave"] for b in inputs.batches(groups, epoch=e)]
                         for e in (0, 1, 0)])
        finally:
            inputs.close()
    for one, two in zip(runs[0], runs[1], strict=True):
        for a, b in zip(one, two, strict=True):
            torch.testing.assert_close(a, b, rtol=0, atol=0)
    torch.testing.assert_close(runs[0][0][0], runs[0][2][0], rtol=0, atol=0)  # same epoch
    _, inputs, _ = e2e_inputs(cfg, workers=0)
    speech = inputs.ids.index("00012")  # 3 s: a 1 s crop with room to move
    starts = {inputs.media.crop_start(e, speech, 3 * 16000) for e in range(8)}
    assert len(starts) > 1  # the crop moves from epoch to epoch


def test_an_interrupted_end_to_end_fold_resumes_to_the_same_weights(
        trained, tmp_path: Path) -> None:
    from taemi.data import labels_matrix
    from taemi.training import fit_fold, predict

    cfg, _ = trained
    data = open_data(cfg)
    train_cfg = cfg.train_for("e2e").model_copy(update={"epochs": 3})

    class Stop(Exception):
        pass

    def fit(work: Path, on_epoch=None):
        model, inputs, index = e2e_inputs(cfg)
        ids = [inputs.ids[i] for i in index["fit"]]
        try:
            fit_fold(model, inputs, index["fit"], labels_matrix(data.labels, ids),
                     index["select"], np.zeros((0, 6)), train_cfg, 7, work, "k",
                     on_epoch=on_epoch)
            return predict(model, inputs, index["val"], 4)
        finally:
            inputs.close()

    whole = fit(tmp_path / "whole")

    def stop(epoch: int, score: float) -> None:
        if epoch == 0:
            raise Stop

    with pytest.raises(Stop):
        fit(tmp_path / "cut", stop)
    np.testing.assert_array_equal(fit(tmp_path / "cut"), whole)


def test_cached_and_decoded_audio_give_the_same_predictions(trained) -> None:
    """The cache holds what the decoder reads (as int16): a model predicts the same from
    it as from audio decoded in the batch."""
    from taemi.extract.common import find_media
    from taemi.extract.media import read_audio
    from taemi.training import predict
    from taemi.waves import to_float, to_int16

    cfg, _ = trained
    model, inputs, index = e2e_inputs(cfg)
    model.load_state_dict(fold_state(cfg))
    model.eval()
    rows = index["val"]
    cached = predict(model, inputs, rows, 4)
    media = find_media(cfg.data.root, "audio")
    settings = cfg.experiments["e2e"].endtoend
    kept = int(settings.max_chunks * settings.max_seconds * 16000)
    decoded, exact = [], []
    with torch.no_grad():
        for row in rows:
            batch = inputs.batch(torch.tensor([row]))
            clip = inputs.ids[row]
            if batch["audio_missing"].item():
                decoded.append(model(batch).numpy())
                exact.append(decoded[-1])
                continue
            wave = read_audio(media[clip], max_samples=kept)
            for store, w in ((decoded, wave), (exact, to_float(to_int16(wave)))):
                one = {**batch, "audio_wave": torch.from_numpy(w)[None],
                       "audio_samples": torch.tensor([len(w)])}
                store.append(model(one).numpy())
    inputs.close()
    np.testing.assert_allclose(cached, np.concatenate(exact), atol=1e-6)
    np.testing.assert_allclose(cached, np.concatenate(decoded), atol=1e-4)


def test_robustness_of_an_end_to_end_experiment(trained) -> None:
    from taemi.robustness import condition_name, robustness

    cfg, _ = trained
    table = robustness(cfg, "e2e")
    assert len(table) == 7 and np.isfinite(table["mean"]).all()
    full = table.loc[condition_name(()), "mean"]
    assert table.loc[condition_name(("audio",)), "mean"] != full  # audio really removed
    assert table.loc[condition_name(("text",)), "mean"] != full


def test_the_data_report_names_unreadable_audio(trained, capsys) -> None:
    from test_extract import CORRUPT

    from taemi.pipeline import ensure_cache

    cfg, _ = trained
    ensure_cache(cfg)
    line = next(x for x in capsys.readouterr().out.splitlines() if "audio waveforms" in x)
    assert f"1 unreadable (modality missing; listed in {cfg.cache.dir}" in line
    assert f"e.g. {CORRUPT}: " in line
