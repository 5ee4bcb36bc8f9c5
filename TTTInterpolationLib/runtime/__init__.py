"""Runtime plumbing: device and precision choice, torch.distributed process groups and rank
placement, and progress reporting (bars, JSON lines).
"""
