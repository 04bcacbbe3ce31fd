"""The Ray engine of `tokenpo.prep` (``engine="ray"``): needs the ``ray`` extra."""

from tokenpo.prep_ray.engine import prep_on_ray

__all__ = ["prep_on_ray"]
