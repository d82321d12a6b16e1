"""Finetuning: from a folder of labelled photos to a finetuned model directory.

Photo folders and splits (`dataset`), the frozen trunk and its cache (`trunk`), the
classification head (`head`), the training loop (`loop`), checkpoints (`checkpoint`), curve plots
(`curves`), the whole job from a folder to a model directory (`run`) and earlier versions of a
model directory to roll back to (`versions`).
"""
