"""`lora-tui bench`: the product against a plain TRL script on the same model and data.
Imports everything below it.
"""
