"""A run on disk: its directory and events, the claim and lock, who trains it (trainer_process), which
checkpoint a resume may use (checkpoints), history, the launcher, the adapters it left and their model
card. Imports the base, data/, model/, plan/.
"""
