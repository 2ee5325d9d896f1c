"""vidrender: take videos and 3-D scenes apart with equivariance and put them back together."""

__version__ = "0.1.0"
