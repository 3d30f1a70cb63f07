"""Run the DVC pipeline's ready stages side by side on a Dask cluster.

`python -m runner [targets]` reaches the state `dvc repro [targets]` would: each stage runs
as `dvc repro -s <stage>` on a Dask worker, so DVC still writes dvc.lock, its cache and the
run-cache (serialised by its own locks); the driver only decides, from DVC's own DAG and
`stage.changed()`, which stages are ready. Not a pipeline stage: no dvc.yaml entry needs it.
"""
