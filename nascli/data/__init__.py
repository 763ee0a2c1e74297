"""Data layer: list-file datasets (listfile), the up-front check (check), albumentations pipelines
(transforms) and the generated demo dataset (demo). Import the submodules; nothing is re-exported here."""
