"""The bottom layer: what `gallery`, `recognizer` and `web` all build on, importing nothing of theirs.

    facecore.errors   every error the tool raises on purpose (`FaceToolError` and its kinds)
    facecore.atomic   atomic, durable file writes and checksums
    facecore.outputs  where the tool may write for a user (never an input, only its own files replaced),
                      and special files (FIFO, device, socket) refused by name
    facecore.names    the rules a person name meets, and look-alike names
    facecore.ranking  the one order of candidate people
"""
