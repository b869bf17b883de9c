import torch

# One thread: the suite's tensors are small (oracle denoisers, tiny nets), where a
# 2-thread pool only adds synchronisation, and on a loaded 2-core box it slowed small
# ops 10-40x (measured while other jobs ran).
torch.set_num_threads(1)
