"""Physical encodings of the logical schema: WebDataset tar shards and Zarr v3 groups."""

ENCODINGS = ("wds", "zarr")
