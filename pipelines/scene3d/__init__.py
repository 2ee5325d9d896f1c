"""Pipeline `scene3d`: Equivariant Neural Rendering, its temporal extension, data sets and renderer."""
