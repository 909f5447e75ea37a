"""Raw datasets: their specs, a synthetic generator, raw-folder readers and preprocessing.

Submodules are imported explicitly (``mona.data.preprocess``...) so that importing this package
stays cheap.
"""
