r"""Runs one process of a multi-host audit: joins jax.distributed, then runs mia_jax.main.

  python -m mia_jax.training.launch --coordinator=HOST0:12345 --num_processes=2 --process_id=0 \
      -- --config=configs/fashion_mnist_cnn.py --workdir=/shared/run --config.train.strategy=sharded

Every process runs the same command but its own --process_id (0 .. num_processes-1); the
coordinator is process 0's address and a free port. On Cloud TPU VMs, and under SLURM or
Open MPI, the three flags can be left out: jax.distributed finds them. On CPUs the processes
talk through gloo (CPU collectives). The sharded strategy then lays the model axis over the
devices of every process; each process holds all results (gathered), and the workdir should
be one shared folder.
"""

import argparse
import sys

import jax

# Imported before jax.distributed.initialize: importing mia_jax creates no array (no backend).
from mia_jax import main as mia_main


def initialize(coordinator: str | None, num_processes: int | None, process_id: int | None) -> None:
  """jax.distributed.initialize with CPU collectives (gloo) when the backend is the CPU."""
  jax.config.update("jax_cpu_collectives_implementation", "gloo")
  jax.distributed.initialize(coordinator, num_processes, process_id)


def main(argv=None) -> None:
  argv = sys.argv[1:] if argv is None else argv
  if "--" in argv:
    own, rest = argv[:argv.index("--")], argv[argv.index("--") + 1:]
  else:
    own, rest = argv, []
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--coordinator", default=None, help="process 0's HOST:PORT")
  p.add_argument("--num_processes", type=int, default=None)
  p.add_argument("--process_id", type=int, default=None)
  args = p.parse_args(own)
  initialize(args.coordinator, args.num_processes, args.process_id)
  sys.argv = [sys.argv[0]] + rest
  mia_main.run_cli()


if __name__ == "__main__":
  main()
