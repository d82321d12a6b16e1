"""Turning a face crop into a unit vector: the facenet and SFace backbones (`backbones`) and their weights (`weights`)."""
