"""The model-directory core: one owner of a model directory's files and of the face data in them.

    layout.py     every file name of a model directory, spelled once; chip stores
    config.py     model.json (ModelConfig, load, save, stamp)
    lock.py       the writer lock
    create.py     a new model directory, built beside its place and renamed in
    directory.py  ModelDir: one directory's paths, model.json and lock
    stores.py     the registry of every store of face data; removal and rename walk it

Build leases, versions and candidates live in recognizer.training (versions.py, candidate.py) for
now; the one carry-over and rebuild from chips go to rebuild.py. Nothing is imported here, so
importing one module of the core does not load the others.
"""
