"""Which model: the embedded default, the catalogue of known shapes, hub ids and local paths.
Imports only the base modules.
"""
