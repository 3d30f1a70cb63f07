"""Z-Forcing reproduction library: models, data, training, bounds and reporting helpers.

The core (models/, bounds.py, train.py, checkpoint.py, datasets/batches.py) imports only
torch, numpy and the standard library.
"""
