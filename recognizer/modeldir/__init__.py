"""The model-directory core: one owner of a model directory's files and of the face data in them.

(Being built: the layout and model.json, the writer lock and build leases, versions and
candidates, the registry of the stores that hold face data, and the one carry-over and rebuild.)
"""
