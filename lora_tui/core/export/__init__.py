"""What leaves a run: the PEFT adapter, the merged model and its round-trip check, GGUF files,
the Ollama Modelfile, zips and the hub push. Imports the base modules, config, data/, model/ and run/.
"""
