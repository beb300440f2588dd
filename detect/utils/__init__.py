"""The bottom layer: generic machinery with nothing about detection in it.

files.py (atomic writes, safe output paths), checkpoint.py (checkpoint and RNG-state I/O), device.py
(device, AMP, channels_last), distributed.py (torchrun / torch.distributed helpers), interrupt.py
(SIGTERM/SIGINT as a polite stop), metric_logger.py (metrics.jsonl + TensorBoard), progress.py (tqdm
settings for log files). Every layer of `detect` may import these; they import nothing of `detect`
but `detect.errors` (tests/test_layers.py checks it).
"""
