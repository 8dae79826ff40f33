"""Model clients: OpenAI-compatible servers over httpx, in-process transformers and vLLM,
retries, embeddings, and the start-up checks that a model can answer."""
