"""Reports: evaluation outputs -> tables, figures and self-contained HTML pages.

An edge module: it may import pandas, matplotlib, librosa, papermill and nbconvert.
Nothing in pipeline/models, pipeline/train.py, bounds.py or datasets/ imports it.
"""
