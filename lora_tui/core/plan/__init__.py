"""What to run and whether it fits: the memory estimate, its fixes, the batch chosen by it, the one
run plan (precision, attention, batching, kernels, batch, checkpointing) and the device plan.
Imports the base, machine/ and model/.

One word per idea: the *workload* is what the memory estimate sizes (``memory.Workload``, made from a Config
by ``workload.workload_of``); the *batch* is one ``batch.Batch`` (micro-batch, accumulation, tokens,
checkpointing), chosen in ``workload.choose_batch``; the *run plan* is every engine choice of one run
(``run_plan.RunPlan``, decided by ``run_plan.decide_run_plan``); the *device plan* spreads ranks (``devices``).
"""
