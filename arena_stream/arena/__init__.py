"""The method, without Kafka: which prompts are valid, how answers pair into battles, which
judged battles become training data, the training kinds that data feeds, and what the
arena's model calls cost (tokens, prices, the budget)."""
