"""Unknown faces grouped into candidate people, saved as runs that can be named in one step.

`graph` holds the stateless clustering functions (numpy in, numpy out); `runs` the saved runs in
the model directory; `service` ties them to a Recognizer (detect, embed, set aside known faces).
"""
from recognizer.clustering.graph import agglomerate, central_faces, cluster_embeddings, knn_graph

__all__ = ["agglomerate", "central_faces", "cluster_embeddings", "knn_graph"]
