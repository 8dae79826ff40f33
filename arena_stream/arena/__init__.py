"""The method, without Kafka: which prompts are valid, how answers pair into battles, which
judged battles become training data, and the training kinds that data feeds."""
