"""The trainer: ClipHigherGRPOTrainer, its policy loss, micro-batches of real tokens, fault handling, the held-out
accuracy, validation inside training and the stop-and-requeue callback."""
