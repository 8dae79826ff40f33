"""Offline tools: the WizardArena test set, decontamination, offline evaluation, consistency."""
