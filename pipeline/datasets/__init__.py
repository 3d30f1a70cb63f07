"""Datasets: protocols that turn raw corpora into prepared arrays, and batching."""
