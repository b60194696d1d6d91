"""sertool: speech emotion recognition with Kaldi-style staged recipes."""

__version__ = "0.1.0"
