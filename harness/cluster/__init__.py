"""A real Kubernetes control plane and node on this machine, the images and charts they run, and the record
that lets the machine be restored. `python -m harness.cluster` (`make cluster`) starts one for a human."""
