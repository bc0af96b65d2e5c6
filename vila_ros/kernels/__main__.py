"""``python -m vila_ros.kernels``: build the CPU kernels ahead of time and say whether they loaded."""
from vila_ros.kernels import cpu_kernels, unavailable_reason

if __name__ == "__main__":
    kernels = cpu_kernels()
    print("vila_ros CPU kernels:", "loaded" if kernels is not None else f"unavailable ({unavailable_reason()})")
