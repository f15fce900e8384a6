"""End-to-end training speed and memory: encoders + fusion model, one optimiser step at a time.

Times training steps (forward, backward, AdamW with the layer-wise groups) of
`taemi.endtoend.EndToEnd` on synthetic 16 kHz waveforms and transcripts of a fixed length,
so the figure is the model's, not the decoder's (`benchmarks/bench_extract.py` times PyAV
decoding). Without model folders it builds base-size encoders from a config with random
weights (same compute as the real ones); give local folders to time the real models.

    python benchmarks/bench_endtoend.py                                  # base-size, random
    python benchmarks/bench_endtoend.py --audio-model ./w2v-large-emotion \
        --emotion-scores --text-model ./gte-base --batch 16 --seconds 12 --bf16 --checkpointing
"""

from __future__ import annotations

import argparse
import json
import resource
import tempfile
import time
from pathlib import Path

import torch

from taemi.config import EndToEndConfig, ModelSpec
from taemi.endtoend import EndToEnd, collate_media
from taemi.losses import MixedLoss
from taemi.models.layers import take_gate_logits


def base_size_folders(folder: Path) -> tuple[str, str]:
    """wav2vec2-base and BERT-base shapes with random weights, saved as model folders."""
    import transformers as tf

    tf.Wav2Vec2Model(tf.Wav2Vec2Config()).save_pretrained(folder / "w2v")
    tf.Wav2Vec2FeatureExtractor(return_attention_mask=True).save_pretrained(folder / "w2v")
    words = ["happy", "sad", "dogs", "park"]
    (folder / "vocab.txt").write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]",
                                                 *words]))
    tf.BertTokenizerFast(vocab_file=str(folder / "vocab.txt")).save_pretrained(folder / "bert")
    tf.BertModel(tf.BertConfig()).save_pretrained(folder / "bert")
    return str(folder / "w2v"), str(folder / "bert")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--audio-model")
    parser.add_argument("--text-model")
    parser.add_argument("--emotion-scores", action="store_true")
    parser.add_argument("--model", default="taemi_paper")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=6.0)
    parser.add_argument("--words", type=int, default=20)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--bf16", action="store_true")
    parser.add_argument("--checkpointing", action="store_true")
    parser.add_argument("--out", default="benchmarks/results/endtoend.json")
    args = parser.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    with tempfile.TemporaryDirectory() as tmp:
        audio, text = args.audio_model, args.text_model
        if not audio or not text:
            audio, text = base_size_folders(Path(tmp))
        settings = EndToEndConfig(audio_model=audio, text_model=text,
                                  emotion_scores=args.emotion_scores,
                                  max_seconds=max(1.0, args.seconds),
                                  gradient_checkpointing=args.checkpointing)
        torch.manual_seed(0)
        model = EndToEnd(settings, ModelSpec(name=args.model, head="gate"),
                         {"text": 1, "visual": 384, "audio": 1},
                         {"text": 128, "visual": 32, "audio": 600}).to(device)
        tokens = model.encoders["text"].token_ids(
            [" ".join(["happy dogs park"] * (args.words // 3))] * args.batch)
    samples = int(args.seconds * 16_000)
    b = args.batch
    text = collate_media([(i, None, t) for i, t in enumerate(tokens)])
    ids, mask = text["text_ids"], text["text_mask"]
    batch = {
        "audio_wave": torch.randn(b, samples, device=device) * 0.1,
        "audio_samples": torch.full((b,), samples, device=device),
        "audio_missing": torch.zeros(b, dtype=torch.bool, device=device),
        "text_ids": ids.to(device), "text_mask": mask.to(device),
        "text_missing": torch.zeros(b, dtype=torch.bool, device=device),
        "visual": torch.randn(b, 32, 384, device=device),
        "visual_valid": torch.ones(b, 32, dtype=torch.bool, device=device),
        "visual_missing": torch.zeros(b, dtype=torch.bool, device=device),
    }
    y = torch.rand(b, 6, device=device)
    optimizer = torch.optim.AdamW(model.param_groups(1e-4), lr=1e-4)
    loss_fn = MixedLoss({"mse": 1.0, "pearson": 0.5, "gate": 0.3})
    model.train()
    model.start_epoch(1)
    times = []
    for _ in range(args.steps + 1):  # the first step warms up and is not timed
        started = time.perf_counter()
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=args.bf16):
            pred = model(batch)
        loss = loss_fn(pred, y, take_gate_logits(model))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - started)
    step = sum(times[1:]) / args.steps
    row = {"device": torch.cuda.get_device_name() if device.type == "cuda" else
           f"cpu ({torch.get_num_threads()} threads)",
           "audio_model": args.audio_model or "wav2vec2-base shape, random weights",
           "text_model": args.text_model or "bert-base shape, random weights",
           "params_m": round(sum(p.numel() for p in model.parameters()) / 1e6, 1),
           "batch": b, "seconds": args.seconds, "bf16": args.bf16,
           "checkpointing": args.checkpointing, "step_s": round(step, 3),
           "clips_per_s": round(b / step, 2),
           "peak_rss_gb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2),
           "peak_gpu_gb": round(torch.cuda.max_memory_allocated() / 2**30, 2)
           if device.type == "cuda" else None}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(row, indent=2) + "\n")
    print(json.dumps(row))


if __name__ == "__main__":
    main()
