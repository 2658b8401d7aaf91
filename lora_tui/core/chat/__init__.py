"""Talking to a trained adapter (and to the base): loading, several adapters, prompt formatting.
Imports the base, data/, model/ and run/.
"""
