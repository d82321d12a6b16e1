"""Finetuning: photo folders and splits (`dataset`), the job from a folder to a model directory (`run`),
curves, candidates built beside the model in use (`candidate`) and versions to roll back to (`versions`).
"""
