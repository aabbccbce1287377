"""One file per family: its G and D, and the registered Family that tells the trainer how to use them.

Every module here is imported by `distgan.registry`, so a new family is just a new file.
"""
