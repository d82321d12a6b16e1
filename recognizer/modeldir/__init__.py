"""The model-directory core: layout (file names, chip stores), config (model.json), lock (writer lock),
create, directory (ModelDir), stores (the face-data registry), rebuild (carry-over and rebuild from chips).
Nothing is imported here, so importing one module of the core does not load the others.
"""
