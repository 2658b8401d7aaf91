"""What to run and whether it fits: the memory estimate, its fixes, the batch chosen by it, the one
run plan (precision, attention, batching, kernels, batch, checkpointing) and the device plan.
Imports the base, machine/ and model/.
"""
