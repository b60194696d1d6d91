"""Audio front-end of the paper (section 4.2): 16 kHz audio, 128-d log-mels at 25/10 ms,
Sohn statistical-model VAD with a 500 ms hang-over, frame dropping, mean/variance
normalisation; and the MFCC front-end of the 1D-CNN system."""
