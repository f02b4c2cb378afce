"""Privacy layer: finding personal data in transcripts and summaries, and replacing it
(``detect``, ``redact``), and covering its words in the audio (``audio``). Imports only
``core``; the task layer applies it right after speech to text."""
