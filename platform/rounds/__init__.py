"""Active-learning rounds: the round state machine, selections and annotation tasks."""
