"""Neural-network training: the one training loop and its pieces.

``loop`` (epochs, steps, evaluation, the paper's LR schedule from ``schedule``), ``trainer``
(``sertool train``: chunked feature data, DDP, checkpoints and exact resume), ``checkpoint``,
``data`` (random chunks and whole segments from feature archives), ``specaugment``, ``log``
(train_log.csv, curves.png, train.log). Transfer (sertool.transfer) builds on the same pieces.
"""
