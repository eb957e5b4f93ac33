"""Language modelling (paper Sec. 5, Fig. 4): One Billion Word and corpora in its layout, an LSTM with an
adaptive softmax. data.py (text -> vocabulary -> token shards), ding.py (the offline English corpus),
batching.py (truncated BPTT over a stream), model.py (the LSTM LM), task.py (the task contract)."""
