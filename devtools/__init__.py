"""Developer and CI tooling that is not part of the product image: the container engine,
the local build of the platform image, and running the Pulumi plan's pods as containers."""
