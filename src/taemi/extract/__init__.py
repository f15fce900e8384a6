"""Features from raw media: frames -> timm backbone, audio -> wav2vec2 / log-mel,
speech -> Whisper transcripts, transcripts -> token embeddings."""
