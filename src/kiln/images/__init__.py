"""Image+text data: readers, the built-in shapes set, curation, patches and image shards."""
