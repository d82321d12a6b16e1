"""The finetunable network, below the Recognizer that loads it and the training that builds it:
the backbone split at its frozen trunk (with the trunk-feature cache), the cosine classifier
head and the loop that fits it, and the checkpoint that saves and loads the trained layers."""
