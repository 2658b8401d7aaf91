"""What this machine has: GPUs through NVML, CPU and memory through psutil, the GPU links, and which
attention / kernel libraries are installed. Imports only the base modules.
"""
