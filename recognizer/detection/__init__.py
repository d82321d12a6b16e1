"""Finding faces: MTCNN detection (`mtcnn`), with the aligned crops each backbone takes."""
