"""Device adapters: one async interface; ASICs through pyasic, GPUs through NVML,
simulators that speak the same protocols on loopback. (Issue 4.)"""
