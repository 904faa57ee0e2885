"""Checkpoint I/O: Hugging Face BLIP-2 folders and hub ids, LAVIS ``.pth`` files, and the native
format written by ``Pipeline.save``."""
