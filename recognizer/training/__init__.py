"""Finetuning: photo folders and splits (`dataset`), the frozen trunk and its cache (`trunk`), the
classification head (`head`), the training loop (`loop`), checkpoints (`checkpoint`), curve plots
(`curves`) and the whole job from a folder to a model directory (`run`)."""
