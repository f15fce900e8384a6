"""Features from raw media: frames -> timm backbone, audio -> wav2vec2 / log-mel,
speech -> Whisper transcripts, transcripts -> token embeddings.

    media.py       PyAV decoding: frames at a rate, audio as 16 kHz mono float32
    common.py      clip discovery in the organisers' layout, resuming, failure logs,
                   atomic per-id feature files, model lookup that honours HF_HUB_OFFLINE
    video.py       `taemi extract video`   -> <root>/<out>/{id}.pkl (frames, D)
    audio.py       `taemi extract audio`   -> wav2vec2 (steps, D) and/or logmel (steps, 64)
    transcribe.py  `taemi transcribe`      -> <root>/transcripts.csv (Filename,text)
    text.py        `taemi extract text`    -> <root>/text/{id}.pkl (word pieces, D)
    cli.py         the subcommands

Each writes exactly the per-id format `taemi.data` reads, so a new folder is one more
backbone of the training grid. Heavy libraries are imported by the modules that need
them, never by `taemi.extract` itself, so the `taemi` command starts fast.
"""
