"""What this machine has: GPUs through NVML, CPU and memory through psutil, the GPU links, and which
attention / kernel libraries are installed, and the two lines bitsandbytes prints on import that are
dropped (library_noise). Imports only the base modules.
"""
