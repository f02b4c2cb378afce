"""Speech layer: audio decoding, speech-to-text, subtitles."""
