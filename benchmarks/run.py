"""Run every benchmark (`make bench`)."""

import memory

if __name__ == "__main__":
    memory.main([])
