"""Transfer to emotion: the fold driver (``sertool finetune``), the frozen trunk's stored
embeddings and the training of new FC layers on them, built on sertool.nnet's loop."""
