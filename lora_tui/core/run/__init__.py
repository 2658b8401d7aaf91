"""A run on disk: its directory and events, the claim and lock, history, the launcher, the adapters
it left and their model card. Imports the base, data/, model/, plan/.
"""
