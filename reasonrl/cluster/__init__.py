"""Training on a Slurm allocation, for launch_slurm.py: `plan.py` turns an allocation into each node's command (pure
functions); the supervisor starts those commands as job steps, watches them, restarts after a fault and stops before
the job's time limit."""
